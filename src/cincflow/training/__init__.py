"""Training system: the LightningModule, EMA, callbacks, loggers and the train/eval/sample jobs."""
from .ema import EMA
from .lit_module import FlowLitModule, fixed_noise

__all__ = ["EMA", "FlowLitModule", "fixed_noise"]
