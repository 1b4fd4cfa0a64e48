"""Lightning output that does not concern a cinc-flow user, filtered precisely, in every process
that imports the training system (``ddp_spawn`` children too): the litlogger advertisement every
Trainer without a LitLogger logs; the FutureWarning of torch's ``LeafSpec`` that Lightning 2.6's own
pytree helper triggers in every fit; the advice to ``sync_dist`` the two sample-health metrics,
which :class:`~cincflow.training.callbacks.SampleGrids` computes on rank 0 alone on purpose; and, under
mixed precision, the model summary's note that its size estimate in MB assumes 32 bits (the job prints
the parameter counts itself).
Everything else Lightning says is kept."""
from __future__ import annotations

import logging
import warnings

LEAFSPEC = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
SUMMARY_PRECISION = r"Precision \S+ is not supported by the model summary"
RANK_ZERO_METRICS = r"It is recommended to use `self.log\('val/(nonfinite_samples|inverse_residual_max)', \.\.\., sync_dist=True\)`"


class _NoLitLoggerTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("💡 Tip:") and "litlogger" in message)


def silence_lightning_noise() -> None:
    """Install the four filters (idempotent)."""
    warnings.filterwarnings("ignore", message=LEAFSPEC, category=FutureWarning, module=r"lightning\.pytorch\.utilities\._pytree")
    warnings.filterwarnings("ignore", message=SUMMARY_PRECISION)
    warnings.filterwarnings("ignore", message=RANK_ZERO_METRICS)
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NoLitLoggerTip) for f in logger.filters):
        logger.addFilter(_NoLitLoggerTip())
