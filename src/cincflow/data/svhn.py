"""SVHN (Street View House Numbers, cropped digits) as uint8 tensors [B, 3, 32, 32], n_bits 8.

The out-of-distribution data set of likelihood models trained on CIFAR-10 (Nalisnick et al. 2019).
On disk: torchvision's layout, ``<data_dir>/train_32x32.mat`` (73257 images) and
``<data_dir>/test_32x32.mat`` (26032 images), MATLAB files whose ``X`` is a uint8 array
[32, 32, 3, N] (row, column, channel, image) and ``y`` the labels [N, 1] (1..10, ignored). They are
read directly with ``scipy.io.loadmat``; missing files are downloaded with
``torchvision.datasets.SVHN(root=data_dir, split=..., download=True)``.

Splits: train/val = a seeded split (``split_seed``) of the training file with ``val_size`` held
out; test = the official test file. No augmentation (a flipped digit is another digit).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from torchvision.datasets import SVHN

from cincflow.data.base import UInt8ImageDataModule
from cincflow.data.common import UInt8ArrayDataset
from cincflow.errors import CorruptDataError

FILES = {split: SVHN.split_list[split][1] for split in ("train", "test")}  # train_32x32.mat, test_32x32.mat


def load_svhn_mat(path: str | os.PathLike) -> np.ndarray:
    """Read ``X`` [32, 32, 3, N] of an SVHN .mat file into a uint8 array (N, 3, 32, 32)."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(path, variable_names=["X"])
    except Exception as err:  # truncated file, not a .mat, ...
        raise CorruptDataError(
            f"cannot read SVHN file {path}: {type(err).__name__}: {err}. The file is corrupted or truncated; "
            "delete it and run again to re-download it."
        ) from err
    x = mat.get("X")
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        found = "no 'X' array" if not isinstance(x, np.ndarray) else f"'X' = {x.dtype} array of shape {x.shape}"
        raise CorruptDataError(
            f"SVHN file {path} is malformed: expected 'X' = uint8 array [32, 32, 3, N], found {found}. "
            "Delete it and run again to re-download it."
        )
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1))  # as torchvision: (N, C, H, W)


class SVHNDataModule(UInt8ImageDataModule):
    """SVHN: 3 x 32 x 32, 8 bits. See the module docstring for layout and splits."""

    in_channels = 3
    image_size = 32
    n_bits = 8

    def __init__(self, data_dir: str, val_size: int = 5000, download: bool = True, **common):
        super().__init__(data_dir=data_dir, val_size=val_size, download=download, **common)

    def missing_files(self) -> list[str]:
        return [name for name in FILES.values() if not (Path(self.data_dir) / name).is_file()]

    def prepare_data(self) -> None:
        """Download the missing .mat files with torchvision."""
        missing = self.missing_files()
        urls = " and ".join(SVHN.split_list[split][0] for split, name in FILES.items() if name in missing)

        def download() -> None:
            for split, name in FILES.items():
                if name in missing:
                    SVHN(root=self.data_dir, split=split, download=True)

        self.fetch("SVHN", missing, f"expected {self.data_dir}/{{{', '.join(FILES.values())}}}",
                   f"Download {urls} on a machine with internet access into {self.data_dir}.", download)

    def _build_datasets(self):
        self.prepare_data()  # no-op when the files are there (e.g. after rank 0 fetched them)
        train_all = load_svhn_mat(Path(self.data_dir) / FILES["train"])
        test = load_svhn_mat(Path(self.data_dir) / FILES["test"])
        train_idx, val_idx = self.holdout(len(train_all))
        return (
            UInt8ArrayDataset(train_all, train_idx),
            UInt8ArrayDataset(train_all, val_idx),
            UInt8ArrayDataset(test),
        )
