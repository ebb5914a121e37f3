"""Windows held in memory, and the train/validation/test splits the recipes use.

Symbols: N windows, T time steps, C channels (C' after encoding), R recordings (CHB-MIT
files, Bonn segments, ECG records).

Every split keeps a *group* (a recording, a patient, an ECG record, or one record's time
span) on one side only, so that no test window shares a source with a training window.
All splits are deterministic for a given seed.

EEG splits take a dataset with a ``meta`` DataFrame (or that DataFrame itself) holding one
row per window with columns ``recording``, ``label`` and, for patient splits, ``patient``
(:class:`bimsnn.data.CHBMIT`, :class:`bimsnn.data.Bonn`). ECG splits take a beat dataset
(:class:`bimsnn.data.ecg.MITBIH`: ``records``, ``beat_record``, ``beat_sample``, ``pre``,
``post``).

    >>> ws = WindowSet(torch.zeros(3, 5, 2, dtype=torch.uint8), [0, 1, 0])
    >>> len(ws), ws[1][0].shape, int(ws[1][1]), ws[1][2]
    (3, torch.Size([5, 2]), 1, None)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import Dataset

from bimsnn.data.errors import DataError

__all__ = ["WindowSet", "materialize", "recording_split", "patient_split",
           "leave_one_patient_out", "split_recordings", "recording_windows", "time_split",
           "record_split"]


# --------------------------------------------------------------------------- windows
class WindowSet(Dataset):
    """Windows held in memory: ``ds[i] -> (x (T, C), label, meta)``.

    Args:
        x: (N, T, C) uint8 spikes (ON/OFF in {0, 1}) or float.
        labels: N labels (ints, floats or multi-hot rows), stored as a tensor.
        metas: N dicts, or None (every item's meta is then None).

    :func:`bimsnn.training.collate` turns uint8 batches into float. Encoding once (see
    :func:`materialize`), instead of in every ``__getitem__`` of every epoch, is what keeps
    epochs cheap. For a subset without copying, wrap it in ``torch.utils.data.Subset``.
    """

    def __init__(self, x: Tensor, labels, metas: list[dict] | None = None):
        self.x, self.labels, self.metas = x, torch.as_tensor(np.asarray(labels)), metas
        if len(self.labels) != len(x) or (metas is not None and len(metas) != len(x)):
            raise ValueError(f"WindowSet: {len(x)} windows, {len(self.labels)} labels, "
                             f"{None if metas is None else len(metas)} metas")

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], self.labels[i], None if self.metas is None else self.metas[i]


def materialize(ds: Dataset, idx: Iterable[int], encode: Callable[[Tensor], Tensor] | None = None,
                chunk: int = 2048) -> WindowSet:
    """Read ``ds[i]`` for i in ``idx`` (in that order) and encode them in chunks.

    Args:
        ds: items ``(x (T, C), label, meta)``, all of one shape.
        encode: time-major encoder ``(T, n, C) -> (T, n, C')`` (e.g. ``ADMEncoder(0.5)``),
            applied to ``chunk`` windows at a time, or None.
    Returns:
        a :class:`WindowSet`, x (N, T, C') uint8 when every encoded value is 0 or 1, else
        float32.
    """
    xs, ys, metas = [], [], []
    for i in idx:
        x, y, m = ds[int(i)]
        xs.append(torch.as_tensor(x))
        ys.append(np.asarray(y))
        metas.append(m)
    if not xs:
        return WindowSet(torch.zeros(0), np.zeros(0, np.int64), [])
    parts = []
    for k in range(0, len(xs), chunk):
        x = torch.stack(xs[k:k + chunk], dim=1)                            # (T, n, C)
        x = encode(x) if encode is not None else x
        binary = bool(((x == 0) | (x == 1)).all())
        parts.append(x.transpose(0, 1).to(torch.uint8 if binary else torch.float32))
    if len({p.dtype for p in parts}) > 1:  # some chunk was not binary: all become float
        parts = [p.float() for p in parts]
    return WindowSet(torch.cat(parts), np.stack(ys), metas)


# --------------------------------------------------------------------------- EEG splits
def _meta(ds) -> pd.DataFrame:
    """A dataset's per-window ``meta`` DataFrame, or the DataFrame itself."""
    return ds if isinstance(ds, pd.DataFrame) else ds.meta


def recording_split(ds, test_size: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, test_idx) of windows, whole recordings on one side; stratified on
    "recording has an ictal window" where both classes have ≥ 2 recordings (sklearn
    ``train_test_split`` over the sorted recording names).

    Args:
        ds: a dataset with ``meta`` (columns ``recording``, ``label``), or that DataFrame
            (e.g. ``ds.meta.iloc[train_idx].reset_index(drop=True)`` to split again).
    """
    from sklearn.model_selection import train_test_split

    meta = _meta(ds)
    rec = meta.groupby("recording")["label"].max()
    strat = rec.to_numpy() if min(np.bincount(rec.to_numpy(), minlength=2)) >= 2 else None
    _, test = train_test_split(rec.index.to_numpy(), test_size=test_size, random_state=seed,
                               stratify=strat)
    is_test = meta["recording"].isin(set(test)).to_numpy()
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def patient_split(ds, test_patients: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, test_idx): windows of ``test_patients`` vs the rest (``ds`` as
    :func:`recording_split`, with a ``patient`` column)."""
    meta = _meta(ds)
    pats = set(meta["patient"])
    unknown = set(test_patients) - pats
    if unknown:
        raise ValueError(f"unknown patients {sorted(unknown)}; have {sorted(pats)}")
    is_test = meta["patient"].isin(set(test_patients)).to_numpy()
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def leave_one_patient_out(ds) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """[(held-out patient, train_idx, test_idx), ...] through sklearn's LeaveOneGroupOut,
    patients in sorted order."""
    from sklearn.model_selection import LeaveOneGroupOut

    groups = _meta(ds)["patient"].to_numpy()
    return [(str(groups[te[0]]), tr, te)
            for tr, te in LeaveOneGroupOut().split(np.zeros(len(groups)), groups=groups)]


def split_recordings(meta: pd.DataFrame, *, split: str = "recording",
                     test_patients: Sequence[str] | None = None, test_frac: float = 0.25,
                     val_frac: float = 0.25, seed: int = 0) -> dict[str, list[str]]:
    """Train / validation / test recording names, each recording on one side.

    Seizure-bearing and seizure-free recordings are shuffled (``np.random.default_rng(seed)``)
    and dealt separately, so that each part gets both kinds where there are enough:
    per kind of n recordings, test gets max(1, round(test_frac·n)) (none when n < 2) and
    validation round(val_frac·n), at least one seizure-bearing recording while ≥ 2 remain,
    and never the last seizure-free one. ``split="patient"`` first moves every recording of
    ``test_patients`` (default: the last patient in sorted order) to test, then deals the
    rest to train and validation only.

    Args:
        meta: one row per window, columns ``recording``, ``label`` and (for
            ``split="patient"``) ``patient``; without ``patient`` each recording is its own.
    Returns:
        ``{"train", "val", "test"}`` → sorted recording names.
    """
    if split not in ("recording", "patient"):
        raise ValueError(f"split must be 'recording' or 'patient', got {split!r}")
    rec = meta.groupby("recording").agg(ictal=("label", "max"),
                                        patient=("patient", "first") if "patient" in meta else
                                        ("recording", "first"))
    rng = np.random.default_rng(seed)
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    if split == "patient":
        pats = sorted(rec["patient"].unique())
        held = test_patients or pats[-1:]
        unknown = set(held) - set(pats)
        if unknown or len(held) == len(pats):
            raise ValueError(f"test_patients {held}: need known patients {pats}, not all")
        out["test"] = sorted(rec.index[rec["patient"].isin(held)])
        rec = rec.drop(index=out["test"])
    for ictal in (1, 0):
        names = list(rng.permutation(sorted(rec.index[rec["ictal"] == ictal])))
        n = len(names)
        n_test = 0 if split == "patient" else (max(1, round(test_frac * n)) if n >= 2 else 0)
        n_val = round(val_frac * n)
        n_val = max(1, n_val) if ictal and n - n_test >= 2 else min(n_val, max(0, n - n_test - 1))
        out["test"] += names[:n_test]
        out["val"] += names[n_test:n_test + n_val]
        out["train"] += names[n_test + n_val:]
    return {k: sorted(v) for k, v in out.items()}


def recording_windows(meta: pd.DataFrame, recordings: Iterable[str]) -> np.ndarray:
    """Indices (ascending) of the windows whose ``recording`` is one of ``recordings``."""
    return np.flatnonzero(meta["recording"].isin(list(recordings)).to_numpy())


# --------------------------------------------------------------------------- ECG splits
def time_split(ds, fracs: Sequence[float] = (0.6, 0.2)) -> dict[str, np.ndarray]:
    """``{"train", "val", "test"}`` beat indices: per record, beats in time order, cut at the
    cumulative ``fracs`` (train, val; test the rest). A beat whose window starts before the
    previous part's last window ends is dropped, so no sample is on two sides."""
    parts: dict[str, list] = {"train": [], "val": [], "test": []}
    for r in range(len(ds.records)):
        idx = np.flatnonzero(ds.beat_record == r)
        idx = idx[np.argsort(ds.beat_sample[idx], kind="stable")]
        cuts = np.round(np.cumsum(fracs) * len(idx)).astype(int)
        end = -np.inf
        for name, chunk in zip(parts, np.split(idx, cuts)):
            chunk = chunk[ds.beat_sample[chunk] - ds.pre >= end]
            parts[name].append(chunk)
            if len(chunk):
                end = ds.beat_sample[chunk[-1]] + ds.post
    return {k: np.concatenate(v) for k, v in parts.items()}


def record_split(ds, seed: int = 0) -> dict[str, np.ndarray]:
    """``{"train", "val", "test"}`` beat indices, whole records on one side: records shuffled
    (``np.random.default_rng(seed)``), max(1, round(0.2·R)) each to test and validation.

    Raises:
        DataError: fewer than 3 records.
    """
    recs = list(np.random.default_rng(seed).permutation(ds.records))
    if len(recs) < 3:
        raise DataError(ds.root, f"record_split needs >= 3 records, found {len(recs)}")
    n_test = n_val = max(1, round(0.2 * len(recs)))
    names = {"test": recs[:n_test], "val": recs[n_test:n_test + n_val],
             "train": recs[n_test + n_val:]}
    rec_of = np.asarray(ds.records)[ds.beat_record]
    return {k: np.flatnonzero(np.isin(rec_of, v)) for k, v in names.items()}
