"""Downsampled ImageNet 32x32 as uint8 tensors [B, 3, 32, 32], in its two published forms.

* :class:`ImageNet32OordDataModule` - van den Oord et al. 2016 (PixelRNN; used by Glow):
  PNG folders ``<data_dir>/train_32x32/*.png`` and ``<data_dir>/valid_32x32/*.png``
  (32x32 RGB, no labels), files taken in sorted name order.
* :class:`ImageNet32ChrabaszczDataModule` - Chrabaszcz et al. 2017: ``.npz`` batches
  ``<data_dir>/train_data_batch_1.npz`` .. ``train_data_batch_10.npz`` and
  ``<data_dir>/val_data.npz``, each with ``data`` = N x 3072 uint8, channel-planar
  (1024 R values, then G, then B, each a row-major 32x32 plane) and ``labels``
  (1..1000, ignored).

Neither can be downloaded automatically. On first use the raw files are converted ONCE
into uint8 ``.npy`` caches (N, 3, 32, 32) under ``cache_dir`` (default
``<data_dir>/cache``), written atomically with a progress bar, and from then on loaded
memory-mapped (``mmap_mode="r"``) so DDP ranks and workers share them. Delete a cache
file to force its rebuild.

Splits: test = the official validation set (valid_32x32 / val_data); val = a seeded
(``split_seed``) hold-out of ``val_size`` images from the training set; train = the rest.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from cincflow.data.base import UInt8ImageDataModule
from cincflow.data.common import UInt8ArrayDataset, cached_uint8_array, seeded_split
from cincflow.data.errors import CorruptDataError, DatasetNotFoundError

ITEM_SHAPE = (3, 32, 32)


class _CachedImageNet32(UInt8ImageDataModule):
    """Shared logic: one-time conversion of the ``train``/``test`` sources to caches."""

    in_channels = 3
    image_size = 32
    n_bits = 8
    #: cache file names for the "train" and "test" sources (set by subclasses)
    cache_names: dict[str, str] = {}

    def __init__(
        self,
        data_dir: str,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        val_size: int = 10000,
        split_seed: int = 0,
        cache_dir: str | None = None,
    ):
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.data_dir = str(data_dir)
        self.val_size = int(val_size)
        self.split_seed = int(split_seed)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else Path(self.data_dir) / "cache"
        self.save_hyperparameters()

    def cache_path(self, source: str) -> Path:
        return self.cache_dir / self.cache_names[source]

    def _plan(self, source: str) -> tuple[int, Iterator[np.ndarray]]:
        """(number of images, iterator of uint8 chunks (k, 3, 32, 32)) for ``source``."""
        raise NotImplementedError

    def _array(self, source: str) -> np.ndarray:
        return cached_uint8_array(
            self.cache_path(source),
            ITEM_SHAPE,
            lambda: self._plan(source),
            desc=f"{type(self).__name__}: caching {source} set",
        )

    def prepare_data(self) -> None:
        """Convert the raw files into the ``.npy`` caches (once; no-op afterwards)."""
        for source in ("train", "test"):
            self._array(source)

    def _build_datasets(self):
        train_all, test = self._array("train"), self._array("test")
        train_idx, val_idx = seeded_split(len(train_all), [self.val_size], self.split_seed)
        train_path, test_path = self.cache_path("train"), self.cache_path("test")
        return (
            UInt8ArrayDataset(train_all, train_idx, mmap_path=train_path),
            UInt8ArrayDataset(train_all, val_idx, mmap_path=train_path),
            UInt8ArrayDataset(test, mmap_path=test_path),
        )


# --------------------------------------------------------------------------- Oord PNGs

OORD_FOLDERS = {"train": "train_32x32", "test": "valid_32x32"}


def read_png_32(path: str | os.PathLike) -> np.ndarray:
    """Read a 32x32 RGB PNG into a uint8 array (3, 32, 32)."""
    try:
        with Image.open(path) as img:
            img.load()
            mode, size = img.mode, img.size
            arr = np.asarray(img)
    except Exception as err:  # UnidentifiedImageError, "image file is truncated", ...
        raise CorruptDataError(
            f"cannot read PNG {path}: {type(err).__name__}: {err}. The file is corrupted or truncated; "
            "re-extract it from the original tar archive."
        ) from err
    if size != (32, 32) or mode != "RGB" or arr.shape != (32, 32, 3):
        raise CorruptDataError(
            f"bad image {path}: expected a 32x32 RGB PNG (3 channels), got {size[0]}x{size[1]} "
            f"mode {mode!r} ({arr.shape[2] if arr.ndim == 3 else 1} channel(s)). Is this the 32x32 "
            "(not 64x64) release?"
        )
    return arr.transpose(2, 0, 1)


class ImageNet32OordDataModule(_CachedImageNet32):
    """Downsampled ImageNet 32x32 of van den Oord et al. 2016 (PNG folders), 8 bits."""

    cache_names = {"train": "train_32x32.npy", "test": "valid_32x32.npy"}

    def _plan(self, source: str) -> tuple[int, Iterator[np.ndarray]]:
        folder = Path(self.data_dir) / OORD_FOLDERS[source]
        files = []
        if folder.is_dir():
            with os.scandir(folder) as entries:
                files = sorted(e.path for e in entries if e.name.lower().endswith(".png"))
        if not files:
            problem = "does not exist" if not folder.is_dir() else "contains no .png files"
            raise DatasetNotFoundError(
                f"Downsampled ImageNet 32x32 (van den Oord et al. 2016) not found: {folder} {problem}. "
                f"Expected layout: {self.data_dir}/train_32x32/*.png (training images) and "
                f"{self.data_dir}/valid_32x32/*.png (validation images, used as test set), 32x32 RGB. "
                "It cannot be downloaded automatically: get train_32x32.tar and valid_32x32.tar "
                "('Downsampled ImageNet 32x32' from the van den Oord et al. / PixelRNN release, historically "
                "at image-net.org's downsample page, http://image-net.org/small/download.php), then "
                f"download and extract so that {self.data_dir}/train_32x32/*.png exists (and likewise "
                "valid_32x32)."
            )
        return len(files), (read_png_32(f)[None] for f in files)


# ---------------------------------------------------------------------- Chrabaszcz npz

CHRABASZCZ_FILES = {
    "train": tuple(f"train_data_batch_{i}.npz" for i in range(1, 11)),
    "test": ("val_data.npz",),
}


def _npz_error(path: os.PathLike, what: str, err: BaseException | None = None) -> CorruptDataError:
    detail = f": {type(err).__name__}: {err}" if err is not None else ""
    return CorruptDataError(
        f"bad ImageNet32 batch {path}: {what}{detail}. Expected an .npz with 'data' = N x 3072 uint8 "
        "(channel-planar); the file may be corrupted or truncated - re-extract it from "
        "Imagenet32_train_npz.zip / Imagenet32_val_npz.zip."
    )


def npz_data_rows(path: str | os.PathLike) -> int:
    """Number of images in an ImageNet32 ``.npz`` batch, read from the header of its
    ``data`` member only (cheap); validates dtype and shape."""
    try:
        with zipfile.ZipFile(path) as zf, zf.open("data.npy") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else (
                np.lib.format.read_array_header_2_0
            )
            shape, _fortran, dtype = read_header(f)
    except KeyError as err:
        raise _npz_error(path, "no 'data' array in the archive") from err
    except Exception as err:  # BadZipFile (truncated), zlib.error, ValueError (bad header), ...
        raise _npz_error(path, "cannot read it", err) from err
    if dtype != np.uint8 or len(shape) != 2 or shape[1] != 3072:
        raise _npz_error(path, f"'data' is {dtype} of shape {shape}")
    return int(shape[0])


def load_npz_batch(path: str | os.PathLike, rows: int) -> np.ndarray:
    """Load the ``data`` of an ImageNet32 ``.npz`` batch as uint8 (rows, 3, 32, 32)."""
    try:
        with np.load(path) as z:
            data = z["data"]
    except Exception as err:
        raise _npz_error(path, "cannot read it", err) from err
    if data.dtype != np.uint8 or data.shape != (rows, 3072):
        raise _npz_error(path, f"'data' is {data.dtype} of shape {data.shape}, header said ({rows}, 3072)")
    return data.reshape(rows, *ITEM_SHAPE)


class ImageNet32ChrabaszczDataModule(_CachedImageNet32):
    """Downsampled ImageNet 32x32 of Chrabaszcz et al. 2017 (npz batches), 8 bits."""

    cache_names = {"train": "imagenet32_npz_train.npy", "test": "imagenet32_npz_val.npy"}

    def _plan(self, source: str) -> tuple[int, Iterator[np.ndarray]]:
        paths = [Path(self.data_dir) / name for name in CHRABASZCZ_FILES[source]]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            all_files = CHRABASZCZ_FILES["train"] + CHRABASZCZ_FILES["test"]
            raise DatasetNotFoundError(
                f"ImageNet32 (Chrabaszcz et al. 2017) not found in {self.data_dir}: expected the 11 files "
                f"{', '.join(all_files)} (missing: {', '.join(missing)}). It cannot be downloaded "
                "automatically: get Imagenet32_train_npz.zip / Imagenet32_val_npz.zip from image-net.org "
                f"(downsampled versions, requires login) and extract them so that "
                f"{self.data_dir}/train_data_batch_1.npz exists."
            )
        rows = [npz_data_rows(p) for p in paths]  # validates every file before converting any
        return sum(rows), (load_npz_batch(p, r) for p, r in zip(paths, rows))
