"""The Hydra callbacks of every launch (``conf/hydra/default.yaml``), in the order they run: the inputs
checked (:class:`CheckInputs`), the run folder decided (:class:`RunFolders`), and at the end of a
multirun the summary of its jobs (:class:`SweepSummary`, :func:`write_summary`)."""
from .check_inputs import CheckInputs
from .run_folders import RunFolders
from .sweep_summary import SweepSummary, write_summary

__all__ = ["CheckInputs", "RunFolders", "SweepSummary", "write_summary"]
