"""Deprecated location: see :mod:`bimsnn.paths` (shim for the migration)."""
from bimsnn.paths import repo_root, shared_data_dir  # noqa: F401
