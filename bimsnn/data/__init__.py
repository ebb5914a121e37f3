"""Dataset loaders (EEG, ECG, audio) that emit spike-encoded streams.

Every loader raises :class:`DataError` for bad input, naming the file and the problem.
Modality loaders live in ``bimsnn.data.eeg``, ``bimsnn.data.ecg`` and ``bimsnn.data.audio``;
``bimsnn.data.demo`` writes the embedded demo datasets in the real file formats.
"""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Bad or missing input data. The message names the file and the problem.

    ``DataError(path, problem)``; the one-argument form ``DataError(message)`` also works,
    because PyTorch's DataLoader re-raises worker exceptions as ``type(exc)(message)``.
    """

    def __init__(self, path: str | Path | None, problem: str | None = None):
        if problem is None:  # one-argument form: a full message, no separate path
            path, problem = None, str(path)
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)


from bimsnn.data.eeg import (  # noqa: E402  (eeg imports DataError from here)
    CHBMIT,
    Bonn,
    leave_one_patient_out,
    parse_chbmit_summary,
    patient_split,
    read_edf_header,
    recording_split,
)

__all__ = [
    "CHBMIT",
    "Bonn",
    "DataError",
    "leave_one_patient_out",
    "parse_chbmit_summary",
    "patient_split",
    "read_edf_header",
    "recording_split",
]
