"""Where the real recordings used by tests and benchmarks live.

One helper for every test and benchmark: ``$BIMSNN_SHARED_DATA`` if set, else
``../shared/data`` relative to the repository root (the layout CI uses).
"""

from __future__ import annotations

import os
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path | None:
    """Return the shared real-data folder, or ``None`` where it is absent."""
    env = os.environ.get("BIMSNN_SHARED_DATA")
    path = Path(env) if env else _REPO_ROOT.parent / "shared" / "data"
    return path if path.is_dir() else None


def repo_root() -> Path:
    """The repository root (the folder holding ``bimsnn/``, ``recipes/``, ``datasets/``)."""
    return _REPO_ROOT
