"""Downsampled ImageNet at 32x32 or 64x64 as uint8 tensors [B, 3, S, S], in its two published forms.

* van den Oord et al. 2016 (PixelRNN; used by Glow, Emerging and CInC, "imagenet-oord"):
  PNG folders ``<data_dir>/train_SxS/*.png`` and ``<data_dir>/valid_SxS/*.png`` (SxS RGB, no
  labels), files taken in sorted name order: :class:`ImageNet32OordDataModule`,
  :class:`ImageNet64OordDataModule`.
* Chrabaszcz et al. 2017: ``.npz`` batches ``<data_dir>/train_data_batch_1.npz`` ..
  ``train_data_batch_10.npz`` and ``<data_dir>/val_data.npz``, each with ``data`` = N x 3S^2 uint8,
  channel-planar (S^2 R values, then G, then B, each a row-major SxS plane) and ``labels``
  (1..1000, ignored): :class:`ImageNet32ChrabaszczDataModule`, :class:`ImageNet64ChrabaszczDataModule`.

Neither can be downloaded automatically. On first use the raw files are converted ONCE into uint8
``.npy`` caches (N, 3, S, S) under ``cache_dir`` (default ``<data_dir>/cache``), written atomically
with a progress bar, and from then on loaded memory-mapped (``mmap_mode="r"``) so DDP ranks and
workers share them. Delete a cache file to force its rebuild.

Splits: test = the official validation set (valid_SxS / val_data); val = a seeded (``split_seed``)
hold-out of ``val_size`` images from the training set; train = the rest.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from cincflow.data.base import UInt8ImageDataModule
from cincflow.data.common import UInt8ArrayDataset, cached_uint8_array
from cincflow.errors import CorruptDataError, DatasetNotFoundError

SIZES = (32, 64)


class _CachedImageNet(UInt8ImageDataModule):
    """Shared logic: one-time conversion of the ``train``/``test`` sources to caches.

    Subclasses set ``image_size`` (32 or 64), ``cache_names`` and :meth:`_plan`.
    """

    in_channels = 3
    n_bits = 8
    #: cache file names for the "train" and "test" sources (set by subclasses)
    cache_names: dict[str, str] = {}

    def __init__(self, data_dir: str, val_size: int = 10000, cache_dir: str | None = None, **common):
        super().__init__(data_dir=data_dir, val_size=val_size, **common)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else Path(self.data_dir) / "cache"

    @property
    def item_shape(self) -> tuple[int, int, int]:
        return (3, self.image_size, self.image_size)

    def cache_path(self, source: str) -> Path:
        return self.cache_dir / self.cache_names[source]

    def _plan(self, source: str) -> tuple[int, Iterator[np.ndarray]]:
        """(number of images, iterator of uint8 chunks (k, 3, S, S)) for ``source``."""
        raise NotImplementedError

    def _array(self, source: str) -> np.ndarray:
        return cached_uint8_array(
            self.cache_path(source),
            self.item_shape,
            lambda: self._plan(source),
            desc=f"{type(self).__name__}: caching {source} set",
        )

    def prepare_data(self) -> None:
        """Convert the raw files into the ``.npy`` caches (once; no-op afterwards)."""
        for source in ("train", "test"):
            self._array(source)

    def _build_datasets(self):
        train_all, test = self._array("train"), self._array("test")
        train_idx, val_idx = self.holdout(len(train_all))
        train_path, test_path = self.cache_path("train"), self.cache_path("test")
        return (
            UInt8ArrayDataset(train_all, train_idx, mmap_path=train_path),
            UInt8ArrayDataset(train_all, val_idx, mmap_path=train_path),
            UInt8ArrayDataset(test, mmap_path=test_path),
        )


# --------------------------------------------------------------------------- Oord PNGs


def oord_folders(size: int) -> dict[str, str]:
    """The release's folder names: {"train": "train_SxS", "test": "valid_SxS"}."""
    return {"train": f"train_{size}x{size}", "test": f"valid_{size}x{size}"}


