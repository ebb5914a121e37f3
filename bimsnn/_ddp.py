"""Deprecated location: see :mod:`bimsnn.training.distributed` (shim for the migration)."""
from bimsnn.training.distributed import *  # noqa: F401,F403
from bimsnn.training.distributed import _on  # noqa: F401
