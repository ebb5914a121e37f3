"""Recipes end to end at tiny sizes: outputs, held-out splits, resume, bad input, --eval-only.

The recipes are imported and driven through ``main(argv)`` (no subprocess start-up). The
demo data sets are written once per module into a temporary folder and only read; tests
that damage data copy it first.
"""

import json
import sys
from pathlib import Path

import pytest
import torch

from bimsnn.data import demo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "recipes"))
import ecg_classification as ecg  # noqa: E402

TINY_ECG = ["--epochs", "1", "--compare", "none", "--no-progress"]


@pytest.fixture(autouse=True)
def _keep_threads():
    """main() sets torch's thread count for its process; give the test process its own back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def ptbxl_dir(tmp_path_factory):
    return demo.ptbxl(tmp_path_factory.mktemp("ecg") / "demo", n_records=60, seed=0)


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
