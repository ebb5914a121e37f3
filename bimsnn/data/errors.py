"""How loaders report bad input: one :class:`DataError` naming the file, or a loud skip.

A loader either accepts a file as the dataset's specification describes it, raises
``DataError(path, problem)``, or, where leaving a file out is legitimate (a record with no
beat of the requested classes, a file lacking a requested channel), skips it *loudly*
through :func:`skip`: one :class:`DataWarning` per file and an entry ``(path, reason)`` in
the dataset's ``skipped`` list, so a run report can print how much was left out. With
``strict=True`` every such skip is a DataError instead.
"""

from __future__ import annotations

import warnings
from pathlib import Path

__all__ = ["DataError", "DataWarning", "skip"]


class DataError(ValueError):
    """Bad or missing input data. The message names the file and the problem.

    ``DataError(path, problem)``; the one-argument form ``DataError(message)`` also works,
    because PyTorch's DataLoader re-raises worker exceptions as ``type(exc)(message)``.
    Line breaks inside ``problem`` (from a library's message) are folded into one line.

    >>> str(DataError("a/chb01-summary.txt", "line 3: seizure end 9.0 <= start 12.0"))
    'a/chb01-summary.txt: line 3: seizure end 9.0 <= start 12.0'
    """

    def __init__(self, path: str | Path | None, problem: str | None = None):
        if problem is None:  # one-argument form: a full message, no separate path
            path, problem = None, str(path)
        self.path = None if path is None else Path(path)
        self.problem = problem = " ".join(str(problem).split())  # one line, for one-line CLI errors
        super().__init__(f"{path}: {problem}" if path is not None else problem)


class DataWarning(UserWarning):
    """A loader left a file or annotation out; the dataset's ``skipped`` lists it."""


def skip(skipped: list, path: str | Path, reason: str, strict: bool) -> None:
    """Skip ``path`` loudly: append ``(path, reason)`` to ``skipped`` and warn once.

    Raises:
        DataError: under ``strict``, instead of skipping.
    """
    if strict:
        raise DataError(path, f"{reason} (strict=True: not skipped)")
    warnings.warn(f"{path}: {reason}; skipped", DataWarning, stacklevel=3)
    skipped.append((Path(path), reason))
