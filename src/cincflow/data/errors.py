"""Exceptions raised by the data layer.

Both carry a complete, user-facing message: which directory/file is wrong, what was
expected there and how to obtain it.
"""

from __future__ import annotations


class DatasetNotFoundError(RuntimeError):
    """The dataset files are missing from ``data_dir`` (and cannot be downloaded)."""


class CorruptDataError(RuntimeError):
    """A dataset file exists but cannot be read or has the wrong shape/format."""
