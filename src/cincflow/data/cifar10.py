"""CIFAR-10 as uint8 tensors [B, 3, 32, 32].

On disk: torchvision's layout, ``<data_dir>/cifar-10-batches-py/`` with the python
pickles ``data_batch_1`` .. ``data_batch_5`` (train, 5 x 10000 images) and
``test_batch`` (10000 images). Each pickle is a dict whose ``data`` entry is an
N x 3072 uint8 array, channel-planar (1024 R values, then G, then B, each a row-major
32x32 plane). The pickles are read directly into uint8 arrays (no PIL, no float
transforms). If files are missing they are downloaded with
``torchvision.datasets.CIFAR10(root=data_dir, download=True)``.

Splits: train/val = a seeded split (``split_seed``) of the 50000 training images, with
``val_size`` (default 5000) held out; test = the official test batch. Optional training
augmentation (as in Glow / CInC Flow): random translation by up to ``max_shift`` pixels
(edge-replicate or zero padding) and horizontal flips.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
from torchvision.datasets import CIFAR10

from cincflow.data.augment import RandomShiftFlip
from cincflow.data.base import UInt8ImageDataModule
from cincflow.data.common import UInt8ArrayDataset
from cincflow.errors import CorruptDataError

BASE_FOLDER = CIFAR10.base_folder  # "cifar-10-batches-py"
TRAIN_FILES = tuple(name for name, _md5 in CIFAR10.train_list)  # data_batch_1 .. data_batch_5
TEST_FILES = tuple(name for name, _md5 in CIFAR10.test_list)  # test_batch


def load_cifar_batch(path: str | os.PathLike) -> np.ndarray:
    """Read one CIFAR python pickle into a uint8 array (N, 3, 32, 32)."""
    try:
        with open(path, "rb") as f:
            # encoding="latin1" as torchvision: the originals are Python 2 pickles.
            entry = pickle.load(f, encoding="latin1")
    except OSError:
        raise
    except Exception as err:  # UnpicklingError, EOFError (truncated), garbage -> anything
        raise CorruptDataError(
            f"cannot read CIFAR-10 batch {path}: {type(err).__name__}: {err}. The file is corrupted or "
            f"truncated; delete {Path(path).parent} and run again to re-download it."
        ) from err
    data = entry.get("data", entry.get(b"data")) if isinstance(entry, dict) else None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        if isinstance(data, np.ndarray):
            found = f"'data' = {data.dtype} array of shape {data.shape}"
        elif isinstance(entry, dict):
            found = f"a dict with keys {sorted(map(str, entry))}"
        else:
            found = f"a {type(entry).__name__}"
        raise CorruptDataError(
            f"CIFAR-10 batch {path} is malformed: expected a dict with 'data' = N x 3072 uint8 array, "
            f"found {found}. Delete {Path(path).parent} and run again to re-download it."
        )
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32))


class CIFAR10DataModule(UInt8ImageDataModule):
    """CIFAR-10: 3 x 32 x 32, 8 bits. See the module docstring for layout and splits."""

    in_channels = 3
    image_size = 32
    n_bits = 8

    def __init__(
        self,
        data_dir: str,
        val_size: int = 5000,
        augment: bool = True,
        max_shift: int = 2,
        flip: bool = True,
        pad_mode: str = "replicate",
        download: bool = True,
        **common,
    ):
        super().__init__(data_dir=data_dir, val_size=val_size, download=download, **common)
        self.augmentation = RandomShiftFlip(max_shift, flip, pad_mode) if augment else None

    @property
    def folder(self) -> Path:
        return Path(self.data_dir) / BASE_FOLDER

    def missing_files(self) -> list[str]:
        return [name for name in TRAIN_FILES + TEST_FILES if not (self.folder / name).is_file()]

    def prepare_data(self) -> None:
        """Download CIFAR-10 with torchvision if any batch file is missing."""
        self.fetch(
            "CIFAR-10", self.missing_files(), f"expected {self.folder}/{{{', '.join(TRAIN_FILES + TEST_FILES)}}}",
            f"Download {CIFAR10.url} on a machine with internet access and extract it into {self.data_dir} "
            f"(so that {self.folder / TRAIN_FILES[0]} exists).",
            lambda: CIFAR10(root=self.data_dir, train=True, download=True))

    def _build_datasets(self):
        self.prepare_data()  # no-op when the files are there (e.g. after rank 0 fetched them)
        train_all = np.concatenate([load_cifar_batch(self.folder / name) for name in TRAIN_FILES])
        test = np.concatenate([load_cifar_batch(self.folder / name) for name in TEST_FILES])
        train_idx, val_idx = self.holdout(len(train_all))
        return (
            UInt8ArrayDataset(train_all, train_idx, transform=self.augmentation, seed=self.seed),
            UInt8ArrayDataset(train_all, val_idx),
            UInt8ArrayDataset(test),
        )
