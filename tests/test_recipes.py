"""Recipes end to end at tiny sizes: outputs, held-out splits, resume, bad input, --eval-only.

The recipes are imported and driven through ``main(argv)`` (no subprocess start-up). The
demo data sets are written once per module into a temporary folder and only read; tests
that damage data copy it first.
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bimsnn.data import DataError, demo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "recipes"))
import ecg_classification as ecg  # noqa: E402
import seizure_detection as sz  # noqa: E402
from _common import load_model  # noqa: E402

# 2 patients × 3 files × 2 min: ~180 windows of 4 s every 2 s, a few seconds per epoch.
TINY_SZ = ["--epochs", "1", "--compare", "none", "--batch-size", "32", "--no-progress"]
TINY_ECG = ["--epochs", "1", "--compare", "none", "--no-progress"]


@pytest.fixture(autouse=True)
def _keep_threads():
    """main() sets torch's thread count for its process; give the test process its own back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def eeg_dir(tmp_path_factory):
    """Read-only demo CHB-MIT set (tests that modify data copy it)."""
    return demo.chbmit(tmp_path_factory.mktemp("eeg") / "demo", n_patients=2, seed=0,
                       files_per_patient=3, minutes_per_file=2.0)


@pytest.fixture(scope="module")
def ptbxl_dir(tmp_path_factory):
    return demo.ptbxl(tmp_path_factory.mktemp("ecg") / "demo", n_records=60, seed=0)


def run_sz(eeg_dir, out, *extra):
    return sz.main(["--data-dir", str(eeg_dir), "--out", str(out), *TINY_SZ, *extra])


# ---------------------------------------------------------------- seizure detection
def test_seizure_smoke_writes_every_output(eeg_dir, tmp_path):
    res = run_sz(eeg_dir, tmp_path / "run", "--compare", "cnn")
    out = tmp_path / "run"
    for name in ("metrics.json", "report.md", "roc.png", "pr.png", "raster.png", "model.pt",
                 "ckpt.pt", "best.pt", "compare/cnn/best.pt"):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    for key in ("auc_roc", "auc_pr", "sensitivity", "false_alarms_per_hour",
                "detection_latency_s", "model", "rule", "timings"):
        assert key in m, key
    assert m["rule"] == "hybrid" and m["model"]["name"] == "spiking_mamba"
    assert 0 <= m["auc_roc"] <= 1 and 0 <= m["auc_pr"] <= 1
    assert set(m["comparison"]) == {"spiking_mamba", "cnn"}
    assert m["clinical"]["n_seizures"] >= 1  # the test split holds a seizure
    report = (out / "report.md").read_text()
    assert "| spiking_mamba | hybrid |" in report and "| cnn | bptt |" in report
    assert res["auc_roc"] == m["auc_roc"]


def test_no_recording_on_two_sides(eeg_dir, tmp_path):
    res = run_sz(eeg_dir, tmp_path / "run", "--model", "snn", "--rule", "rtrl")
    parts = {k: set(v) for k, v in res["split"].items()}
    assert not (parts["train"] & parts["test"] or parts["train"] & parts["val"]
                or parts["val"] & parts["test"])
    assert len(set().union(*parts.values())) == 6 and all(parts.values())

    ds = sz.open_dataset(dict(kind="chbmit", window_s=4.0, stride_s=2.0, l_freq=None,
                              h_freq=None, sfreq=32.0), eeg_dir)
    cfg = sz.SeizureConfig(split="patient", test_patients=["chb02"])
    names = sz.split_recordings(ds.meta, cfg, seed=0)
    assert all(r.startswith("chb02/") for r in names["test"])
    assert not any(r.startswith("chb02/") for r in names["train"] + names["val"])
    with pytest.raises(ValueError, match="test-patients"):
        sz.split_recordings(ds.meta, sz.SeizureConfig(split="patient",
                                                      test_patients=["chb01", "chb02"]), 0)


