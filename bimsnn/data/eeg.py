"""EEG datasets and the window splits shared by them.

Symbols: T samples per window, C channels.

The loaders live in their own modules and are re-exported here, one EEG namespace:
:class:`~bimsnn.data.chbmit.CHBMIT` (EDF + ``chbNN-summary.txt``), :class:`~bimsnn.data.bonn.Bonn`
(text segments), and the EDF header reader of :mod:`bimsnn.data.edf`. Both datasets return
``ds[i] -> (x (T, C), label, meta)`` and keep ``ds.meta``, a pandas DataFrame with one row per
window; the split helpers (from :mod:`bimsnn.data.windows`) group windows by recording so no
recording lands on both sides.
"""

from __future__ import annotations

from bimsnn.data.bonn import Bonn
from bimsnn.data.chbmit import CHBMIT, CHBMIT_CHANNELS_18, parse_chbmit_summary
from bimsnn.data.edf import read_edf_header
from bimsnn.data.windows import leave_one_patient_out, patient_split, recording_split

__all__ = ["parse_chbmit_summary", "read_edf_header", "CHBMIT", "Bonn", "CHBMIT_CHANNELS_18",
           "recording_split", "patient_split", "leave_one_patient_out"]
