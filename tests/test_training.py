"""bimsnn.training: interrupts, checkpoint errors, output-folder checks, global state, CLI.

Symbols: T time, B batch, C channels, H hidden, K classes, N dataset size.
Tiny stand-in models and synthetic datasets; every test builds its own, seeded.
"""

from __future__ import annotations

import os
import pickle
import signal
from typing import NamedTuple

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from bimsnn.data import DataError
from bimsnn.training import (
    CheckpointError,
    RunConfig,
    RunError,
    TrainConfig,
    TrainingInterrupted,
    check_out_dir,
    fit,
    load_checkpoint,
    main_guard,
    parse_config,
)
from bimsnn.training.checkpoint import atomic_torch_save, load_state_checked


class State(NamedTuple):
    h: torch.Tensor  # (B, H)


class StepNet(nn.Module):
    """Leaky tanh RNN with explicit state and dropout (so resumes exercise the RNG)."""

    def __init__(self, C=3, H=8, K=2):
        super().__init__()
        self.fc, self.drop, self.readout = nn.Linear(C, H), nn.Dropout(0.2), nn.Linear(H, K)

    def init_state(self, batch_size):
        return State(torch.zeros(batch_size, self.fc.out_features))

    def step(self, x_t, state):
        h = 0.8 * state.h + torch.tanh(self.fc(x_t))
        return self.readout(self.drop(h)), State(h)

    def forward(self, x):
        state = self.init_state(x.shape[1])
        for t in range(x.shape[0]):
            z, state = self.step(x[t], state)
        return z


class Synth(Dataset):
    """Two classes by the mean of channel 0; sends itself ``signum`` when item
    ``signal_at`` is served for the ``signal_on``-th time (a Ctrl-C mid-epoch)."""

    def __init__(self, n=48, T=6, C=3, seed=0, signal_at=None, signum=signal.SIGINT):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % 2
        self.x = torch.randn(n, T, C, generator=g) * 0.5
        self.x[:, :, 0] += 2.0 * self.y[:, None] - 1.0
        self.signal_at, self.signum, self.served = signal_at, signum, 0

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        self.served += 1
        if self.served == self.signal_at:
            os.kill(os.getpid(), self.signum)
        return self.x[i], int(self.y[i]), {"i": i}


def cfg_for(out=None, **kw):
    base = dict(epochs=3, batch_size=8, lr=0.05, progress=False, plots=False, device="cpu",
                out_dir=str(out) if out else None)
    return TrainConfig(**{**base, **kw})