def test_clinical_metrics_on_a_hand_made_timeline():
    metas = [{"patient": "p", "file": "f.edf", "start_s": float(t)} for t in range(0, 100, 2)]
    scores = np.zeros(50)
    scores[[21, 22, 23]] = 1.0  # windows starting 42, 44, 46 s: ends 46, 48, 50 s
    scores[[5, 6]] = 1.0        # a false alarm run (windows 10–16 s)
    scores[30] = 1.0            # a lone positive: below k = 2, no alarm
    m = sz.clinical_metrics(scores, metas, 0.5, {"p/f.edf": [(45.0, 60.0)]}, 4.0, 2)
    assert m["n_seizures"] == 1 and m["sensitivity"] == 1.0
    assert m["detection_latency_s"] == pytest.approx(48.0 - 45.0)  # second window in a row
    assert m["n_false_alarms"] == 1
    assert m["interictal_hours"] == pytest.approx((102.0 - 15.0) / 3600)


def test_resume_equals_uninterrupted(eeg_dir, tmp_path):
    args = ["--epochs", "2", "--seed", "3"]
    full = run_sz(eeg_dir, tmp_path / "full", *args)
    part = run_sz(eeg_dir, tmp_path / "part", *args, "--max-steps", "4")  # mid epoch 1
    assert part["interrupted"] and not (tmp_path / "part" / "model.pt").exists()
    resumed = run_sz(eeg_dir, tmp_path / "part", *args, "--resume")
    assert resumed["auc_roc"] == full["auc_roc"] and resumed["threshold"] == full["threshold"]
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in full["history"]]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in resumed["history"]] == strip
    a, _ = load_model(tmp_path / "full" / "model.pt")
    b, _ = load_model(tmp_path / "part" / "model.pt")
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_corrupt_edf_is_a_data_error_and_keeps_the_checkpoint(eeg_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(eeg_dir, data)
    out = tmp_path / "run"
    run_sz(data, out)
    before = {n: (out / n).read_bytes() for n in ("ckpt.pt", "best.pt", "model.pt")}
    edf = data / "chb02" / "chb02_02.edf"
    edf.write_bytes(edf.read_bytes()[:20000])  # header intact, records cut
    with pytest.raises(DataError, match="chb02_02.edf"):
        run_sz(data, out)
    for name, blob in before.items():
        assert (out / name).read_bytes() == blob, name
    assert torch.load(out / "ckpt.pt", weights_only=True)["progress"]["epoch"] == 1
    model, ck = load_model(out / "model.pt")
    assert ck["spec"]["name"] == "spiking_mamba" and not model.training


def test_eval_only_on_new_recordings(eeg_dir, tmp_path):
    trained = run_sz(eeg_dir, tmp_path / "run")
    new = demo.chbmit(tmp_path / "new", n_patients=1, seed=7, files_per_patient=2,
                      minutes_per_file=2.0)
    argv = ["--eval-only", "--checkpoint", str(tmp_path / "run" / "model.pt"),
            "--data-dir", str(new), "--no-progress"]
    ev = sz.main([*argv, "--out", str(tmp_path / "ev")])
    for name in ("metrics.json", "report.md", "roc.png", "pr.png", "raster.png"):
        assert (tmp_path / "ev" / name).is_file(), name
    assert ev["threshold"] == trained["threshold"]  # from the checkpoint, not re-tuned
    assert ev["n_windows"]["test"] == 2 * 59     # every 4 s window every 2 s of 2 × 120 s
    assert ev["split"]["test"] == ["chb01/chb01_01.edf", "chb01/chb01_02.edf"]
    again = sz.main([*argv, "--out", str(tmp_path / "ev2")])
    assert again["auc_roc"] == ev["auc_roc"] and again["window"] == ev["window"]


def test_missing_data_dir_for_real_datasets_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="--data-dir"):
        sz.main(["--dataset", "chbmit", "--out", str(tmp_path)])


