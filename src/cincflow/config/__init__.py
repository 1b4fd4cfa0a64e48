"""Configuration checks: the typed schema (:mod:`.schema`), the checks that need more than types
(:mod:`.checks`) and the Hydra callback that runs them before Hydra makes the run folder
(:mod:`.callback`)."""
from .checks import check_device, validate

__all__ = ["check_device", "validate"]
