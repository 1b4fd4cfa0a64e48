"""Training system: the LightningModule, EMA, callbacks, loggers, checkpoints (the jobs that use
them: :mod:`cincflow.jobs`)."""
from .ema import EMA
from .lit_module import FlowLitModule

__all__ = ["EMA", "FlowLitModule"]
