"""bimsnn.data.windows: WindowSet, materialize and the splits equal the copies they replace
(where those copies still exist) and keep their groups apart.

The old definitions are loaded from the recipe / benchmark files themselves
(``importlib.util.spec_from_file_location``), so these tests compare against the code the
recipes ran before the move. Symbols: N windows, T steps, C channels.
"""

from __future__ import annotations

import doctest
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import bimsnn.data.windows as W
from bimsnn.data import DataError
from bimsnn.encoding import adm

REPO = Path(__file__).resolve().parent.parent


def test_doctests():
    assert doctest.testmod(W, extraglobs={"torch": torch}).failed == 0


# --------------------------------------------------------------------------- windows
class _Windows:
    """N random windows (T, C) with int labels and metas."""

    def __init__(self, n: int, T: int = 12, C: int = 3, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, T, C, generator=g).cumsum(1)
        self.y = torch.randint(0, 2, (n,), generator=g).tolist()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i], {"i": i}


def _same_set(a, b):
    assert a.x.dtype == b.x.dtype and torch.equal(a.x, b.x)
    assert a.labels.dtype == b.labels.dtype and torch.equal(a.labels, b.labels)
    assert a.metas == b.metas and len(a) == len(b)
    for i in range(len(a)):
        for u, v in zip(a[i], b[i]):
            assert (torch.equal(u, v) if isinstance(u, torch.Tensor) else u == v)


def test_materialize_mixed_chunks_fall_back_to_float():
    """One non-binary chunk makes the whole set float32, as before."""
    ds = _Windows(6)

    def enc(x):                                   # binary unless the chunk holds window 5
        s = adm(x, 0.5)
        return s * 0.5 if x.shape[1] == 2 else s

    new = W.materialize(ds, range(6), enc, chunk=4)
    assert new.x.dtype == torch.float32
    assert torch.equal(new.x[:4], adm(torch.stack([ds[i][0] for i in range(4)], 1), 0.5)
                       .transpose(0, 1).float())


class _NotebookWindows:
    """Copied verbatim (data source made explicit) from examples/05_seizure_detection.ipynb."""

    def __init__(self, ds, idx):
        items = [ds[int(i)] for i in idx]
        x = torch.stack([it[0] for it in items], dim=1)          # (T, N, C)
        self.x = adm(x, 1.0).transpose(0, 1).to(torch.uint8)    # (N, T, 2C)
        self.y = [it[1] for it in items]
        self.meta = [it[2] for it in items]


def test_windowset_replaces_notebook_05_windows():
    ds = _Windows(9)
    idx = [8, 1, 5, 2]
    new, old = W.materialize(ds, idx, lambda x: adm(x, 1.0)), _NotebookWindows(ds, idx)
    assert new.x.dtype == old.x.dtype and torch.equal(new.x, old.x)
    assert torch.equal(new.labels, torch.tensor(old.y)) and new.metas == old.meta


def test_windowset_checks_lengths():
    with pytest.raises(ValueError):
        W.WindowSet(torch.zeros(3, 2, 1), [0, 1])
    with pytest.raises(ValueError):
        W.WindowSet(torch.zeros(3, 2, 1), [0, 1, 0], [{}])


# --------------------------------------------------------------------------- EEG splits
def _meta(seed: int, patient: bool = True) -> pd.DataFrame:
    """Random per-window meta: 2–4 patients × 1–6 recordings, 1–5 windows each."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(int(rng.integers(2, 5))):
        for r in range(int(rng.integers(1, 7))):
            ictal = rng.random() < 0.4
            for w in range(int(rng.integers(1, 6))):
                rows.append(dict(patient=f"p{p}", recording=f"p{p}/r{r}.edf",
                                 label=int(ictal and w % 2 == 0)))
    meta = pd.DataFrame(rows)
    return meta if patient else meta.drop(columns="patient")


@pytest.mark.parametrize("seed", range(12))
def test_split_recordings_keeps_recordings_whole_and_deals_seizures(seed):
    meta = _meta(seed, patient=seed % 3 != 0)
    fracs = [(0.25, 0.25), (0.3, 0.1), (0.5, 0.0)][seed % 3]
    names = W.split_recordings(meta, seed=seed, test_frac=fracs[0], val_frac=fracs[1])
    parts = {k: set(v) for k, v in names.items()}
    assert not (parts["train"] & parts["val"] or parts["train"] & parts["test"]
                or parts["val"] & parts["test"])
    assert set().union(*parts.values()) == set(meta["recording"])
    ictal = set(meta.loc[meta["label"] == 1, "recording"])
    if len(ictal) >= 3:                       # seizures dealt to every side that can hold one
        assert parts["train"] & ictal and parts["test"] & ictal
        assert fracs[1] == 0 or parts["val"] & ictal
    assert names == W.split_recordings(meta, seed=seed, test_frac=fracs[0], val_frac=fracs[1])
    if "patient" in meta:
        held = sorted(meta["patient"].unique())[:1]
        by_patient = W.split_recordings(meta, split="patient", test_patients=held, seed=seed)
        assert {r.split("/")[0] for r in by_patient["test"]} == set(held)


def test_split_recordings_rejects_bad_patients():
    meta = _meta(0)
    with pytest.raises(ValueError, match="test_patients"):
        W.split_recordings(meta, split="patient", test_patients=sorted(set(meta["patient"])))
    with pytest.raises(ValueError, match="test_patients"):
        W.split_recordings(meta, split="patient", test_patients=["nobody"])


def test_recording_windows():
    meta = _meta(1)
    names = W.split_recordings(meta, seed=1)
    parts = [W.recording_windows(meta, v) for v in names.values()]
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(meta)))
    for v, idx in zip(names.values(), parts):
        assert set(meta["recording"].iloc[idx]) == set(v)


# --------------------------------------------------------------------------- ECG splits
class _Beats:
    """A MITBIH-like beat table: R records, beats at increasing samples."""

    def __init__(self, n_records: int, seed: int):
        rng = np.random.default_rng(seed)
        self.records = [str(100 + r) for r in range(n_records)]
        n = rng.integers(5, 40, n_records)
        self.beat_record = np.concatenate([np.full(k, r) for r, k in enumerate(n)])
        self.beat_sample = np.concatenate([np.cumsum(rng.integers(50, 400, k)) for k in n])
        perm = rng.permutation(len(self.beat_record))   # beats need not be in time order
        self.beat_record, self.beat_sample = self.beat_record[perm], self.beat_sample[perm]
        self.pre, self.post, self.root = 90, 144, Path("fake")


@pytest.mark.parametrize("seed", range(6))
def test_ecg_splits_keep_time_spans_and_records_apart(seed):
    ds = _Beats(3 + seed, seed)
    for fracs in ((0.6, 0.2), (0.5, 0.3)):
        parts = W.time_split(ds, fracs)
        for r in range(len(ds.records)):      # train ends before val starts, val before test
            spans = [ds.beat_sample[v[ds.beat_record[v] == r]] for v in parts.values()]
            for a, b in zip(spans, spans[1:]):
                if len(a) and len(b):
                    assert a.max() + ds.post <= b.min() - ds.pre
    parts = W.record_split(ds, seed)
    recs = {k: set(ds.beat_record[v]) for k, v in parts.items()}
    assert all(recs.values()) and not (recs["train"] & recs["val"] or recs["train"] & recs["test"]
                                       or recs["val"] & recs["test"])
    assert sorted(np.concatenate(list(parts.values()))) == list(range(len(ds.beat_record)))
    with pytest.raises(DataError):
        W.record_split(_Beats(2, seed))
