"""Deprecated location: see :mod:`bimsnn.training.loop` (shim for the migration)."""
from bimsnn.training.loop import data_errors, run_epochs, update  # noqa: F401
