"""recipes/ecg_classification.py end to end at tiny sizes: PTB-XL demo and MIT-BIH outputs,
--records / --classes, --eval-only on new records, model.pt checks, bad input as one line.

The recipe is loaded by path (the ``recipe`` fixture) and driven through ``main(argv)``;
the exit-status tests run it as a real process. The demo PTB-XL set is written once per
module and only read; MIT-BIH tests read the shared records (``shared_data``).
Symbols: N items (records or beats), T steps, K classes.
"""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from bimsnn import models
from bimsnn.data import DataError, DataWarning, demo
from bimsnn.data.windows import WindowSet
from bimsnn.encoding import adm
from bimsnn.paths import repo_root
from bimsnn.tasks import ecg as task
from bimsnn.training import CheckpointError, RunError, TrainConfig

TINY = ["--epochs", "1", "--compare", "none", "--no-progress"]
SCRIPT = repo_root() / "recipes" / "ecg_classification.py"
NVF = ["--dataset", "mitbih", "--records", "208", "--classes", "N", "V", "F"]


@pytest.fixture(autouse=True)
def _keep_threads():
    """main() sets torch's thread count for its process; give the test process its own back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def ptbxl_dir(tmp_path_factory):
    return demo.ptbxl(tmp_path_factory.mktemp("ecg") / "demo", n_records=60, seed=0)


@pytest.fixture
def ecg(recipe):
    return recipe("ecg_classification")


def _run(args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                          text=True, env=env, timeout=600)


# ---------------------------------------------------------------- PTB-XL demo
def test_ptbxl_demo_smoke_and_eval_only(ecg, ptbxl_dir, tmp_path):
    res = ecg.main(["--data-dir", str(ptbxl_dir), "--out", str(tmp_path / "run"), *TINY,
                    "--compare", "cnn"])
    out = tmp_path / "run"
    for name in ("metrics.json", "report.md", "roc.png", "pr.png", "raster.png", "model.pt",
                 "curves.png", "compare/cnn/best.pt"):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert m["classes"] == ["CD", "HYP", "MI", "NORM", "STTC"]
    assert 0 <= m["macro_auc"] <= 1 and set(m["comparison"]) == {"spiking_mamba", "cnn"}
    assert m["train_seconds"] > 0 and m["peak_rss_mb"] > 0 and m["problem"] is None
    assert m["skipped_files"] == [] and res["split"] == "strat_fold 1-8 / 9 / 10"
    assert res["macro_auc"] == m["macro_auc"]
    assert "| spiking_mamba | hybrid |" in (out / "report.md").read_text()
    model, ck = models.load(out / "model.pt")                  # the one model.pt format
    assert ck["recipe"] == "ecg_classification" and ck["classes"] == m["classes"]
    pre = task.pre_from_checkpoint(ck, out / "model.pt")
    assert (pre.kind, pre.sfreq, pre.classes) == ("ptbxl", 25, tuple(m["classes"]))
    ev = ecg.main(["--eval-only", "--checkpoint", str(out / "model.pt"), "--data-dir",
                   str(ptbxl_dir), "--out", str(tmp_path / "ev"), "--no-progress"])
    assert ev["n_items"]["test"] == sum(res["n_items"].values())  # every fold
    assert (tmp_path / "ev" / "report.md").is_file() and ev["rule"] == "hybrid"
    with pytest.raises(RunError, match="--records"):              # MIT-BIH flags only
        ecg.main(["--eval-only", "--checkpoint", str(out / "model.pt"), "--data-dir",
                  str(ptbxl_dir), "--records", "100", "--out", str(tmp_path / "ev2")])


@pytest.mark.slow
def test_another_recipes_model_pt_is_refused_naming_the_file(ecg, ptbxl_dir, tmp_path):
    spec = models.spec("cnn", n_inputs=2, n_classes=2, channels=[4])
    bad = tmp_path / "seizure_model.pt"
    models.save(bad, models.build(spec), spec, recipe="seizure_detection",
                preprocessing={"kind": "chbmit", "window_s": 4.0, "sfreq": 32.0})
    with pytest.raises(CheckpointError, match="seizure_model.pt.*seizure_detection"):
        ecg.main(["--eval-only", "--checkpoint", str(bad), "--data-dir", str(ptbxl_dir),
                  "--out", str(tmp_path / "ev")])
    proc = _run(["--eval-only", "--checkpoint", str(bad), "--data-dir", str(ptbxl_dir),
                 "--out", str(tmp_path / "ev")])
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "seizure_model.pt" in lines[0]


@pytest.mark.slow
def test_bad_input_is_one_line_with_exit_status_2(ecg, tmp_path):
    (tmp_path / "empty").mkdir()
    for args, where in ((["--dataset", "mitbih", "--data-dir", str(tmp_path / "empty")],
                         "empty: no .atr annotation files"),             # DataError
                        (["--records", "100"], "--records")):            # RunError
        proc = _run([*args, "--out", str(tmp_path / "run"), *TINY])
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert len(lines) == 1 and lines[0].startswith("error: ") and where in lines[0]
    with pytest.raises(RunError, match="--data-dir"):
        ecg.main(["--dataset", "mitbih", "--out", str(tmp_path / "run")])
    with pytest.raises(RunError, match="--classes"):
        ecg.main(["--classes", "N", "V", "--out", str(tmp_path / "run")])


def test_old_format_1_model_pt_preprocessing_still_reads():
    ck = {"format": 1, "classes": ["N", "S", "V", "F", "Q"],
          "preprocessing": {"kind": "mitbih", "sfreq": 90, "lead": [0], "encoder": "adm",
                            "spike_threshold": 0.05, "task": "multiclass"}}
    pre = task.pre_from_checkpoint(ck, "m.pt")
    assert pre.classes == ("N", "S", "V", "F", "Q") and pre.lead == (0,)
    assert task.pre_from_checkpoint({**ck, "recipe": "ecg_classification"}, "m.pt") == pre
    with pytest.raises(CheckpointError, match="m.pt"):
        task.pre_from_checkpoint({**ck, "recipe": "keyword_spotting"}, "m.pt")


def test_constant_and_non_finite_scores_are_reported_as_such():
    class Constant(torch.nn.Module):
        def __init__(self, fill):
            super().__init__()
            self.w = torch.nn.Parameter(torch.full((3,), fill))

        def forward(self, x):                                   # (T, B, C) → (B, 3)
            return self.w.expand(x.shape[1], 3)

    test = WindowSet(torch.zeros(6, 5, 2, dtype=torch.uint8), [0, 1, 2, 0, 1, 2])
    tc = TrainConfig(task="multiclass", rule="bptt")
    for fill, why in ((0.0, "constant scores"), (float("nan"), "non-finite scores")):
        m, _ = task.score(Constant(fill), {"name": "cnn"}, tc, test, ["N", "V", "F"])
        assert m["problem"].startswith(why)
        assert all(np.isnan(m[k]) for k in ("macro_f1", "accuracy", "macro_auc", "acc"))
        row = task.summary_row(m, rule="bptt")
        info = {"dataset": "x", "data_dir": "d", "n_items": {"test": 6}, "n_inputs": 2,
                "split": "s", "timings": {}}
        text = task.report_md({**m, "classes": ["N", "V", "F"]}, {"cnn": row},
                              task.ECGPre(kind="mitbih", task="multiclass"), info)
        assert why in text and "| cnn | bptt | n/a | n/a | n/a | n/a | n/a | n/a |" in text


def test_prior_scores_undo_the_class_weights_for_decisions():
    """Class-weighted training scores q(k|x) as if classes were equally likely; the decision
    takes the training frequencies back: q(k|x)·π_k, renormalised."""
    assert task.class_prior([0, 0, 0, 1, 2, 2], 4) == pytest.approx((3 / 6, 1 / 6, 2 / 6, 1 / 6))
    q = np.array([[0.45, 0.10, 0.45], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4]], np.float32)
    p = task.prior_scores(q, (0.6, 0.3, 0.1))
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(p[0], np.array([0.27, 0.03, 0.045]) / 0.345, rtol=1e-6)
    assert p.argmax(1).tolist() == [0, 1, 0] and q.argmax(1).tolist() == [0, 1, 2]
    np.testing.assert_allclose(task.prior_scores(q, (1 / 3,) * 3), q, rtol=1e-6)  # uniform
    x = (torch.rand(6, 5, 2, generator=torch.Generator().manual_seed(0)) < 0.5).to(torch.uint8)
    test = WindowSet(x, [0, 1, 2, 0, 1, 2])

    class Fixed(torch.nn.Module):                        # logits vary with the spike count
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor([0.1, -0.1, 0.0]))

        def forward(self, x):                            # (T, B, C) → (B, 3)
            return x.float().sum((0, 2))[:, None] * self.w

    tc = TrainConfig(task="multiclass", rule="bptt")
    _, raw = task.score(Fixed(), {"name": "cnn"}, tc, test, ["N", "V", "F"])
    _, adj = task.score(Fixed(), {"name": "cnn"}, tc, test, ["N", "V", "F"], (0.6, 0.3, 0.1))
    assert raw["scores"].std(0).min() > 0
    np.testing.assert_allclose(adj["scores"], task.prior_scores(raw["scores"], (0.6, 0.3, 0.1)),
                               rtol=1e-6)


def test_multi_adm_encoder_stacks_three_thresholds():
    """--encoder multi_adm: ADM at θ, 3θ, 10θ side by side, (T, L) → (T, 3·2L)."""
    t = torch.linspace(0, 1, 90)
    x = torch.stack([torch.sin(2 * torch.pi * 3 * t), 0.2 * torch.cos(2 * torch.pi * t)], -1)
    s = task.encoder(task.ECGPre(encoder="multi_adm", spike_threshold=0.03))(x)
    assert s.shape == (90, 12)
    for k, th in enumerate((0.03, 0.09, 0.3)):
        assert torch.equal(s[:, 4 * k: 4 * k + 4], adm(x, th))
    counts = [int(s[:, 4 * k: 4 * k + 4].sum()) for k in range(3)]
    assert counts[0] > counts[1] > counts[2] > 0          # coarser θ, fewer spikes


def test_aami_subset_flags():
    assert task.aami_subset(None) == ("N", "S", "V", "F", "Q")
    assert task.aami_subset(["V", "N", "V"]) == ("N", "V")
    for bad in (["N", "X"], ["N"]):
        with pytest.raises(RunError, match="--classes"):
            task.aami_subset(bad)


# ---------------------------------------------------------------- MIT-BIH (shared records)
@pytest.mark.slow
def test_mitbih_smoke(ecg, shared_data, tmp_path):
    with pytest.warns(DataWarning, match="s0010_re: no .atr annotation file"):
        res = ecg.main(["--dataset", "mitbih", "--data-dir", str(shared_data / "ecg"),
                        "--out", str(tmp_path), "--limit", "256", *TINY])
    assert res["classes"] == ["N", "S", "V", "F", "Q"] and len(res["confusion"]) == 5
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert 0 <= m["macro_f1"] <= 1 and 0 <= m["accuracy"] <= 1 and m["peak_rss_mb"] > 0
    assert m["records"] == ["100", "208", "800"]
    assert [p for p, _ in m["skipped_files"]] == [str(shared_data / "ecg" / "s0010_re")]
    assert (tmp_path / "confusion.png").is_file()
    assert "s0010_re" in (tmp_path / "report.md").read_text()
    models.load(tmp_path / "model.pt")


@pytest.mark.slow
def test_mitbih_records_classes_then_eval_only_on_other_records(ecg, shared_data, tmp_path):
    data = str(shared_data / "ecg")
    with pytest.warns(DataWarning, match=r"2 beats of classes \{'S': 2\}"):
        res = ecg.main([*NVF, "--data-dir", data, "--out", str(tmp_path / "run"),
                        "--limit", "96", *TINY])
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["classes"] == ["N", "V", "F"] and m["records"] == ["208"]
    assert m["excluded_beats"] == {"S": 2} and len(m["confusion"]) == 3
    assert 0 <= m["macro_f1"] <= 1 and 0 <= m["accuracy"] <= 1 and res["n_items"]["test"] == 96
    assert "Beats of other classes left out: 2 (S 2)" in (tmp_path / "run" / "report.md").read_text()
    model_pt = str(tmp_path / "run" / "model.pt")
    pre = task.pre_from_checkpoint(models.load(model_pt)[1], model_pt)   # what eval-only uses
    assert pre.l_freq == 0.5 and len(pre.prior) == 3                     # the recipe defaults
    np.testing.assert_allclose(pre.prior, m["class_prior"])
    np.testing.assert_allclose(sum(pre.prior), 1.0)
    ev_args = ["--eval-only", "--checkpoint", model_pt, "--data-dir", data, "--no-progress"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        ev = ecg.main([*ev_args, "--records", "100", "--out", str(tmp_path / "ev")])
    with pytest.warns(DataWarning, match=r"33 beats of classes \{'S': 33\}"):
        ref = task.open_mitbih(task.ECGPre(kind="mitbih", sfreq=90, classes=("N", "V", "F")),
                               shared_data / "ecg", ["100"])
    assert ev["n_items"]["test"] == len(ref) == 2238          # every N/V/F beat of 100
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["records"] == ["100"] and m["excluded_beats"] == {"S": 33}
    assert 0 <= m["macro_f1"] <= 1 and 0 <= m["accuracy"] <= 1
    assert m["classes"] == ["N", "V", "F"] and m["checkpoint"] == model_pt
    with pytest.raises(RunError, match="trained on classes N V F"):
        ecg.main([*ev_args, "--classes", "N", "V", "--out", str(tmp_path / "ev2")])
    with pytest.raises(DataError, match="s0010_re"):         # --strict: no loud skips
        ecg.main([*ev_args, "--strict", "--out", str(tmp_path / "ev3")])


def test_time_split_keeps_order_and_no_overlap(shared_data):
    ds = task.open_mitbih(task.ECGPre(kind="mitbih", sfreq=90), shared_data / "ecg",
                          ["100", "208"])
    from bimsnn.data.windows import time_split

    parts = time_split(ds)
    for r in range(len(ds.records)):
        spans = [ds.beat_sample[v[ds.beat_record[v] == r]] for v in parts.values()]
        for a, b in zip(spans, spans[1:]):  # train ends before val starts, val before test
            assert a.max() + ds.post <= b.min() - ds.pre
