"""ECG loaders: MIT-BIH beats against the .atr files, PTB-XL labels/folds, the simulated demo set.

Symbols: T time samples, L leads, W beat-window samples, K classes.
"""

from __future__ import annotations

import ast
import os
import warnings
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch

from bimsnn.data import DataError, DataWarning
from bimsnn.data._demo_ptbxl import ptbxl as write_demo
from bimsnn.data.ecg import (
    AAMI_MAP,
    MITBIH,
    PTBXL,
    aggregate_labels,
    read_ptbxl_database,
    read_wfdb,
)
from bimsnn.encoding import ADMEncoder

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import wfdb

# Counts stated in shared/data/README.md (the F beat of 800 is in the .atr but not the README).
README_COUNTS = {"100": {"N": 2239, "A": 33, "V": 1}, "208": {"N": 974, "V": 715, "F": 289},
                 "800": {"N": 1846, "S": 30, "V": 6}}


def _rdann(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return wfdb.rdann(str(path), "atr")


@pytest.mark.parametrize("record", ["100", "208", "800"])
def test_mitbih_beat_counts_equal_atr(shared_data, record):
    ecg = shared_data / "ecg"
    atr = Counter(_rdann(ecg / record).symbol)
    beats = Counter({s: n for s, n in atr.items() if s in AAMI_MAP})
    for sym, n in README_COUNTS[record].items():
        assert atr[sym] == n
    padded = MITBIH(ecg, records=[record], edge="pad")
    assert padded.beat_counts("symbol") == beats
    expected_cls = Counter()
    for s, n in beats.items():
        expected_cls[AAMI_MAP[s]] += n
    assert padded.beat_counts("class") == expected_cls
    assert padded.dropped_symbols == Counter({s: n for s, n in atr.items() if s not in AAMI_MAP})
    dropped = MITBIH(ecg, records=[record], edge="drop")
    assert dropped.beat_counts("symbol") + dropped.edge_dropped == beats
    assert sum(dropped.edge_dropped.values()) <= 3  # only beats within a window of an edge


def test_mitbih_windows_are_raw_slices_and_rates_are_pooled(shared_data):
    ecg = shared_data / "ecg"
    ds = MITBIH(ecg, records=["100"], lead="MLII")
    assert ds.fs == 360 and (ds.pre, ds.post) == (90, 162)
    sig, _ = read_wfdb(ecg / "100", ["MLII"])  # (T, 1)
    for i in np.random.default_rng(0).integers(0, len(ds), 5):
        x, label, meta = ds[int(i)]
        s = meta["sample"]
        assert x.shape == (252, 1) and x.dtype == torch.float32
        assert torch.equal(x, torch.from_numpy(sig[s - 90:s + 162]))
        assert ds.classes[label] == AAMI_MAP[meta["symbol"]]
    with pytest.raises(DataError, match="fs="):  # 360 Hz and 128 Hz need a common rate
        MITBIH(ecg, records=["100", "800"])
    pooled = MITBIH(ecg, records=["100", "800"], fs=360, encoder=ADMEncoder(0.05))
    spikes, _, meta = pooled[len(pooled) - 1]
    assert meta["record"] == "800" and spikes.shape == (252, 2)  # ADM: ON and OFF channels
    assert set(spikes.unique().tolist()) == {0.0, 1.0}


def test_mitbih_high_pass_is_a_causal_butterworth_of_the_whole_record(shared_data):
    from scipy.signal import butter, resample_poly, sosfilt

    ecg = shared_data / "ecg"
    raw = MITBIH(ecg, records=["208"], lead=[0, 1])                     # 360 Hz
    hp = MITBIH(ecg, records=["208"], lead=[0, 1], l_freq=0.5)
    sos = butter(2, 0.5, "highpass", fs=360, output="sos")     # designed here by scipy
    want = sosfilt(sos, raw.signals[0].astype(np.float64), axis=0)
    np.testing.assert_allclose(hp.signals[0], want, rtol=0, atol=1e-5)
    assert len(hp) == len(raw)
    x, _, meta = hp[100]
    s = meta["sample"]
    assert torch.equal(x, torch.from_numpy(hp.signals[0][s - hp.pre:s + hp.post]))
    # causal: the first 10 s of the output do not depend on what comes after them
    head = sosfilt(sos, raw.signals[0][:3600].astype(np.float64), axis=0)
    np.testing.assert_allclose(hp.signals[0][:3600], head, rtol=0, atol=1e-5)
    # the wander (< 0.2 Hz) is gone: a 10 s moving mean of the output stays near 0
    k = np.ones(3600) / 3600
    slow_raw = np.convolve(raw.signals[0][:, 0], k, "valid").std()
    slow_hp = np.convolve(hp.signals[0][:, 0], k, "valid").std()
    assert slow_hp < 0.1 * slow_raw, (slow_raw, slow_hp)
    # filtered at the record's own rate, then resampled
    hp90 = MITBIH(ecg, records=["208"], lead=[0, 1], fs=90, l_freq=0.5)
    np.testing.assert_allclose(hp90.signals[0], resample_poly(hp.signals[0], 1, 4, axis=0),
                               rtol=0, atol=1e-5)
    with pytest.raises(DataError, match="208.*not below half the sampling rate"):
        MITBIH(ecg, records=["208"], fs=90, l_freq=200.0)
    with pytest.raises(ValueError, match="l_freq"):
        MITBIH(ecg, records=["208"], l_freq=-1.0)


def test_mitbih_splits_are_disjoint(shared_data):
    with pytest.warns(DataWarning, match="s0010_re: no .atr"):
        ds = MITBIH(shared_data / "ecg", fs=360)  # 100, 208, 800; the PTB record has no beats
    assert ds.skipped == [(shared_data / "ecg" / "s0010_re", "no .atr annotation file")]
    tr, te = ds.split_by_record(test_records=["208"])
    assert set(tr).isdisjoint(te) and len(tr) + len(te) == len(ds)
    assert {ds.records[r] for r in ds.beat_record[te]} == {"208"}
    tr, te = ds.split_by_record(test_size=1 / 3, seed=1)
    assert set(ds.beat_record[tr]).isdisjoint(ds.beat_record[te]) and len(tr) and len(te)
    tr, te = ds.split_by_time(0.7)
    assert set(tr).isdisjoint(te)
    for r in range(3):
        a, b = tr[ds.beat_record[tr] == r], te[ds.beat_record[te] == r]
        # every test window starts after every training window ends: no shared sample
        assert ds.beat_sample[a].max() + ds.post <= ds.beat_sample[b].min() - ds.pre


def test_unknown_record_and_nan_samples_raise(tmp_path):
    with pytest.raises(DataError, match="not found") as err:
        read_wfdb(tmp_path / "nope")
    assert err.value.path == tmp_path / "nope"
    x = np.random.default_rng(0).normal(0, 0.3, (3600, 2))
    x[1000, 0] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wfdb.wrsamp("bad", fs=360, units=["mV", "mV"], sig_name=["MLII", "V1"], p_signal=x,
                    fmt=["16", "16"], adc_gain=[200.0, 200.0], baseline=[0, 0],
                    write_dir=str(tmp_path))
        wfdb.wrann("bad", "atr", sample=np.array([500, 1500, 2500]), symbol=["N", "V", "N"],
                   write_dir=str(tmp_path))
    with pytest.raises(DataError, match="NaN") as err:
        MITBIH(tmp_path, records=["bad"])
    assert err.value.path == tmp_path / "bad"
    assert len(MITBIH(tmp_path, records=["bad"], lead="V1")) == 3  # clean lead still loads
    with pytest.raises(DataError, match="no .atr"):
        MITBIH(tmp_path / "empty")


# A small scp_statements.csv with the documented columns (real PTB-XL flags and classes).
_STATEMENTS = {  # code: (diagnostic, form, rhythm, class, subclass)
    "NORM": (1, None, None, "NORM", "NORM"), "IMI": (1, None, None, "MI", "IMI"),
    "ASMI": (1, None, None, "MI", "AMI"), "ILMI": (1, None, None, "MI", "IMI"),
    "LVH": (1, None, None, "HYP", "LVH"), "LAFB": (1, None, None, "CD", "LAFB/LPFB"),
    "IRBBB": (1, None, None, "CD", "IRBBB"), "CLBBB": (1, None, None, "CD", "CLBBB"),
    "CRBBB": (1, None, None, "CD", "CRBBB"), "ISC_": (1, None, None, "STTC", "ISC_"),
    "NDT": (1, 1, None, "STTC", "STTC"), "ABQRS": (None, 1, None, None, None),
    "PVC": (None, 1, None, None, None), "SR": (None, None, 1, None, None),
    "AFIB": (None, None, 1, None, None), "AFLT": (None, None, 1, None, None),
}


def _write_statements(folder):
    df = pd.DataFrame.from_dict(_STATEMENTS, orient="index", columns=[
        "diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass"])
    df.insert(0, "description", df.index)
    df.to_csv(folder / "scp_statements.csv")


def test_ptbxl_real_metadata_labels_and_folds(shared_data, tmp_path):
    real = shared_data / "ptbxl_meta" / "ptbxl_database.csv"
    db = read_ptbxl_database(real)
    assert len(db) == 3028 and all(isinstance(d, dict) for d in db["scp_codes"])
    os.symlink(real, tmp_path / "ptbxl_database.csv")  # read in place, never copied
    _write_statements(tmp_path)
    everything = PTBXL(tmp_path, task="superdiagnostic", folds=range(1, 11))
    assert everything.classes == ["CD", "HYP", "MI", "NORM", "STTC"]
    for ecg_id, codes in db["scp_codes"].items():  # independent re-derivation
        want = {_STATEMENTS[c][3] for c in codes if c in _STATEMENTS and _STATEMENTS[c][0]}
        if want:
            row = everything.metadata.index.get_loc(ecg_id)
            got = {everything.classes[k] for k in np.flatnonzero(everything.targets[row])}
            assert got == want
        else:
            assert ecg_id not in everything.metadata.index
    assert len(everything) + everything.n_unlabelled == 3028
    assert everything.metadata.loc[11128, "labels"] == ["NORM"]  # {'NORM': 100, 'SR': 0}
    parts = [PTBXL(tmp_path, folds=s).metadata.index for s in ("train", "val", "test")]
    assert sum(map(len, parts)) == len(everything)
    assert all(set(a).isdisjoint(b) for a, b in [(parts[0], parts[1]), (parts[0], parts[2]),
                                                 (parts[1], parts[2])])
    assert set(PTBXL(tmp_path, folds="test").metadata["strat_fold"]) == {10}
    # no likelihood threshold: {'AFLT': 100.0, 'AFIB': 0.0} keeps AFIB for the rhythm task
    rhythm = PTBXL(tmp_path, task="rhythm", folds=range(1, 11))
    assert rhythm.metadata.loc[15513, "labels"] == ["AFIB", "AFLT"]


def test_ptbxl_rejects_bad_scp_codes(tmp_path):
    pd.DataFrame({"ecg_id": [1], "patient_id": [1.0], "scp_codes": ["__import__('os').getcwd()"],
                  "strat_fold": [1], "filename_lr": ["a"], "filename_hr": ["b"]}).to_csv(
        tmp_path / "ptbxl_database.csv", index=False)
    with pytest.raises(DataError, match="ecg_id 1: unparsable scp_codes"):
        read_ptbxl_database(tmp_path / "ptbxl_database.csv")
    statements = pd.DataFrame({"diagnostic": [1.0, np.nan], "diagnostic_class": ["NORM", None]},
                              index=["NORM", "SR"])
    labels = aggregate_labels(pd.Series([{"SR": 0.0}, {"NORM": 80.0, "SR": 0.0}]), statements,
                              "superdiagnostic")
    assert labels.tolist() == [[], ["NORM"]]


@pytest.mark.slow
def test_demo_ptbxl_loads_and_is_learnable(tmp_path):
    root = write_demo(tmp_path / "ptbxl", n_records=60, seed=0)
    marker = root / ".bimsnn_demo.json"
    stamp = marker.stat().st_mtime_ns
    assert write_demo(root, n_records=60, seed=0) == root and marker.stat().st_mtime_ns == stamp
    assert not list(root.glob(".tmp-demo-*"))  # temporary folder cleaned up
    db = pd.read_csv(root / "ptbxl_database.csv")
    real_cols = ["ecg_id", "patient_id", "scp_codes", "strat_fold", "filename_lr", "filename_hr"]
    assert len(db.columns) == 28 and set(real_cols) <= set(db.columns)
    ds = PTBXL(root, task="superdiagnostic", folds=range(1, 11))
    assert len(ds) == 60 and ds.classes == ["CD", "HYP", "MI", "NORM", "STTC"]
    feats, primary = [], []
    for i in range(len(ds)):
        x, y, meta = ds[i]
        assert x.shape == (1000, 12) and x.dtype == torch.float32 and y.sum() >= 1
        codes = ast.literal_eval(db.set_index("ecg_id").loc[meta["ecg_id"], "scp_codes"])
        primary.append(ds.classes.index(_demo_superclass(next(iter(codes)))))
        d = np.abs(np.diff(x.numpy(), axis=0))
        feats.append(np.concatenate([x.numpy().std(0), np.percentile(x.numpy(), [1, 99], 0).ravel(),
                                     d.mean(0)]))
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    acc = cross_val_score(LogisticRegression(max_iter=3000), np.array(feats), primary, cv=4)
    assert acc.mean() > 0.4, acc  # chance is 0.2: class morphology is visible in the signal
    with pytest.raises(DataError, match="not found") as err:  # only records100/ was written
        PTBXL(root, sampling_rate=500, folds="train")[0]
    assert "records500" in str(err.value.path)
    spikes = PTBXL(root, folds="val", encoder=lambda x: (x.diff(dim=0) > 0.05).float())[0][0]
    assert spikes.shape == (999, 12)


def _demo_superclass(code):
    from bimsnn.data._demo_ptbxl import scp_statements

    return scp_statements().loc[code, "diagnostic_class"]
