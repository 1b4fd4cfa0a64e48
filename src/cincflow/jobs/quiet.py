"""Lightning output that does not concern a cinc-flow user, filtered precisely where it arises (the
jobs create every Trainer): the litlogger advertisement every Trainer without a LitLogger logs, and
the FutureWarning of torch's ``LeafSpec`` that Lightning 2.6's own pytree helper triggers in every
fit. Everything else Lightning says is kept."""
from __future__ import annotations

import logging
import warnings

LEAFSPEC = r"`isinstance\(treespec, LeafSpec\)` is deprecated"


class _NoLitLoggerTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("💡 Tip:") and "litlogger" in message)


def silence_lightning_noise() -> None:
    """Install both filters (idempotent)."""
    warnings.filterwarnings("ignore", message=LEAFSPEC, category=FutureWarning, module=r"lightning\.pytorch\.utilities\._pytree")
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NoLitLoggerTip) for f in logger.filters):
        logger.addFilter(_NoLitLoggerTip())
