"""Base LightningDataModule for uint8 image data.

Contract shared by all DataModules of :mod:`cincflow.data`:

* every batch is ONE ``torch.uint8`` tensor [B, C, H, W] with values 0..255 (no labels);
  dequantisation/preprocessing happens later, in :mod:`cincflow.preprocess`;
* attributes ``in_channels``, ``image_size`` (square images) and ``n_bits`` (the bit
  depth the model should use for this data) are known right after construction;
* ``train_dataloader`` shuffles with a ``torch.Generator`` seeded from ``seed`` and drops
  the last incomplete batch when the train set holds at least one full batch;
  val/test loaders keep the order. No samplers are built here: under DDP Lightning
  injects its ``DistributedSampler``;
* ``train_images(n)`` returns the first ``n`` training images, unaugmented, as uint8
  [n, C, H, W] (for data-dependent initialisation such as ActNorm);
* training augmentation (where a DataModule has one) is deterministic given ``seed`` too: the
  k-th draw of training image i uses the seed (``seed``, i, k) (:class:`UInt8ArrayDataset`),
  with any number of workers; the draw counts are the DataModule's ``state_dict``, which Lightning
  keeps in checkpoints, so a resumed single-process run continues the same augmentations (under
  DDP each process counts its own draws and a resumed run continues from rank 0's counts).

Subclasses implement :meth:`_build_datasets`.
"""

from __future__ import annotations

import warnings

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from cincflow.data.common import UInt8ArrayDataset


class UInt8ImageDataModule(LightningDataModule):
    """Common loaders and bookkeeping; see the module docstring for the contract."""

    in_channels: int
    image_size: int
    n_bits: int

    def __init__(self, batch_size: int = 64, num_workers: int = 0, seed: int = 0):
        super().__init__()
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if int(num_workers) < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.train_set: UInt8ArrayDataset | None = None
        self.val_set: UInt8ArrayDataset | None = None
        self.test_set: UInt8ArrayDataset | None = None

    def _build_datasets(self) -> tuple[UInt8ArrayDataset, UInt8ArrayDataset, UInt8ArrayDataset]:
        """Return (train, val, test) datasets; only the train one may augment."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        """Build all three splits (once; later calls are no-ops)."""
        if self.train_set is None:
            self.train_set, self.val_set, self.test_set = self._build_datasets()

    def _loader(self, dataset: UInt8ArrayDataset | None, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before requesting dataloaders")
        workers = self.num_workers
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train,
            generator=torch.Generator().manual_seed(self.seed) if train else None,
            drop_last=train and len(dataset) >= self.batch_size,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The augmentation draw counts of the training set (empty without augmentation)."""
        draws = getattr(self.train_set, "draws", None)
        return {} if draws is None else {"augment_draws": draws.clone()}

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        draws = state_dict.get("augment_draws")
        if draws is None:
            return
        self.setup("fit")
        if self.train_set.draws is None or self.train_set.draws.shape != draws.shape:
            have = "no augmentation" if self.train_set.draws is None else f"{len(self.train_set)} training images"
            warnings.warn(f"the checkpoint counts augmentations of {len(draws)} training images but this "
                          f"{type(self).__name__} has {have}: its augmentations start afresh", stacklevel=2)
            return
        self.train_set.draws.copy_(draws)

    def train_images(self, n: int) -> torch.Tensor:
        """First ``n`` training images (fewer if the train set is smaller), uint8 [n, C, H, W].

        Deterministic and never augmented; runs :meth:`setup` if needed.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.setup("fit")
        return self.train_set.images(n)
