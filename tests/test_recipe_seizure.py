"""recipes/seizure_detection.py end to end at tiny sizes: outputs, splits, resume (also
after a Ctrl-C mid-epoch), bad input as one line, --eval-only, torchrun.

The recipe is loaded by path (the ``recipe`` fixture) and driven through ``main(argv)``;
the SIGINT test runs it as a real process. The demo data set is written once per module
and only read; tests that damage data copy it first.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bimsnn import models
from bimsnn.data import DataError, demo
from bimsnn.paths import repo_root
from bimsnn.tasks import seizure as task
from bimsnn.training import RunError

# 2 patients × 3 files × 2 min: ~180 windows of 4 s every 2 s, a few seconds per epoch.
TINY = ["--epochs", "1", "--compare", "none", "--batch-size", "32", "--no-progress"]
SCRIPT = repo_root() / "recipes" / "seizure_detection.py"


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


@pytest.fixture
def sz(recipe):
    return recipe("seizure_detection")


def run_sz(sz, eeg_dir, out, *extra):
    return sz.main(["--data-dir", str(eeg_dir), "--out", str(out), *TINY, *extra])


def test_smoke_writes_every_output(sz, eeg_dir, tmp_path):
    res = run_sz(sz, eeg_dir, tmp_path / "run", "--compare", "cnn")
    out = tmp_path / "run"
    for name in ("metrics.json", "report.md", "roc.png", "pr.png", "raster.png", "model.pt",
                 "ckpt.pt", "best.pt", "compare/cnn/best.pt"):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    for key in ("auc_roc", "auc_pr", "sensitivity", "false_alarms_per_hour",
                "detection_latency_s", "model", "rule", "timings", "train_seconds",
                "peak_rss_mb"):
        assert key in m, key
    assert m["rule"] == "hybrid" and m["model"]["name"] == "spiking_mamba"
    assert 0 <= m["auc_roc"] <= 1 and 0 <= m["auc_pr"] <= 1 and m["peak_rss_mb"] > 0
    assert set(m["comparison"]) == {"spiking_mamba", "cnn"}
    assert m["clinical"]["n_seizures"] >= 1  # the test split holds a seizure
    report = (out / "report.md").read_text()
    assert "| spiking_mamba | hybrid |" in report and "| cnn | bptt |" in report
    assert "simulated" in report
    assert res["auc_roc"] == m["auc_roc"]
    model, ck = models.load(out / "model.pt")
    assert ck["recipe"] == "seizure_detection" and task.pre_from_checkpoint(ck, "m").sfreq == 32


@pytest.mark.slow
def test_no_recording_on_two_sides(sz, eeg_dir, tmp_path):
    res = run_sz(sz, eeg_dir, tmp_path / "run", "--model", "snn", "--rule", "rtrl")
    parts = {k: set(v) for k, v in res["split"].items()}
    assert not (parts["train"] & parts["test"] or parts["train"] & parts["val"]
                or parts["val"] & parts["test"])
    assert len(set().union(*parts.values())) == 6 and all(parts.values())
    _, names, _, _ = task.load_split(task.SeizurePre(l_freq=None, h_freq=None), eeg_dir,
                                  split="patient", test_patients=["chb02"])
    assert all(r.startswith("chb02/") for r in names["test"])
    assert not any(r.startswith("chb02/") for r in names["train"] + names["val"])


@pytest.mark.slow
def test_resume_equals_uninterrupted(sz, eeg_dir, tmp_path):
    args = ["--epochs", "2", "--seed", "3"]
    full = run_sz(sz, eeg_dir, tmp_path / "full", *args)
    part = run_sz(sz, eeg_dir, tmp_path / "part", *args, "--max-steps", "4")  # mid epoch 1
    assert part["interrupted"] and not (tmp_path / "part" / "model.pt").exists()
    resumed = run_sz(sz, eeg_dir, tmp_path / "part", *args, "--resume")
    assert resumed["auc_roc"] == full["auc_roc"] and resumed["threshold"] == full["threshold"]
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in full["history"]]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in resumed["history"]] == strip
    a, _ = models.load(tmp_path / "full" / "model.pt")
    b, _ = models.load(tmp_path / "part" / "model.pt")
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def _metrics_without_timing(path: Path) -> dict:
    m = json.loads(path.read_text())
    return {k: m[k] for k in ("auc_roc", "auc_pr", "threshold", "window")}


@pytest.mark.slow
def test_sigint_mid_epoch_then_resume_is_exact(eeg_dir, tmp_path):
    """Ctrl-C to a running recipe: it ends the batch, writes a mid-epoch ckpt.pt, says how
    to resume in one line and exits 130; --resume then gives the uninterrupted result."""
    base = [sys.executable, str(SCRIPT), "--data-dir", str(eeg_dir), "--epochs", "2",
            "--batch-size", "4", "--compare", "none", "--no-progress", "--rule", "bptt"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    subprocess.run([*base, "--out", str(tmp_path / "full")], check=True, env=env,
                   capture_output=True, timeout=600)
    out = tmp_path / "part"
    proc = subprocess.Popen([*base, "--out", str(out)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not (out / "ckpt.pt").exists() and time.time() < deadline:  # epoch 1 done
        time.sleep(0.05)
    time.sleep(0.3)                                                   # into epoch 2
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted by SIGINT" in lines[0] and "--resume" in lines[0]
    prog = torch.load(out / "ckpt.pt", weights_only=True)["progress"]
    assert prog["epoch"] == 1 and 0 < prog["step_in_epoch"]           # mid-epoch
    subprocess.run([*base, "--out", str(out), "--resume"], check=True, env=env,
                   capture_output=True, timeout=600)
    assert _metrics_without_timing(out / "metrics.json") == _metrics_without_timing(
        tmp_path / "full" / "metrics.json")


@pytest.mark.slow
def test_bad_input_is_one_line_with_exit_status_2(eeg_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(eeg_dir, data)
    edf = data / "chb02" / "chb02_02.edf"
    edf.write_bytes(edf.read_bytes()[:20000])  # header intact, records cut
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--data-dir", str(data), "--out",
                           str(tmp_path / "run"), *TINY], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "chb02_02.edf" in lines[0]


@pytest.mark.slow
def test_corrupt_edf_is_a_data_error_and_keeps_the_checkpoint(sz, eeg_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(eeg_dir, data)
    out = tmp_path / "run"
    run_sz(sz, data, out)
    before = {n: (out / n).read_bytes() for n in ("ckpt.pt", "best.pt", "model.pt")}
    edf = data / "chb02" / "chb02_02.edf"
    edf.write_bytes(edf.read_bytes()[:20000])
    with pytest.raises(DataError, match="chb02_02.edf"):
        run_sz(sz, data, out)
    for name, blob in before.items():
        assert (out / name).read_bytes() == blob, name
    assert torch.load(out / "ckpt.pt", weights_only=True)["progress"]["epoch"] == 1


def test_unwritable_out_fails_before_loading_data(sz, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    t0 = time.perf_counter()
    with pytest.raises(RunError, match="not a folder"):
        sz.main(["--data-dir", str(tmp_path / "absent"), "--out", str(blocker), *TINY])
    assert time.perf_counter() - t0 < 5


@pytest.mark.slow
def test_eval_only_on_new_recordings(sz, eeg_dir, tmp_path):
    trained = run_sz(sz, eeg_dir, tmp_path / "run")
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


@pytest.mark.slow
def test_eval_only_with_a_nan_model_is_refused(sz, eeg_dir, tmp_path):
    run_sz(sz, eeg_dir, tmp_path / "run")
    model, ck = models.load(tmp_path / "run" / "model.pt")
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    bad = tmp_path / "nan.pt"
    models.save(bad, model, ck["spec"], preprocessing=ck["preprocessing"],
                threshold=ck["threshold"], rule=ck["rule"])
    with pytest.raises(ValueError, match="non-finite"):
        sz.main(["--eval-only", "--checkpoint", str(bad), "--data-dir", str(eeg_dir),
                 "--out", str(tmp_path / "ev"), "--no-progress"])


def test_constant_scores_are_reported_as_such_not_as_no_false_alarms(eeg_dir):
    ds, test = task.load_all(task.SeizurePre(), eeg_dir)

    class Constant(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(2))

        def forward(self, x):
            return self.w.expand(x.shape[1], 2)

    from bimsnn.training import TrainConfig

    m, _ = task.score(Constant(), {"name": "cnn"}, TrainConfig(task="binary", rule="bptt"),
                      None, test, task.SeizurePre(), task.seizure_table(ds), threshold=0.5)
    assert m["problem"].startswith("constant scores")
    assert m["clinical"] == {} and m["false_alarms_per_hour"] != 0.0


def test_missing_data_dir_for_real_datasets_is_one_clear_error(sz, tmp_path):
    with pytest.raises(RunError, match="--data-dir"):
        sz.main(["--dataset", "chbmit", "--out", str(tmp_path)])


@pytest.mark.slow
def test_torchrun_two_processes(eeg_dir, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed next to this Python")
    proc = subprocess.run([str(torchrun), "--nproc_per_node=2", str(SCRIPT), "--data-dir",
                           str(eeg_dir), "--out", str(tmp_path), *TINY],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["world_size"] == 2 and 0 <= m["auc_roc"] <= 1
    assert proc.stdout.count("wrote ") == 1  # rank 0 alone reports and writes


@pytest.mark.slow
def test_bonn_smoke(sz, shared_data, tmp_path):
    res = sz.main(["--dataset", "bonn", "--data-dir", str(shared_data / "bonn"),
                   "--out", str(tmp_path), "--stride-s", "20", *TINY])
    assert 0 <= res["auc_roc"] <= 1 and res["clinical"] == {}  # no timeline for segments
    assert (tmp_path / "raster.png").is_file()
    report = (tmp_path / "report.md").read_text()
    assert "not continuous recordings" in report and "filterbank spikes" in report
    _, ck = models.load(tmp_path / "model.pt")
    pre = task.pre_from_checkpoint(ck, "m")
    assert (pre.encoder, pre.sfreq, pre.h_freq, pre.normalize) == ("filterbank", None, 40.0, None)


def test_dataset_defaults_and_explicit_flags():
    demo = task.resolve_pre("demo", window_s=4.0, stride_s=2.0, sfreq="auto", l_freq="auto",
                            h_freq="auto", encoder="auto", spike_threshold="auto",
                            normalize="auto", smooth_k=2)
    assert (demo.sfreq, demo.h_freq, demo.encoder, demo.kind) == (32.0, 15.0, "adm", "chbmit")
    bonn = task.resolve_pre("bonn", window_s=4.0, stride_s=2.0, sfreq=100.0, l_freq=None,
                            h_freq="auto", encoder="auto", spike_threshold="auto",
                            normalize="auto", smooth_k=2)
    assert (bonn.sfreq, bonn.l_freq, bonn.h_freq, bonn.encoder) == (100.0, None, 40.0,
                                                                     "filterbank")
    with pytest.raises(ValueError, match="--sfreq"):
        task.resolve_pre("bonn", sfreq="fast")


@pytest.mark.slow
def test_skipped_files_are_reported_and_strict_makes_them_errors(sz, eeg_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(eeg_dir, data)
    extra = data / "chb01" / "chb01_99.edf"                 # not in chb01-summary.txt
    shutil.copy(data / "chb01" / "chb01_01.edf", extra)
    with pytest.warns(UserWarning, match="chb01_99.edf"):
        res = run_sz(sz, data, tmp_path / "run")
    assert [p for p, _ in res["skipped"]] == [str(extra)]
    assert "chb01_99.edf" in (tmp_path / "run" / "report.md").read_text()
    with pytest.raises(DataError, match="chb01_99.edf"):
        run_sz(sz, data, tmp_path / "strict", "--strict")
