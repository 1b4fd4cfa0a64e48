"""Configuration checks: the typed schema of the jobs' own keys (:mod:`.schema`), the ``_target_``
nodes (:mod:`.components`), :func:`validate` (:mod:`.checks`), the data against the model
(:mod:`.data`), and the Hydra callbacks that run them before Hydra makes the run folder
(:mod:`.launch`), handing what they built to the job (:mod:`.handoff`); hyperparameter searches and sweeps
(:mod:`.search`)."""
from .checks import check_device, validate

__all__ = ["check_device", "validate"]
