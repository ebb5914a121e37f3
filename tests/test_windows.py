"""bimsnn.data.windows: WindowSet, materialize and the splits equal the copies they replace
(where those copies still exist) and keep their groups apart.

The old definitions are loaded from the recipe / benchmark files themselves
(``importlib.util.spec_from_file_location``), so these tests compare against the code the
recipes ran before the move. Symbols: N windows, T steps, C channels.
"""

from __future__ import annotations

import doctest
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, Subset

import bimsnn.data.eeg as eeg
import bimsnn.data.windows as W
from bimsnn.data import DataError
from bimsnn.encoding import adm
from bimsnn.train import collate

REPO = Path(__file__).resolve().parent.parent


def _load(relpath: str):
    """Import a repository file as a module under a private name (old definitions)."""
    name = "_old_" + relpath.replace("/", "_").removesuffix(".py")
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / relpath)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod  # dataclasses look their module up here
        spec.loader.exec_module(mod)
    return sys.modules[name]


def _old(relpath: str, attr: str):
    """The file's own definition; skipped once the file just re-uses the library's."""
    fn = getattr(_load(relpath), attr)
    if getattr(fn, "__module__", "") == W.__name__:
        pytest.skip(f"{relpath} now uses bimsnn.data.windows.{attr}: nothing left to compare")
    return fn


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


@pytest.mark.parametrize("encode", [None, lambda x: adm(x, 0.5), lambda x: adm(x, 0.5) * 0.5])
@pytest.mark.parametrize("chunk", [3, 2048])
def test_materialize_equals_recipe_copy(encode, chunk):
    old = _old("recipes/_common.py", "materialize")
    ds = _Windows(10)
    idx = [7, 0, 3, 3, 9, 1, 4]
    _same_set(W.materialize(ds, idx, encode, chunk), old(ds, idx, encode, chunk))
    _same_set(W.materialize(ds, [], encode), old(ds, [], encode))


def test_materialize_mixed_chunks_fall_back_to_float():
    """One non-binary chunk makes the whole set float32, as before."""
    old = _old("recipes/_common.py", "materialize")
    ds = _Windows(6)

    def enc(x):                                   # binary unless the chunk holds window 5
        s = adm(x, 0.5)
        return s * 0.5 if x.shape[1] == 2 else s

    new = W.materialize(ds, range(6), enc, chunk=4)
    assert new.x.dtype == torch.float32
    _same_set(new, old(ds, range(6), enc, chunk=4))


def test_windowset_replaces_benchmark_spikewindows():
    """Subset(WindowSet(x, y), idx) gives the batches SpikeWindows(x, y, idx) gave."""
    SpikeWindows = _load("benchmarks/_biomed_models.py").SpikeWindows
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 2, (20, 8, 4), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 3, (20,), generator=g)
    idx = np.array([4, 2, 19, 0, 7])
    new = Subset(W.WindowSet(x, y), idx)
    old = SpikeWindows(x, y, idx)
    for a, b in zip(DataLoader(new, batch_size=2, collate_fn=collate),
                    DataLoader(old, batch_size=2, collate_fn=collate)):
        assert a[0].dtype == b[0].dtype and torch.equal(a[0], b[0])
        assert a[1].dtype == b[1].dtype and torch.equal(a[1], b[1])
        assert a[2] == b[2] == [None] * len(a[2])


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


def test_recording_split_of_a_meta_frame_equals_benchmark_sub_view(shared_data):
    """benchmarks/biomed's nested split (a ``_Sub`` meta view) = passing the DataFrame."""
    from bimsnn.data import Bonn

    bench = _load("benchmarks/_biomed_models.py")
    ds = Bonn(shared_data / "bonn", sets=("Z", "S"), window_s=4.0, stride_s=2.0)
    for seed in (0, 1):
        tr, te = W.recording_split(ds, 0.2, seed)
        o_tr, o_te = eeg.recording_split(ds, 0.2, seed)
        assert np.array_equal(tr, o_tr) and np.array_equal(te, o_te)
        sub = ds.meta.iloc[tr].reset_index(drop=True)
        for a, b in zip(W.recording_split(sub, 0.2, seed),
                        eeg.recording_split(bench._Sub(sub), 0.2, seed)):
            assert np.array_equal(a, b)


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
