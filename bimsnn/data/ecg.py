"""ECG datasets in WFDB format: PTB-XL 12-lead records and MIT-BIH beats (read with ``wfdb``).

Symbols: T time samples, L leads (12 for PTB-XL), K label classes, W beat-window samples,
C leads kept per beat.

One ECG namespace over :mod:`bimsnn.data.ptbxl`, :mod:`bimsnn.data.mitbih` and the checked
WFDB readers of :mod:`bimsnn.data.wfdb_io`. Both datasets follow torchaudio:
``Dataset(root, ..., download=False)``; ``__getitem__`` returns ``(signal, label, meta)`` with a
time-major signal, ``(T, L)`` or ``(W, C)``, or whatever the optional ``encoder`` returns for
it. Every bad input raises :class:`~bimsnn.data.DataError`.
"""

from bimsnn.data.mitbih import AAMI_CLASSES, AAMI_MAP, DS1, DS2, MITBIH
from bimsnn.data.ptbxl import (
    PTBXL,
    PTBXL_SPLITS,
    PTBXL_TASKS,
    aggregate_labels,
    label_classes,
    ptbxl_folds,
    read_ptbxl_database,
    read_scp_statements,
)
from bimsnn.data.wfdb_io import read_annotations, read_wfdb, read_wfdb_header

__all__ = ["MITBIH", "AAMI_CLASSES", "AAMI_MAP", "DS1", "DS2", "PTBXL", "PTBXL_SPLITS",
           "PTBXL_TASKS", "aggregate_labels", "label_classes", "ptbxl_folds",
           "read_ptbxl_database", "read_scp_statements", "read_annotations", "read_wfdb",
           "read_wfdb_header"]
