"""Demo CHB-MIT writer: real format, round trip through the CHBMIT loader, idempotence."""

import hashlib
import json
import time

import numpy as np
import pytest
from scipy.signal import welch
from sklearn.metrics import roc_auc_score

from bimsnn.data import DataError, demo
from bimsnn.data.eeg import CHBMIT, leave_one_patient_out, parse_chbmit_summary, read_edf_header

SMALL = dict(n_patients=2, files_per_patient=2, minutes_per_file=2.0)


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_round_trip_labels_and_seizure_times(tmp_path):
    root = demo.chbmit(tmp_path / "d", seed=3, **SMALL)
    truth = json.loads((root / "DEMO_INFO.json").read_text())["seizures"]
    assert len(truth) == 4 and any(truth.values()) and not all(truth.values())
    for pid in ("chb01", "chb02"):                       # summaries say what was simulated
        for name, sz in parse_chbmit_summary(root / pid / f"{pid}-summary.txt").items():
            assert [list(s) for s in sz] == truth[f"{pid}/{name}"]
    assert "Seizure Start Time:" in (root / "chb01/chb01-summary.txt").read_text()
    assert "Seizure 1 Start Time:" in (root / "chb02/chb02-summary.txt").read_text()
    h = read_edf_header(root / "chb01/chb01_01.edf")
    assert h["labels"] == list(demo.DEMO_CHANNELS) and h["labels"].count("T8-P8") == 2
    assert h["sfreq"] == [256.0] * 19 and h["n_times"][0] == 120 * 256

    ds = CHBMIT(root, window_s=2.0, stride_s=1.0, ictal_overlap=0.5)
    assert ds.channels == list(demo.DEMO_CHANNELS[:18])
    for rec, group in ds.meta.groupby("recording"):
        t0 = group["start_s"].to_numpy()
        ov = sum(np.clip(np.minimum(t0 + 2, b) - np.maximum(t0, a), 0, None) for a, b in truth[rec])
        assert (group["label"].to_numpy() == (np.asarray(ov) >= 1.0)).all(), rec
    assert ds.labels.sum() > 0
    x, y, meta = ds[int(np.argmax(ds.labels))]
    assert x.shape == (512, 18) and y == 1 and np.isfinite(x.numpy()).all()
    for _, tr, te in leave_one_patient_out(ds):
        rec = ds.meta["recording"].to_numpy()
        assert not set(rec[tr]) & set(rec[te])


def test_idempotent_seeded_and_atomic(tmp_path):
    a = demo.chbmit(tmp_path / "a", seed=1, **SMALL)
    files = sorted(a.rglob("*.edf"))
    stamps = [f.stat().st_mtime_ns for f in files]
    t = time.perf_counter()
    assert demo.chbmit(tmp_path / "a", seed=1, **SMALL) == a
    assert time.perf_counter() - t < 0.5
    assert [f.stat().st_mtime_ns for f in files] == stamps        # nothing rewritten
    assert not list(a.rglob("*.tmp"))
    total = sum(f.stat().st_size for f in a.rglob("*"))
    assert total < 20e6 * (2 * 2 * 2) / (2 * 3 * 5)                # ∝ the 18 MB default
    with pytest.raises(DataError, match="overwrite"):
        demo.chbmit(tmp_path / "a", seed=2, **SMALL)
    b = demo.chbmit(tmp_path / "b", n_patients=1, files_per_patient=2, minutes_per_file=2.0, seed=1)
    assert _md5(b / "chb01/chb01_01.edf") == _md5(a / "chb01/chb01_01.edf")  # seeded
    (b / "chb01/chb01_02.edf").unlink()                          # an incomplete dataset is rebuilt
    demo.chbmit(b, n_patients=1, files_per_patient=2, minutes_per_file=2.0, seed=1)
    assert _md5(b / "chb01/chb01_02.edf") == _md5(a / "chb01/chb01_02.edf")
    demo.chbmit(b, n_patients=1, files_per_patient=2, minutes_per_file=2.0, seed=2, overwrite=True)
    assert _md5(b / "chb01/chb01_01.edf") != _md5(a / "chb01/chb01_01.edf")


def test_seizures_detectable_but_not_trivially(tmp_path):
    """Best single-channel 3-8 Hz band power separates the classes, but not perfectly."""
    root = demo.chbmit(tmp_path, n_patients=2, files_per_patient=3, minutes_per_file=3.0, seed=0)
    ds = CHBMIT(root, window_s=4.0, normalize=None, max_cached_files=6)
    x = np.stack([ds[i][0].numpy() for i in range(len(ds))])       # (W, T, C)
    f, p = welch(x, fs=256, axis=1, nperseg=256)
    power = np.log(p[:, (f >= 3) & (f < 8)].sum(1))                 # (W, C)
    auc = max(roc_auc_score(ds.labels, power[:, c]) for c in range(power.shape[1]))
    assert 0.7 < auc < 0.99, auc


def test_cli_and_lazy_ptbxl(tmp_path, capsys):
    demo.main(["chbmit", str(tmp_path), "--patients", "1", "--files", "1", "--minutes", "2"])
    assert capsys.readouterr().out.strip() == str(tmp_path)
    assert parse_chbmit_summary(tmp_path / "chb01/chb01-summary.txt")["chb01_01.edf"]
    assert callable(demo.ptbxl)      # importable even before bimsnn.data._demo_ptbxl exists
    with pytest.raises(DataError):
        demo.chbmit(tmp_path / "x", n_patients=0)
