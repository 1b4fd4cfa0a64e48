"""The training data order as a function of (``datamodule.seed``, epoch) only, so that a resumed run
sees exactly the batches of an uninterrupted one."""
from __future__ import annotations

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils.data import DataLoader, RandomSampler


class EpochSeededSampler(RandomSampler):
    """A random permutation that depends only on (``seed``, epoch): the epoch is read from
    ``epoch_fn`` (the trainer's current epoch) when the iteration starts, or set by ``set_epoch``."""

    def __init__(self, data_source, seed: int, epoch_fn=None):
        super().__init__(data_source)
        self.seed = int(seed)
        self.epoch = 0
        self.epoch_fn = epoch_fn

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        epoch = int(self.epoch_fn()) if self.epoch_fn is not None else self.epoch
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        yield from torch.randperm(len(self.data_source), generator=gen).tolist()


class ResumableShuffle(Callback):
    """Makes the shuffled training order a function of (``datamodule.seed``, epoch) only, so that a
    run resumed from an end-of-epoch checkpoint (last.ckpt is written at every validation) sees
    exactly the batches of an uninterrupted run. Replaces the RandomSampler of the DataModule's
    train loader (a seeded DataLoader generator would restart at epoch 0's order after a resume).
    Under DDP Lightning substitutes its DistributedSampler (seeded by seed + epoch) anyway."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        dm = trainer.datamodule
        if stage != "fit" or dm is None or getattr(dm, "_resumable_original", None) is not None:
            return
        original = dm.train_dataloader
        seed = int(getattr(dm, "seed", 0) or 0)

        def train_dataloader():
            dl = original()
            if not isinstance(dl, DataLoader) or type(dl.sampler) is not RandomSampler:
                return dl
            return DataLoader(
                dl.dataset, batch_size=dl.batch_size,
                sampler=EpochSeededSampler(dl.dataset, seed, lambda: trainer.current_epoch),
                drop_last=dl.drop_last, num_workers=dl.num_workers, collate_fn=dl.collate_fn,
                pin_memory=dl.pin_memory, worker_init_fn=dl.worker_init_fn,
                persistent_workers=dl.persistent_workers if dl.num_workers > 0 else False,
            )

        dm._resumable_original = original
        dm.train_dataloader = train_dataloader

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        dm = trainer.datamodule
        original = getattr(dm, "_resumable_original", None) if dm is not None else None
        if original is not None:
            del dm.train_dataloader  # the instance attribute: back to the class's method
            dm._resumable_original = None