@pytest.mark.slow
def test_torchrun_two_processes(eeg_dir, tmp_path):
    import subprocess

    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed next to this Python")
    script = Path(sz.__file__)
    proc = subprocess.run([str(torchrun), "--nproc_per_node=2", str(script), "--data-dir",
                           str(eeg_dir), "--out", str(tmp_path), *TINY_SZ],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["world_size"] == 2 and 0 <= m["auc_roc"] <= 1
    assert proc.stdout.count("wrote ") == 1  # rank 0 alone reports and writes


@pytest.mark.slow
def test_seizure_bonn_smoke(shared_data, tmp_path):
    res = sz.main(["--dataset", "bonn", "--data-dir", str(shared_data / "bonn"),
                   "--out", str(tmp_path), "--window-s", "4", "--stride-s", "20",
                   "--sfreq", "16", "--h-freq", "7", *TINY_SZ])
    assert 0 <= res["auc_roc"] <= 1 and res["clinical"] == {}  # no timeline for segments
    assert (tmp_path / "raster.png").is_file()


# ---------------------------------------------------------------- ECG
def test_ecg_ptbxl_demo_smoke_and_eval_only(ptbxl_dir, tmp_path):
    res = ecg.main(["--data-dir", str(ptbxl_dir), "--out", str(tmp_path / "run"), *TINY_ECG,
                    "--compare", "cnn"])
    out = tmp_path / "run"
    for name in ("metrics.json", "report.md", "roc.png", "pr.png", "raster.png", "model.pt"):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert m["classes"] == ["CD", "HYP", "MI", "NORM", "STTC"]
    assert 0 <= m["macro_auc"] <= 1 and set(m["comparison"]) == {"spiking_mamba", "cnn"}
    assert res["split"] == "strat_fold 1-8 / 9 / 10"
    ev = ecg.main(["--eval-only", "--checkpoint", str(out / "model.pt"), "--data-dir",
                   str(ptbxl_dir), "--out", str(tmp_path / "ev"), "--no-progress"])
    assert ev["n_items"]["test"] == sum(res["n_items"].values())  # every fold
    assert (tmp_path / "ev" / "report.md").is_file()


@pytest.mark.slow
def test_ecg_mitbih_smoke(shared_data, tmp_path):
    res = ecg.main(["--dataset", "mitbih", "--data-dir", str(shared_data / "ecg"),
                    "--out", str(tmp_path), "--limit", "256", *TINY_ECG])
    assert res["classes"] == ["N", "S", "V", "F", "Q"]
    assert 0 <= res["macro_f1"] <= 1 and len(res["confusion"]) == 5
    assert (tmp_path / "confusion.png").is_file()


def test_ecg_time_split_keeps_order_and_no_overlap(shared_data):
    from bimsnn.data.ecg import MITBIH

    ds = MITBIH(shared_data / "ecg", fs=90)
    parts = ecg.time_split(ds)
    for r in range(len(ds.records)):
        spans = [ds.beat_sample[v[ds.beat_record[v] == r]] for v in parts.values()]
        for a, b in zip(spans, spans[1:]):  # train ends before val starts, val before test
            assert a.max() + ds.post <= b.min() - ds.pre


def test_ecg_multi_adm_encoder_stacks_three_thresholds():
    """--encoder multi_adm: ADM at θ, 3θ, 10θ side by side, (T, L) → (T, 3·2L)."""
    from bimsnn.encoding import adm

    t = torch.linspace(0, 1, 90)
    x = torch.stack([torch.sin(2 * torch.pi * 3 * t), 0.2 * torch.cos(2 * torch.pi * t)], -1)
    enc = ecg.encoder_fn({"encoder": "multi_adm", "spike_threshold": 0.03})
    s = enc(x)
    assert s.shape == (90, 12)
    for k, th in enumerate((0.03, 0.09, 0.3)):
        assert torch.equal(s[:, 4 * k: 4 * k + 4], adm(x, th))
    counts = [int(s[:, 4 * k: 4 * k + 4].sum()) for k in range(3)]
    assert counts[0] > counts[1] > counts[2] > 0          # coarser θ, fewer spikes
