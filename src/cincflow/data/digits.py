"""scikit-learn's bundled handwritten digits as uint8 tensors [B, 1, 8, 8] (offline).

``sklearn.datasets.load_digits()``: 1797 greyscale 8x8 images with values 0..16 (17
levels). A value v is stored as ``min(16 * v, 255)`` (0, 16, ..., 240, 255) and the
model uses ``n_bits = 5``: the 5-bit bins ``floor(x / 8)`` keep all 17 levels distinct.

Split: a seeded (``split_seed``) partition into ``test_size`` (180) test, ``val_size``
(180) validation and the remaining 1437 training images. No augmentation (flipping a
digit changes its meaning). The quickstart dataset: no files, no network.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

from cincflow.data.base import UInt8ImageDataModule
from cincflow.data.common import UInt8ArrayDataset


def digits_uint8() -> np.ndarray:
    """All 1797 digits as uint8 (1797, 1, 8, 8), value v -> min(16 v, 255)."""
    images = load_digits().images  # float64 (1797, 8, 8), integer values 0..16
    return np.clip(np.rint(images * 16), 0, 255).astype(np.uint8)[:, None]


class DigitsDataModule(UInt8ImageDataModule):
    """sklearn digits: 1 x 8 x 8, 5 bits. ``data_dir`` (of the base class) is unused: the data ships
    with scikit-learn."""

    in_channels = 1
    image_size = 8
    n_bits = 5

    def __init__(self, val_size: int = 180, test_size: int = 180, **common):
        super().__init__(val_size=val_size, **common)
        self.test_size = int(test_size)

    def _build_datasets(self):
        images = digits_uint8()
        train_idx, val_idx, test_idx = self.holdout(len(images), [self.test_size])
        return (
            UInt8ArrayDataset(images, train_idx),
            UInt8ArrayDataset(images, val_idx),
            UInt8ArrayDataset(images, test_idx),
        )
