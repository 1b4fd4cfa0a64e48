"""Base LightningDataModule for uint8 image data: what every DataModule of :mod:`cincflow.data` shares.

Contract:

* every batch is ONE ``torch.uint8`` tensor [B, C, H, W] with values 0..255 (no labels);
  dequantisation/preprocessing happens later, in :mod:`cincflow.pixels`;
* attributes ``in_channels``, ``image_size`` (square images) and ``n_bits`` (the bit depth the
  model should use for this data) are known right after construction;
* the training order is a function of (``seed``, epoch) only (:class:`EpochSeededSampler`, the train
  loader's own sampler: Lightning sets its epoch), so a run resumed from an end-of-epoch checkpoint
  sees exactly the batches of an uninterrupted one, with or without the jobs; the last incomplete
  batch is dropped when the train set holds at least one full batch; val/test loaders keep the
  order. Under DDP Lightning puts its ``DistributedSampler`` (seeded by seed + epoch) in its place;
* ``train_images(n)`` returns the first ``n`` training images, unaugmented, as uint8
  [n, C, H, W] (for data-dependent initialisation such as ActNorm);
* training augmentation (where a DataModule has one) is deterministic given ``seed`` too: the
  k-th draw of training image i uses the seed (``seed``, i, k) (:class:`UInt8ArrayDataset`),
  with any number of workers; the draw counts are the DataModule's ``state_dict``, which Lightning
  keeps in checkpoints, so a resumed single-process run continues the same augmentations (under
  DDP each process counts its own draws and a resumed run continues from rank 0's counts);
* :meth:`data_config` is the ``_target_`` config that rebuilds it (checkpoints keep it).

The base class owns the options every data set has (``data_dir``, ``batch_size``, ``num_workers``,
``seed``, ``val_size``, ``split_seed``, ``download``), the seeded hold-out (:meth:`holdout`) and
download-or-raise (:meth:`fetch`). A DataModule is a subclass with its own options, passing the rest
on (``**common``: the configuration checks follow them to this constructor), that implements
:meth:`_build_datasets` (README: Extending cinc-flow).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, RandomSampler

from cincflow.checks import check_positive_int
from cincflow.data.common import UInt8ArrayDataset, seeded_split
from cincflow.errors import DatasetNotFoundError
from cincflow.targets import path_of


class EpochSeededSampler(RandomSampler):
    """A random permutation that depends only on (``seed``, epoch); Lightning calls :meth:`set_epoch`
    at the start of every training epoch (also after a resume). A RandomSampler, so that under DDP
    Lightning replaces it by its DistributedSampler."""

    def __init__(self, data_source, seed: int):
        super().__init__(data_source)
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        yield from torch.randperm(len(self.data_source), generator=gen).tolist()


class UInt8ImageDataModule(LightningDataModule):
    """Common options, loaders and bookkeeping; see the module docstring for the contract."""

    in_channels: int
    image_size: int
    n_bits: int

    def __init__(self, data_dir: str | None = None, batch_size: int = 64, num_workers: int = 0, seed: int = 0,
                 val_size: int = 0, split_seed: int = 0, download: bool = False):
        super().__init__()
        check_positive_int("batch_size", batch_size)
        check_positive_int("num_workers", num_workers, minimum=0)
        check_positive_int("val_size", val_size, minimum=0)
        self.save_hyperparameters()  # this constructor's arguments and the subclass's: data_config()
        self.data_dir = None if data_dir is None else str(data_dir)
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.seed, self.val_size, self.split_seed = int(seed), int(val_size), int(split_seed)
        self.download = bool(download)
        self.train_set: UInt8ArrayDataset | None = None
        self.val_set: UInt8ArrayDataset | None = None
        self.test_set: UInt8ArrayDataset | None = None

    def data_config(self) -> dict:
        """The ``_target_`` config of this DataModule (its class and constructor arguments)."""
        return {"_target_": path_of(type(self)), **dict(self.hparams)}

    def _build_datasets(self) -> tuple[UInt8ArrayDataset, UInt8ArrayDataset, UInt8ArrayDataset]:
        """Return (train, val, test) datasets; only the train one may augment."""
        raise NotImplementedError

    def holdout(self, n: int, more: Sequence[int] = ()) -> list[np.ndarray]:
        """``range(n)`` split by ``split_seed`` into [rest, ``val_size`` held out, then ``more``]."""
        return seeded_split(n, [self.val_size, *more], self.split_seed)

    def fetch(self, name: str, missing: Sequence[str], expected: str, how: str, download: Callable[[], None]) -> None:
        """Download-or-raise: nothing when no file is ``missing``; else ``download()`` when allowed, a
        DatasetNotFoundError naming ``expected`` and ``how`` to get the files when not or when it fails."""
        if not missing:
            return
        where = f"{name} not found in {self.data_dir}: {expected} (missing: {', '.join(missing)})"
        if not self.download:
            raise DatasetNotFoundError(f"{where}. download=False, so it was not fetched. {how}")
        try:
            download()
        except Exception as err:  # network errors, bad archive, torchvision's integrity check...
            raise DatasetNotFoundError(f"{where}, and the automatic download failed ({type(err).__name__}: {err}). "
                                       f"{how}") from err

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
            sampler=EpochSeededSampler(dataset, self.seed) if train else None,
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
        check_positive_int("n", n)
        self.setup("fit")
        return self.train_set.images(n)
