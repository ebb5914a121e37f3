"""bimsnn.training: fit/evaluate, exact resume, atomic checkpoints, DDP, metrics, baselines.

Symbols: T time, B batch, C channels, H hidden, K classes, N dataset size.
Tiny stand-in models and synthetic datasets; every test builds its own, seeded.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

import bimsnn
from bimsnn.data import DataError
from bimsnn.metrics import classification_metrics as compute_metrics
from bimsnn.models import CNN1d, LSTMClassifier
from bimsnn.training import (
    TrainConfig,
    collate,
    evaluate,
    fit,
    parse_config,
)

REPO = Path(bimsnn.__file__).resolve().parent.parent


class State(NamedTuple):
    h: torch.Tensor  # (B, H)


class StepNet(nn.Module):
    """Leaky tanh RNN with explicit state: forward (T, B, C) → (B, K), step, init_state."""

    def __init__(self, C=3, H=8, K=2, p=0.0):
        super().__init__()
        self.fc = nn.Linear(C, H)
        self.drop = nn.Dropout(p)  # p > 0 exercises the torch RNG in resume tests
        self.readout = nn.Linear(H, K)

    def init_state(self, batch_size):
        return State(torch.zeros(batch_size, self.fc.out_features, device=self.fc.weight.device))

    def step(self, x_t, state):
        h = 0.8 * state.h + torch.tanh(self.fc(x_t))
        return self.readout(self.drop(h)), State(h)

    def forward(self, x):
        state = self.init_state(x.shape[1])
        for t in range(x.shape[0]):
            z, state = self.step(x[t], state)
        return z


class PlainRule:
    """Stand-in online rule: backprops this step only and records what it was given."""

    def __init__(self, model):
        self.given, self.resets, self.removed = [], [], False

    def reset(self, batch_size):
        self.resets.append(batch_size)

    def backward(self, loss_t):
        self.given.append(loss_t is not None)
        if loss_t is not None:
            loss_t.backward()

    def remove(self):
        self.removed = True


class Synth(Dataset):
    """Two classes separated by the mean of channel 0; items (x (T, C), label, meta)."""

    def __init__(self, n=32, T=10, C=3, seed=0, fail_after=None):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % 2
        self.x = torch.randn(n, T, C, generator=g) * 0.5
        self.x[:, :, 0] += 2.0 * self.y[:, None] - 1.0
        self.fail_after, self.served = fail_after, 0

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        self.served += 1
        if self.fail_after is not None and self.served > self.fail_after:
            raise DataError(f"item{i}.edf", "truncated record")
        return self.x[i], int(self.y[i]), {"index": i}


def cfg_for(tmp_path=None, **kw):
    base = dict(epochs=2, batch_size=8, lr=0.05, task="multiclass", progress=False,
                plots=False, device="cpu", out_dir=str(tmp_path) if tmp_path else None)
    return TrainConfig(**{**base, **kw})


def params_of(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------- config and data
def test_parse_config_types_choices_and_errors(capsys):
    cfg = parse_config(TrainConfig, argv=["--lr", "0.01", "--rule", "hybrid", "--prune", "0.5",
                                          "--no-restore-best", "--out_dir", "none",
                                          "--loss-window", "0.25"])
    assert (cfg.lr, cfg.rule, cfg.prune, cfg.restore_best, cfg.out_dir, cfg.loss_window) == (
        0.01, "hybrid", 0.5, False, None, 0.25)
    base = TrainConfig(epochs=3)
    assert parse_config(base, argv=[]).epochs == 3  # an instance supplies the defaults
    with pytest.raises(SystemExit):
        parse_config(TrainConfig, argv=["--rule", "sgd"])  # not a choice
    with pytest.raises(SystemExit):
        parse_config(TrainConfig, argv=["--loss_window", "1.5"])  # __post_init__ rejects
    assert "loss_window" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not computed"):
        TrainConfig(task="binary", metric="macro_f1")


def test_parse_config_two_dataclasses_with_unions_tuples_and_required():
    mamba = pytest.importorskip("bimsnn.ssm.mamba")
    tcfg, mcfg = parse_config(TrainConfig, mamba.MambaConfig, argv=[
        "--d_model", "16", "--n_inputs", "3", "--n_classes", "2", "--dt_rank", "4",
        "--readout", "mean_mem", "--epochs", "2"])
    assert (tcfg.epochs, mcfg.d_model, mcfg.dt_rank, mcfg.readout) == (2, 16, 4, "mean_mem")
    assert parse_config(mamba.MambaConfig, argv=["--d_model", "16", "--n_inputs", "3",
                                                 "--n_classes", "2", "--dt-rank", "auto"]
                        ).dt_rank == 1  # int | str: "auto" stays a str, then is derived
    with pytest.raises(SystemExit):  # d_model has no default: a required flag
        parse_config(mamba.MambaConfig, argv=["--n_inputs", "3", "--n_classes", "2"])


def test_optional_list_flag_takes_none_to_turn_a_default_off():
    from dataclasses import dataclass

    @dataclass
    class Cfg:
        speeds: list[float] | None = None
        sizes: tuple[int, ...] | None = (2, 3)

    base = Cfg(speeds=[0.9, 1.1])
    assert parse_config(base, argv=[]).speeds == [0.9, 1.1]
    assert parse_config(base, argv=["--speeds", "none"]).speeds is None
    assert parse_config(base, argv=["--speeds", "0.8"]).speeds == [0.8]
    assert parse_config(base, argv=["--sizes", "4", "5"]).sizes == (4, 5)   # still a tuple
    assert parse_config(base, argv=["--sizes", "None"]).sizes is None
    with pytest.raises(SystemExit):
        parse_config(base, argv=["--speeds", "0.8", "none"])


def test_collate_is_time_major_and_keeps_metas():
    items = [(torch.ones(5, 3, dtype=torch.uint8), i % 2, {"i": i}) for i in range(4)]
    x, y, metas = collate(items)
    assert x.shape == (5, 4, 3) and x.dtype == torch.float32
    assert y.tolist() == [0, 1, 0, 1] and y.dtype == torch.int64
    assert metas == [{"i": i} for i in range(4)]
    _, yk, _ = collate([(torch.zeros(5, 3), torch.tensor([1.0, 0.0]), None)] * 2)
    assert yk.shape == (2, 2)
    with pytest.raises(ValueError, match="differ in shape"):
        collate([(torch.zeros(5, 3), 0, None), (torch.zeros(6, 3), 1, None)])


# ---------------------------------------------------------------- training
def test_bptt_fit_learns_and_writes_atomic_files(tmp_path):
    torch.manual_seed(0)
    model = StepNet()
    hist = fit(model, Synth(seed=0), Synth(n=16, seed=1),
               cfg_for(tmp_path, epochs=3, plots=True, task="binary"))
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    assert hist[-1]["val_auc"] > 0.95 and hist[-1]["train_loss"] < hist[0]["train_loss"]
    for name in ("ckpt.pt", "best.pt", "metrics.json", "curves.png"):
        assert (tmp_path / name).is_file(), name
    assert not list(tmp_path.glob(".*tmp"))  # temp files were renamed, none left over
    ck = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert ck["progress"]["epoch"] == 3 and len(ck["history"]) == 3
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["best"]["epoch"] == best["epoch"]
    # restore_best: the returned model carries best.pt's weights
    assert all(torch.equal(v, best["model"][k]) for k, v in model.state_dict().items())


def test_online_rule_applies_loss_window_and_removes_hooks():
    torch.manual_seed(0)
    model, made = StepNet(), []

    def factory(m):
        made.append(PlainRule(m))
        return made[-1]

    hist = fit(model, Synth(n=16, T=10), Synth(n=8, seed=1),
               cfg_for(rule="rtrl", loss_window=0.3, epochs=2), rule=factory)
    assert len(made) == 2 and all(r.removed for r in made)  # one per epoch, removed each time
    r = made[0]
    assert r.resets == [8, 8]  # one reset per sequence batch
    per_seq = np.array(r.given).reshape(2, 10)
    assert (per_seq == [False] * 7 + [True] * 3).all()  # loss on the last ceil(0.3·10) steps
    assert np.isfinite(hist[-1]["val_loss"])


def test_stdp_mode_updates_only_the_readout_from_labels():
    torch.manual_seed(0)
    model = StepNet()
    before = params_of(model)
    fit(model, Synth(n=8), None, cfg_for(rule="stdp", epochs=1, batch_size=8),
        rule=PlainRule)  # the stand-in writes nothing on backward(None)
    after = params_of(model)
    assert torch.equal(before["fc.weight"], after["fc.weight"])
    assert not torch.equal(before["readout.weight"], after["readout.weight"])


def test_online_rule_needs_a_step_model():
    with pytest.raises(TypeError, match="bptt"):
        fit(LSTMClassifier(3, 2, hidden=4), Synth(n=8), None, cfg_for(rule="rtrl"))


@pytest.mark.parametrize("rule,prune", [("bptt", None), ("rtrl", None), ("bptt", 0.3)])
def test_resume_equals_uninterrupted(tmp_path, rule, prune):
    """Mid-epoch stop + resume gives the uninterrupted run's weights and history bit for
    bit, the AdaptivePruning threshold, masks and sampler included (prune=0.3)."""
    kw = dict(epochs=3, rule=rule, patience=5, prune=prune, prune_beta=50.0, prune_gamma=0.05)
    factory = PlainRule if rule != "bptt" else None
    torch.manual_seed(0)
    full = StepNet(p=0.2)  # dropout: resume must restore the RNG stream too
    h_full = fit(full, Synth(n=40), Synth(n=16, seed=1), cfg_for(tmp_path / "a", **kw),
                 rule=factory)

    torch.manual_seed(0)
    part = StepNet(p=0.2)
    h_part = fit(part, Synth(n=40), Synth(n=16, seed=1),
                 cfg_for(tmp_path / "b", max_steps=7, **kw), rule=factory)  # 5 batches/epoch
    assert len(h_part) == 1
    assert torch.load(tmp_path / "b" / "ckpt.pt", weights_only=True)["progress"][
        "step_in_epoch"] == 2
    torch.manual_seed(123)  # a differently initialised model: weights must come from ckpt
    resumed = StepNet(p=0.2)
    h_res = fit(resumed, Synth(n=40), Synth(n=16, seed=1),
                cfg_for(tmp_path / "b", resume=True, **kw), rule=factory)

    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in h_full]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in h_res] == strip
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    if prune is not None:
        zeros = sum(int((m.weight == 0).sum()) for m in full.modules()
                    if isinstance(m, nn.Linear))
        assert zeros > 0                                    # pruning was active
        ck = torch.load(tmp_path / "b" / "ckpt.pt", weights_only=True)
        assert ck["pruner"] is not None and len(ck["pruner"]["masks"]) > 0


def test_data_error_propagates_and_keeps_epoch1_checkpoint(tmp_path):
    torch.manual_seed(0)
    train = Synth(n=16, fail_after=16 + 5)  # epoch 1 serves 16 items; epoch 2 fails
    with pytest.raises(DataError, match="truncated record"):
        fit(StepNet(), train, Synth(n=8, seed=1), cfg_for(tmp_path, epochs=3))
    ck = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert ck["progress"]["epoch"] == 1 and len(ck["history"]) == 1
    torch.load(tmp_path / "best.pt", weights_only=True)
    assert not list(tmp_path.glob(".*tmp"))


class BadItem(Synth):
    def __getitem__(self, i):
        if i == 3:
            raise DataError(f"item{i}.edf", "bad header")
        return super().__getitem__(i)


def test_data_error_from_a_worker_process_is_still_a_data_error():
    with pytest.raises(DataError, match="bad header"):
        fit(StepNet(), BadItem(n=8), None, cfg_for(epochs=1, num_workers=1))


@pytest.mark.slow
def test_early_stopping_on_patience():
    torch.manual_seed(0)
    hist = fit(StepNet(), Synth(n=16), Synth(n=8, seed=1),
               cfg_for(epochs=10, lr=0.0, patience=2))  # lr 0: the metric never improves
    assert len(hist) == 3


def test_evaluate_returns_dataset_order_and_window_readout():
    torch.manual_seed(0)
    model, ds = StepNet(), Synth(n=10, T=6)
    res = evaluate(model, ds, cfg_for(batch_size=4))
    assert res["scores"].shape == (10, 2) and [m["index"] for m in res["metas"]] == list(range(10))
    with torch.no_grad():
        x = torch.stack([ds[i][0] for i in range(10)], 1)
        z = model(x)
        np.testing.assert_allclose(res["scores"], z.softmax(-1).numpy(), rtol=1e-6)
        win = evaluate(model, ds, cfg_for(batch_size=4, rule="rtrl", loss_window=0.5))["scores"]
        st, zs = model.init_state(10), []
        for t in range(6):
            zt, st = model.step(x[t], st)
            zs.append(zt)
        np.testing.assert_allclose(win, torch.stack(zs[3:]).mean(0).softmax(-1).numpy(), rtol=1e-6)


# ---------------------------------------------------------------- metrics and plots
def test_compute_metrics_by_task():
    m = compute_metrics([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], "binary")
    assert m["auc"] == pytest.approx(0.75) and m["confusion"] == [[2, 0], [1, 1]]
    assert m["sensitivity"] == 0.5 and m["specificity"] == 1.0
    assert np.isnan(compute_metrics([0.2, 0.3], [1, 1], "binary")["auc"])
    s = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    m = compute_metrics(s, [0, 1, 1], "multiclass")
    assert m["acc"] == pytest.approx(2 / 3) and m["confusion"] == [[1, 0], [1, 1]]
    y = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 0, 1]])  # labels 1, 2 never vary
    s = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.5], [0.7, 0.2, 0.5], [0.4, 0.1, 0.5]])
    m = compute_metrics(s, y, "multilabel")
    assert m["n_scored"] == 1 and m["macro_auc"] == 1.0


# ---------------------------------------------------------------- baselines
@pytest.mark.parametrize("make", [lambda: CNN1d(3, 2, channels=(8, 8)),
                                  lambda: LSTMClassifier(3, 2, hidden=8)])
def test_baselines_shapes_and_bptt_fit(make):
    torch.manual_seed(0)
    model = make()
    assert model(torch.randn(20, 4, 3)).shape == (4, 2)
    hist = fit(model, Synth(n=32, T=20), Synth(n=16, T=20, seed=1), cfg_for(epochs=3, lr=0.02))
    assert hist[-1]["val_acc"] >= 0.9


# ---------------------------------------------------------------- two processes
DDP_SCRIPT = '''
import os, sys, torch
from test_train import StepNet, Synth, PlainRule   # tests/ comes in through PYTHONPATH
from bimsnn.training import TrainConfig, fit

def run(out, rule, batch_size):
    torch.manual_seed(0)
    model = StepNet()
    cfg = TrainConfig(epochs=2, batch_size=batch_size, lr=0.05, rule=rule, progress=False,
                      plots=False, device="cpu", out_dir=os.path.join(out, rule))
    hist = fit(model, Synth(n=32), Synth(n=13, seed=1), cfg,
               rule=PlainRule if rule != "bptt" else None)
    return model.state_dict(), [h["val_acc"] for h in hist], [h["val_loss"] for h in hist]

if __name__ == "__main__":
    out, rank = sys.argv[1], int(os.environ["RANK"])
    res = {rule: run(out, rule, 4) for rule in ("bptt", "rtrl")}
    torch.save(res, os.path.join(out, f"rank{rank}.pt"))
'''


def test_torchrun_two_cpu_processes_stay_identical(tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(Path(__file__).parent)]),
           "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).parent / "torchrun"
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", str(script),
                           str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for rule in ("bptt", "rtrl"):
        for k, v in r0[rule][0].items():
            assert torch.equal(v, r1[rule][0][k]), (rule, k)  # ranks never drift apart
        assert r0[rule][1:] == r1[rule][1:]  # gathered validation is the same everywhere
        assert (tmp_path / rule / "ckpt.pt").is_file()
    # averaged gradients of 2 × batch 4 equal one process with batch 8 (same global batches)
    spec = importlib.util.spec_from_file_location("ddp_run", script)
    ddp_run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ddp_run)
    for rule in ("bptt", "rtrl"):
        state, acc, loss = ddp_run.run(str(tmp_path / "single"), rule, 8)
        for k, v in state.items():
            torch.testing.assert_close(v, r0[rule][0][k], rtol=1e-4, atol=1e-5)
        assert acc == r0[rule][1]
        np.testing.assert_allclose(loss, r0[rule][2], rtol=1e-4)


# ---------------------------------------------------------------- the real model and rules
@pytest.mark.parametrize("rule,prune", [("hybrid", None), ("rtrl", 0.3), ("stdp", None)])
def test_spiking_mamba_online_smoke(tmp_path, rule, prune):
    mamba = pytest.importorskip("bimsnn.ssm.mamba")
    rules = pytest.importorskip("bimsnn.rules")
    if not all(hasattr(rules, n) for n in ("RTRL", "STDP", "Hybrid", "AdaptivePruning")):
        pytest.skip("bimsnn.rules not complete yet")
    torch.manual_seed(0)
    net = mamba.SpikingMambaNet(mamba.MambaConfig(d_model=8, n_inputs=3, n_classes=2, d_state=4))
    ds, val = Synth(n=8, T=6), Synth(n=4, T=6, seed=1)
    ds.x, val.x = (ds.x > 0).float(), (val.x > 0).float()  # spikes
    before = params_of(net)
    cfg = cfg_for(tmp_path, rule=rule, lam=0.5, epochs=1, prune=prune, loss_window=0.5)
    hist = fit(net, ds, val, cfg)
    assert np.isfinite(hist[0]["train_loss"]) and np.isfinite(hist[0]["val_loss"])
    after = net.state_dict()
    changed = {k for k, v in before.items() if not torch.equal(v, after[k])}
    assert "out_fc.weight" in changed  # every mode gives the readout a label signal
    if rule == "stdp":  # no loss gradient below the readout, only STDP on weights
        assert not any(k.endswith("bias") and not k.startswith("out_fc") for k in changed)
    if prune is not None:
        w = [m.weight for m in net.modules() if isinstance(m, nn.Linear)]
        assert sum(int((p == 0).sum()) for p in w) > 0  # some weights pruned
        assert all(not p._backward_hooks for p in w)  # fit removed the pruner it made
    torch.load(tmp_path / "ckpt.pt", weights_only=True)