def read_png(path: str | os.PathLike, size: int) -> np.ndarray:
    """Read a ``size`` x ``size`` RGB PNG into a uint8 array (3, size, size)."""
    try:
        with Image.open(path) as img:
            img.load()
            mode, got = img.mode, img.size
            arr = np.asarray(img)
    except Exception as err:  # UnidentifiedImageError, "image file is truncated", ...
        raise CorruptDataError(
            f"cannot read PNG {path}: {type(err).__name__}: {err}. The file is corrupted or truncated; "
            "re-extract it from the original tar archive."
        ) from err
    if got != (size, size) or mode != "RGB" or arr.shape != (size, size, 3):
        other = " or ".join(f"{s}x{s}" for s in SIZES if s != size)
        raise CorruptDataError(
            f"bad image {path}: expected a {size}x{size} RGB PNG (3 channels), got {got[0]}x{got[1]} "
            f"mode {mode!r} ({arr.shape[2] if arr.ndim == 3 else 1} channel(s)). Is this the {size}x{size} "
            f"(not {other}) release?"
        )
    return arr.transpose(2, 0, 1)


class _OordPNG(_CachedImageNet):
    """Downsampled ImageNet of van den Oord et al. 2016 (PNG folders), 8 bits."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.cache_names = {src: f"{name}.npy" for src, name in oord_folders(cls.image_size).items()}

    def _plan(self, source: str) -> tuple[int, Iterator[np.ndarray]]:
        s = self.image_size
        names = oord_folders(s)
        folder = Path(self.data_dir) / names[source]
        files = []
        if folder.is_dir():
            with os.scandir(folder) as entries:
                files = sorted(e.path for e in entries if e.name.lower().endswith(".png"))
        if not files:
            problem = "does not exist" if not folder.is_dir() else "contains no .png files"
            raise DatasetNotFoundError(
                f"Downsampled ImageNet {s}x{s} (van den Oord et al. 2016) not found: {folder} {problem}. "
                f"Expected layout: {self.data_dir}/{names['train']}/*.png (training images) and "
                f"{self.data_dir}/{names['test']}/*.png (validation images, used as test set), {s}x{s} RGB. "
                f"It cannot be downloaded automatically: get {names['train']}.tar and {names['test']}.tar "
                f"('Downsampled ImageNet {s}x{s}' from the van den Oord et al. / PixelRNN release, historically "
                "at image-net.org's downsample page, http://image-net.org/small/download.php), then "
                f"download and extract so that {self.data_dir}/{names['train']}/*.png exists (and likewise "
                f"{names['test']})."
            )
        return len(files), (read_png(f, s)[None] for f in files)


class ImageNet32OordDataModule(_OordPNG):
    """Downsampled ImageNet 32x32 of van den Oord et al. 2016 (PNG folders), 8 bits."""

    image_size = 32


class ImageNet64OordDataModule(_OordPNG):
    """Downsampled ImageNet 64x64 of van den Oord et al. 2016 (PNG folders), 8 bits."""

    image_size = 64


# ---------------------------------------------------------------------- Chrabaszcz npz

CHRABASZCZ_FILES = {
    "train": tuple(f"train_data_batch_{i}.npz" for i in range(1, 11)),
    "test": ("val_data.npz",),
}
#: the image-net.org archives holding them (64x64: the training batches come in two parts)
CHRABASZCZ_ARCHIVES = {
    32: ("Imagenet32_train_npz.zip", "Imagenet32_val_npz.zip"),
    64: ("Imagenet64_train_part1_npz.zip", "Imagenet64_train_part2_npz.zip", "Imagenet64_val_npz.zip"),
}


def _npz_error(path: os.PathLike, size: int, what: str, err: BaseException | None = None) -> CorruptDataError:
    detail = f": {type(err).__name__}: {err}" if err is not None else ""
    return CorruptDataError(
        f"bad ImageNet{size} batch {path}: {what}{detail}. Expected an .npz with 'data' = N x {3 * size * size} "
        "uint8 (channel-planar); the file may be corrupted or truncated - re-extract it from "
        f"{' / '.join(CHRABASZCZ_ARCHIVES[size])}."
    )


def npz_data_rows(path: str | os.PathLike, size: int) -> int:
    """Number of images in an ImageNet ``size``x``size`` ``.npz`` batch, read from the header of
    its ``data`` member only (cheap); validates dtype and shape (N, 3 size^2)."""
    try:
        with zipfile.ZipFile(path) as zf, zf.open("data.npy") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else (
                np.lib.format.read_array_header_2_0
            )
            shape, _fortran, dtype = read_header(f)
    except KeyError as err:
        raise _npz_error(path, size, "no 'data' array in the archive") from err
    except Exception as err:  # BadZipFile (truncated), zlib.error, ValueError (bad header), ...
        raise _npz_error(path, size, "cannot read it", err) from err
    if dtype != np.uint8 or len(shape) != 2 or shape[1] != 3 * size * size:
        raise _npz_error(path, size, f"'data' is {dtype} of shape {shape}")
    return int(shape[0])


def load_npz_batch(path: str | os.PathLike, size: int, rows: int) -> np.ndarray:
    """Load the ``data`` of an ImageNet ``.npz`` batch as uint8 (rows, 3, size, size)."""
    try:
        with np.load(path) as z:
            data = z["data"]
    except Exception as err:
        raise _npz_error(path, size, "cannot read it", err) from err
    if data.dtype != np.uint8 or data.shape != (rows, 3 * size * size):
        raise _npz_error(path, size, f"'data' is {data.dtype} of shape {data.shape}, header said "
                                     f"({rows}, {3 * size * size})")
    return data.reshape(rows, 3, size, size)


class _ChrabaszczNPZ(_CachedImageNet):
    """Downsampled ImageNet of Chrabaszcz et al. 2017 (npz batches), 8 bits."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        s = cls.image_size
        cls.cache_names = {"train": f"imagenet{s}_npz_train.npy", "test": f"imagenet{s}_npz_val.npy"}

    def _plan(self, source: str) -> tuple[int, Iterator[np.ndarray]]:
        s = self.image_size
        paths = [Path(self.data_dir) / name for name in CHRABASZCZ_FILES[source]]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            all_files = CHRABASZCZ_FILES["train"] + CHRABASZCZ_FILES["test"]
            raise DatasetNotFoundError(
                f"ImageNet{s} (Chrabaszcz et al. 2017, {s}x{s}) not found in {self.data_dir}: expected the 11 "
                f"files {', '.join(all_files)} (missing: {', '.join(missing)}). It cannot be downloaded "
                f"automatically: get {' / '.join(CHRABASZCZ_ARCHIVES[s])} from image-net.org (downsampled "
                f"versions, requires login), extract them and put the 11 .npz files side by side in "
                f"{self.data_dir} (the archives unpack into folders of their own), so that "
                f"{self.data_dir}/train_data_batch_1.npz exists."
            )
        rows = [npz_data_rows(p, s) for p in paths]  # validates every file before converting any
        return sum(rows), (load_npz_batch(p, s, r) for p, r in zip(paths, rows))


class ImageNet32ChrabaszczDataModule(_ChrabaszczNPZ):
    """Downsampled ImageNet 32x32 of Chrabaszcz et al. 2017 (npz batches, N x 3072), 8 bits."""

    image_size = 32


class ImageNet64ChrabaszczDataModule(_ChrabaszczNPZ):
    """Downsampled ImageNet 64x64 of Chrabaszcz et al. 2017 (npz batches, N x 12288), 8 bits."""

    image_size = 64
