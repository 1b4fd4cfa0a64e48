"""Training system: the LightningModule, EMA, callbacks, loggers, checkpoints (the jobs that use
them: :mod:`cincflow.jobs`)."""
from .ema import EMA
from .lit_module import FlowLitModule
from .quiet import silence_lightning_noise

silence_lightning_noise()

__all__ = ["EMA", "FlowLitModule"]