def state_of(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_epoch_checkpoints_and_resume_is_exact(tmp_path, signum):
    torch.manual_seed(0)
    full = StepNet()
    fit(full, Synth(), Synth(n=16, seed=1), cfg_for(tmp_path / "full"))

    torch.manual_seed(0)
    part = StepNet()
    # 6 batches per epoch: item 8·6 + 20 is served in batch 3 of epoch 2
    with pytest.raises(TrainingInterrupted, match="resume") as info:
        fit(part, Synth(signal_at=48 + 20, signum=signum), Synth(n=16, seed=1),
            cfg_for(tmp_path / "part"))
    assert info.value.ckpt == tmp_path / "part" / "ckpt.pt"
    prog = load_checkpoint(info.value.ckpt)["progress"]
    assert prog["epoch"] == 1 and prog["step_in_epoch"] == 3            # mid-epoch
    assert signal.getsignal(signum) in (signal.default_int_handler, signal.SIG_DFL)

    torch.manual_seed(123)                                               # resume restores RNG
    resumed = StepNet()
    fit(resumed, Synth(), Synth(n=16, seed=1), cfg_for(tmp_path / "part", resume=True))
    a, b = state_of(full), state_of(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fit_leaves_global_rng_and_cudnn_flags_as_found():
    net = StepNet()
    torch.manual_seed(7)
    before = torch.get_rng_state()
    flags = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    fit(net, Synth(n=16), None, cfg_for(epochs=1, seed=3))
    assert torch.equal(torch.get_rng_state(), before)
    assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == flags


# ---------------------------------------------------------------- checkpoint errors
def _zipped_object(tmp_path) -> bytes:
    """A real torch.save zip that holds a Python object (a pathlib.Path), not weights."""
    p = tmp_path / "obj.tmp"
    torch.save({"model": tmp_path}, p)
    return p.read_bytes()


def _bad_files(tmp_path):
    good = tmp_path / "good.pt"
    atomic_torch_save({"model": StepNet().state_dict()}, good)
    raw = good.read_bytes()
    files = {
        "empty": (b"", "empty file"),
        "random": (os.urandom(2000), "not a PyTorch checkpoint"),
        "text": (b"hello world\n" * 10, "not a PyTorch checkpoint"),
        "truncated": (raw[: len(raw) // 2], "truncated or corrupt"),
        "pickle": (pickle.dumps(os.getcwd), "not a PyTorch checkpoint"),
        "object": (_zipped_object(tmp_path), "safe (weights-only) load refuses"),
    }
    for name, (data, _) in files.items():
        (tmp_path / f"{name}.pt").write_bytes(data)
    return {name: (tmp_path / f"{name}.pt", msg) for name, (_, msg) in files.items()}


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_every_bad_checkpoint_is_one_clear_error(tmp_path):
    for name, (path, msg) in _bad_files(tmp_path).items():
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        text = str(info.value)
        assert str(path) in text and msg in text, (name, text)
        assert "weights_only=False" not in text and "weights_only" not in text.replace(
            "weights-only", ""), (name, text)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")


def test_a_malicious_pickle_never_runs(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, path)
    with pytest.raises(CheckpointError, match="safe"):
        load_checkpoint(path)
    assert not marker.exists()


def test_non_finite_weights_are_refused(tmp_path):
    net = StepNet()
    with torch.no_grad():
        net.fc.weight[0, 0] = float("nan")
    path = tmp_path / "nan.pt"
    atomic_torch_save({"model": net.state_dict()}, path)
    assert load_checkpoint(path)["model"]["fc.weight"].isnan().any()   # finite=False loads
    with pytest.raises(CheckpointError, match=r"non-finite.*fc\.weight"):
        load_checkpoint(path, finite=True)


def test_another_architecture_lists_what_differs(tmp_path):
    path = tmp_path / "m.pt"
    with pytest.raises(CheckpointError) as info:
        load_state_checked(StepNet(H=8), StepNet(H=16).state_dict(), path)
    text = str(info.value)
    assert str(path) in text and "fc.weight (16, 3) in the file, (8, 3) in the model" in text
    with pytest.raises(CheckpointError, match="missing in the file: fc.bias"):
        state = StepNet().state_dict()
        del state["fc.bias"]
        load_state_checked(StepNet(), state, path)


def test_resume_after_a_model_change_is_one_clear_error(tmp_path):
    fit(StepNet(H=8), Synth(n=16), None, cfg_for(tmp_path, epochs=1))
    with pytest.raises(CheckpointError, match="different model architecture"):
        fit(StepNet(H=4), Synth(n=16), None, cfg_for(tmp_path, epochs=2, resume=True))


# ---------------------------------------------------------------- run folder and CLI
def test_out_dir_is_checked_before_anything_runs(tmp_path):
    assert check_out_dir(tmp_path / "a" / "b").is_dir()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunError, match="cannot create"):
        check_out_dir(blocker / "sub")
    with pytest.raises(RunError, match="not a folder"):
        check_out_dir(blocker)
    with pytest.raises(RunError, match="MiB free"):
        check_out_dir(tmp_path, min_free_mb=1e12)


def test_main_guard_prints_one_line_and_exits_2(capsys):
    def main(argv):
        raise DataError("/data/chb01_03.edf", "seizure 2990-3050 s lies past the end (2000 s)")

    with pytest.raises(SystemExit) as info:
        main_guard(main, [])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: /data/chb01_03.edf: seizure 2990-3050 s lies past the end (2000 s)"]
    with pytest.raises(DataError):                                      # --debug: traceback
        main_guard(main, ["--debug"])


def test_bad_flag_is_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        parse_config(RunConfig(), TrainConfig(), argv=["--rule", "sgd"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: argument --rule")


def test_shared_flag_vocabulary():
    run, tc = parse_config(RunConfig(), TrainConfig(), argv=[
        "--out", "x", "--data-dir", "d", "--rule", "rtrl", "--epochs", "2", "--eval-only",
        "--checkpoint", "m.pt", "--resume", "--threads", "2", "--strict"])
    assert (tc.out_dir, tc.rule, tc.epochs, tc.resume) == ("x", "rtrl", 2, True)
    assert (run.data_dir, run.eval_only, run.checkpoint, run.threads, run.strict) == (
        "d", True, "m.pt", 2, True)
    for spelling in ("--out-dir", "--out_dir"):
        assert parse_config(TrainConfig(), argv=[spelling, "y"]).out_dir == "y"


# ---------------------------------------------------------------- chunked online rules
class SpikeSynth(Dataset):
    """Spike trains (T, C) float64 whose rate in channel 0 codes the class."""

    def __init__(self, n=16, T=12, C=3, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % 2
        rate = 0.2 + 0.5 * self.y[:, None, None] * (torch.arange(C) == 0)
        self.x = (torch.rand(n, T, C, generator=g, dtype=torch.float64) < rate).double()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i]), None


def _mamba():
    from bimsnn import models

    torch.manual_seed(0)
    return models.build(models.spec("spiking_mamba", d_model=8, n_inputs=3, n_classes=2,
                                    d_state=4, n_layers=2)).double()


@pytest.mark.parametrize("rule", ["rtrl", "hybrid", "stdp"])
def test_chunk_1_through_fit_equals_the_per_step_rule(rule):
    """fit(chunk=1) (forward_seq per step, chunked rules) trains exactly as the per-step
    rules through model.step (float64, 2 epochs of AdamW; λ = 0.5 with balance)."""
    kw = dict(epochs=2, batch_size=8, rule=rule, lam=0.5, balance=True, loss_window=0.5,
              task="multiclass", lr=0.01)
    nets = {}
    for chunk in (None, 1):
        net = _mamba()
        fit(net, SpikeSynth(), None, cfg_for(**kw, chunk=chunk))
        nets[chunk] = state_of(net)
    for k, v in nets[None].items():
        torch.testing.assert_close(nets[1][k], v, rtol=1e-6, atol=1e-9, msg=k)
    assert not torch.equal(nets[1]["in_fc.weight"], state_of(_mamba())["in_fc.weight"])


def test_chunked_fit_trains_and_leaves_the_model_as_it_was():
    net = _mamba()
    hist = fit(net, SpikeSynth(n=32), SpikeSynth(n=16, seed=1),
               cfg_for(epochs=4, rule="hybrid", lam=0.9, chunk=5, task="multiclass",
                       lr=0.02, batch_size=8))
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert "multi_step" not in vars(net.in_lif) and "forward" not in vars(net.blocks[0].ssm)


# ------------------------------------------------------------------ weight averaging (ema)
class Recorder(torch.optim.SGD):
    """SGD that keeps every parameter vector after each step (to recompute the average)."""

    def __init__(self, params, lr):
        params = list(params)
        super().__init__(params, lr=lr)
        self.trail = []

    def step(self, closure=None):
        out = super().step(closure)
        self.trail.append([p.detach().clone() for g in self.param_groups for p in g["params"]])
        return out


def test_ema_model_is_the_moving_average_of_the_trajectory():
    torch.manual_seed(0)
    m = StepNet()
    start = [p.detach().clone() for p in m.parameters()]
    opt = Recorder(m.parameters(), lr=0.05)
    fit(m, Synth(), None, cfg_for(None, ema=0.9), optimizer=opt)
    avg = start
    for t, w in enumerate(opt.trail, start=1):          # d_t = min(0.9, (1 + t)/(10 + t))
        d = min(0.9, (1 + t) / (10 + t))
        avg = [a + (1 - d) * (x - a) for a, x in zip(avg, w)]
    assert len(opt.trail) == 18                          # 3 epochs of 6 batches
    for p, a, last in zip(m.parameters(), avg, opt.trail[-1]):
        torch.testing.assert_close(p.detach(), a, rtol=1e-6, atol=1e-7)
        assert not torch.allclose(p.detach(), last)      # the average, not the last step


def test_ema_validates_the_average_and_resume_is_exact(tmp_path):
    torch.manual_seed(0)
    full = StepNet()
    h_full = fit(full, Synth(), Synth(n=16, seed=1), cfg_for(tmp_path / "full", ema=0.8))
    torch.manual_seed(0)
    part = StepNet()
    fit(part, Synth(), Synth(n=16, seed=1), cfg_for(tmp_path / "part", ema=0.8, max_steps=8))
    assert load_checkpoint(tmp_path / "part" / "ckpt.pt")["ema"] is not None
    torch.manual_seed(7)
    resumed = StepNet()
    h_res = fit(resumed, Synth(), Synth(n=16, seed=1),
                cfg_for(tmp_path / "part", ema=0.8, resume=True))
    a, b = state_of(full), state_of(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["val_acc"] for r in h_full] == [r["val_acc"] for r in h_res]
    best = load_checkpoint(tmp_path / "full" / "best.pt")["model"]
    assert all(torch.equal(best[k], a[k]) for k in a)   # restore_best: the saved average


@pytest.mark.parametrize("kw", [dict(ema=1.0), dict(ema=0.0), dict(ema=0.9, prune=0.5)])
def test_bad_ema_is_one_clear_error(kw):
    with pytest.raises(ValueError, match="ema"):
        TrainConfig(**kw)
