"""32x32 RGB patches of scikit-image's bundled colour photographs (offline, CIFAR-shaped).

Batches are uint8 tensors [B, 3, 32, 32], ``n_bits = 8``.

Source photos: the seven colour photographs that ship inside the scikit-image wheel
(no download): ``astronaut`` (512x512), ``chelsea`` (300x451; ``cat`` is the same image),
``coffee`` (400x600), ``hubble_deep_field`` (872x1000), ``immunohistochemistry``
(512x512), ``retina`` (1411x1411) and ``rocket`` (427x640). Synthetic graphics
(``colorwheel``, ``logo``), greyscale images and the pooch-fetched images are not used.

Patches: each photo at scales 1, 1/2 and 1/4 (``scales=(1, 2, 4)``; downscaled with
``skimage.transform.resize(..., anti_aliasing=True)``) is cut into non-overlapping
32x32 patches on a regular grid with stride 32 (the partial border is dropped).
Near-constant patches (pixel std < ``min_std`` = 2, e.g. the black surround of
``retina``) are discarded.

Split BY SOURCE PHOTO (fixed): train = hubble_deep_field, retina, astronaut;
val = chelsea, immunohistochemistry; test = coffee, rocket. With the defaults this gives
3497 train / 494 val / 617 test patches (4608 in total). Within each split the patches
are put in a fixed seeded (``split_seed``) order, so the first training patches mix all
training photos. Optional training augmentation: horizontal flips.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import skimage.data
from skimage.transform import resize

from cincflow.data.augment import RandomShiftFlip
from cincflow.data.base import UInt8ImageDataModule
from cincflow.data.common import UInt8ArrayDataset

PATCH = 32
PHOTO_SPLIT: dict[str, tuple[str, ...]] = {
    "train": ("hubble_deep_field", "retina", "astronaut"),
    "val": ("chelsea", "immunohistochemistry"),
    "test": ("coffee", "rocket"),
}


def load_photo(name: str) -> np.ndarray:
    """A bundled scikit-image colour photo as uint8 (H, W, 3) (an alpha channel is dropped)."""
    img = np.asarray(getattr(skimage.data, name)())
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"skimage.data.{name}() is {img.dtype} {img.shape}, not an RGB(A) uint8 photo")
    return img[..., :3]


def grid_patches(img: np.ndarray, size: int = PATCH) -> np.ndarray:
    """Non-overlapping size x size patches of an (H, W, 3) image, row-major, as (n, 3, size, size)."""
    rows, cols = img.shape[0] // size, img.shape[1] // size
    tiles = img[: rows * size, : cols * size].reshape(rows, size, cols, size, 3)
    return np.ascontiguousarray(tiles.transpose(0, 2, 4, 1, 3).reshape(rows * cols, 3, size, size))


def photo_patches(name: str, scales: Sequence[int] = (1, 2, 4), min_std: float = 2.0) -> np.ndarray:
    """All kept 32x32 patches of one photo over the given downscaling factors, uint8 (n, 3, 32, 32)."""
    img = load_photo(name)
    out = []
    for f in scales:
        f = int(f)
        if f < 1:
            raise ValueError(f"scales must be integers >= 1, got {f}")
        if f == 1:
            scaled = img
        else:
            h, w = img.shape[0] // f, img.shape[1] // f
            if min(h, w) < PATCH:
                continue
            small = resize(img, (h, w), anti_aliasing=True, preserve_range=True)
            scaled = np.clip(np.rint(small), 0, 255).astype(np.uint8)
        out.append(grid_patches(scaled))
    patches = np.concatenate(out)
    keep = patches.reshape(len(patches), -1).std(axis=1) >= min_std
    return patches[keep]


class PhotosDataModule(UInt8ImageDataModule):
    """Patches of bundled scikit-image photos: 3 x 32 x 32, 8 bits; split by source photo.

    ``data_dir`` (of the base class) is unused. After ``setup``,
    ``sources[split]`` gives the source photo name of every image of that split, in
    dataset order.
    """

    in_channels = 3
    image_size = 32
    n_bits = 8

    def __init__(self, scales: Sequence[int] = (1, 2, 4), min_std: float = 2.0, augment: bool = True, **common):
        super().__init__(**common)
        if self.val_size:
            raise ValueError(f"val_size must be 0 for photos, got {self.val_size}: the splits are by photograph "
                             "(remove data.val_size)")
        self.scales = tuple(int(s) for s in scales)
        self.min_std = float(min_std)
        self.augmentation = RandomShiftFlip(max_shift=0, flip=True) if augment else None
        self.sources: dict[str, np.ndarray] = {}

    def _build_datasets(self):
        datasets = []
        rng = np.random.default_rng(self.split_seed)
        for split in ("train", "val", "test"):
            per_photo = [photo_patches(name, self.scales, self.min_std) for name in PHOTO_SPLIT[split]]
            patches = np.concatenate(per_photo)
            names = np.concatenate([np.full(len(p), n) for n, p in zip(PHOTO_SPLIT[split], per_photo)])
            order = rng.permutation(len(patches))
            self.sources[split] = names[order]
            transform = self.augmentation if split == "train" else None
            datasets.append(UInt8ArrayDataset(np.ascontiguousarray(patches[order]), transform=transform, seed=self.seed))
        return tuple(datasets)
