"""Dataset loaders (EEG, ECG, audio) that emit spike-encoded streams.

Every loader raises :class:`DataError` for bad input, naming the file and the problem.
"""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Bad or missing input data. The message names the file and the problem."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)


__all__ = ["DataError"]
