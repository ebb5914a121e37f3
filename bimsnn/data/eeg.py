"""EEG datasets and the window splits shared by them.

Symbols: T samples per window, C channels.

The loaders live in their own modules and are re-exported here, one EEG namespace:
:class:`~bimsnn.data.chbmit.CHBMIT` (EDF + ``chbNN-summary.txt``), :class:`~bimsnn.data.bonn.Bonn`
(text segments), and the EDF header reader of :mod:`bimsnn.data.edf`. Both datasets return
``ds[i] -> (x (T, C), label, meta)`` and keep ``ds.meta``, a pandas DataFrame with one row per
window; the split helpers below group windows by recording so no recording lands on both sides.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bimsnn.data.bonn import Bonn
from bimsnn.data.chbmit import CHBMIT, CHBMIT_CHANNELS_18, parse_chbmit_summary
from bimsnn.data.edf import read_edf_header

__all__ = ["parse_chbmit_summary", "read_edf_header", "CHBMIT", "Bonn", "CHBMIT_CHANNELS_18",
           "recording_split", "patient_split", "leave_one_patient_out"]


# --------------------------------------------------------------------------- splits
def recording_split(ds, test_size: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, test_idx) of windows, whole recordings (CHB-MIT files, Bonn segments)
    on one side; stratified on "recording has an ictal window" where both classes allow it."""
    from sklearn.model_selection import train_test_split

    rec = ds.meta.groupby("recording")["label"].max()
    strat = rec.to_numpy() if min(np.bincount(rec.to_numpy(), minlength=2)) >= 2 else None
    _, test = train_test_split(rec.index.to_numpy(), test_size=test_size, random_state=seed,
                               stratify=strat)
    is_test = ds.meta["recording"].isin(set(test)).to_numpy()
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def patient_split(ds, test_patients: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, test_idx): windows of ``test_patients`` vs the rest."""
    pats = set(ds.meta["patient"])
    unknown = set(test_patients) - pats
    if unknown:
        raise ValueError(f"unknown patients {sorted(unknown)}; have {sorted(pats)}")
    is_test = ds.meta["patient"].isin(set(test_patients)).to_numpy()
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def leave_one_patient_out(ds) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """[(held-out patient, train_idx, test_idx), ...] through sklearn's LeaveOneGroupOut."""
    from sklearn.model_selection import LeaveOneGroupOut

    groups = ds.meta["patient"].to_numpy()
    return [(str(groups[te[0]]), tr, te)
            for tr, te in LeaveOneGroupOut().split(np.zeros(len(groups)), groups=groups)]
