"""Deprecated location: see :mod:`bimsnn.training.cli` (shim for the migration)."""
from bimsnn.training.cli import add_dataclass_args, parse_config  # noqa: F401
