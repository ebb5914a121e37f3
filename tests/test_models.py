"""bimsnn.models: registry, model.pt round trips (format 2 and the recipes' format 1),
initialisation identical to the builders it replaces, load errors, model behaviour.

Symbols: T time, B batch, C inputs, K classes, V vocabulary.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bimsnn import models
from bimsnn.models import (
    SpikingMambaClassifier,
    SpikingMLP,
    build,
    hidden_spikes,
    load,
    save,
    spec,
)
from bimsnn.ssm.mamba import MambaConfig, SpikingMambaNet
from bimsnn.training.online import seq_logits

REPO = Path(__file__).resolve().parent.parent
C, K, V = 6, 3, 11

# One small spec per registered name (test_every_name_is_tested keeps this complete).
SMALL = {
    "spiking_mamba": dict(d_model=8, n_inputs=C, n_classes=K, d_state=4),
    "snn": dict(n_inputs=C, n_classes=K, hidden=8, n_layers=2),
    "cnn": dict(n_inputs=C, n_classes=K, channels=[4, 4]),
    "lstm": dict(n_inputs=C, n_classes=K, hidden=8),
    "lstm_ctc": dict(n_inputs=C, n_classes=K, hidden=8),
    "spiking_mamba_lm": dict(vocab_size=V, d_embed=4, d_model=8, d_state=4),
    "smooth_mamba_lm": dict(vocab_size=V, d_embed=4, d_model=8, d_state=4,
                            readout_input="current"),
    "lstm_lm": dict(vocab_size=V, d_embed=4, hidden=8),
}


def _input(name: str, T: int = 7, B: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if name.endswith("_lm"):
        return torch.randint(0, V, (T, B), generator=g)
    return (torch.rand(T, B, C, generator=g) < 0.4).float()


def _out(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return seq_logits(model, x) if x.dtype == torch.long else model(x)


def _assert_same_state(a: nn.Module | dict, b: nn.Module | dict) -> None:
    sa = a if isinstance(a, dict) else a.state_dict()
    sb = b if isinstance(b, dict) else b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _randomise(model: nn.Module) -> None:
    """Move every parameter off its init, so a load that silently rebuilt would show."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))


def _module(rel: str, name: str):
    """Import a repo file by its path; skip once the file is gone."""
    path = REPO / rel
    if not path.is_file():
        pytest.skip(f"{rel} no longer exists: the old builder it held is gone")
    if name not in sys.modules:  # dataclasses look their module up in sys.modules
        sp = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(sp)
        sys.modules[name] = mod
        sp.loader.exec_module(mod)
    return sys.modules[name]


# ---------------------------------------------------------------- registry, round trips
def test_every_name_is_tested():
    assert set(models.names()) == set(SMALL)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_save_load_round_trip(name, tmp_path):
    torch.manual_seed(0)
    s = spec(name, **SMALL[name])
    model = build(s)
    _randomise(model)
    model.eval()
    pre = {"sfreq": 32.0, "encoder": "adm", "channels": ["Fp1", "F3"]}
    path = save(tmp_path / "model.pt", model, s, preprocessing=pre, threshold=0.25,
                classes=["a", "b", "c"])
    rng = torch.get_rng_state()
    loaded, ck = load(path)
    assert torch.equal(rng, torch.get_rng_state()), "load must not advance the global RNG"
    assert type(loaded) is type(model) and not loaded.training
    _assert_same_state(model, loaded)
    x = _input(name)
    assert torch.equal(_out(model, x), _out(loaded, x))
    assert ck["format"] == 2 and ck["spec"] == s and ck["preprocessing"] == pre
    assert ck["threshold"] == 0.25 and ck["classes"] == ["a", "b", "c"]
    raw = torch.load(path, weights_only=True)                   # the file itself
    assert set(raw) == {"format", "model", "spec", "preprocessing", "threshold", "classes"}


def test_spec_and_build_validate():
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        spec("nope")
    with pytest.raises(TypeError, match="float64"):  # numpy scalars break weights_only
        spec("lstm", n_inputs=3, n_classes=2, hidden=8, dropout=np.float64(0.1))
    with pytest.raises(ValueError, match="unknown model"):
        build({"name": "nope", "kwargs": {}})
    with pytest.raises(ValueError, match="already registered"):
        models.register("snn")(nn.Linear)


def test_save_refuses_what_load_could_not_restore(tmp_path):
    torch.manual_seed(0)
    s = spec("lstm", n_inputs=C, n_classes=K, hidden=8)
    model = build(s)
    with pytest.raises(TypeError, match=r"extra\['threshold'\]"):
        save(tmp_path / "a.pt", model, s, threshold=np.float32(0.5))
    with pytest.raises(ValueError, match="does not match its spec"):
        save(tmp_path / "b.pt", model, spec("lstm", n_inputs=C, n_classes=K, hidden=9))
    with pytest.raises(ValueError, match="own keys"):
        save(tmp_path / "c.pt", model, s, format=3)
    assert not list(tmp_path.iterdir())


def test_load_errors_name_the_file(tmp_path):
    torch.manual_seed(0)
    model = build(spec("lstm", n_inputs=C, n_classes=K, hidden=8))
    cases = {"ckpt.pt": {"format": 1, "model": model.state_dict(), "optimizer": {}},
             "unknown.pt": {"format": 2, "model": model.state_dict(),
                            "spec": {"name": "transformer", "kwargs": {}}},
             "future.pt": {"format": 3, "model": model.state_dict(), "spec": {}},
             "shape.pt": {"format": 2, "model": model.state_dict(),
                          "spec": spec("lstm", n_inputs=C, n_classes=K, hidden=9)},
             "v1_odd.pt": {"format": 1, "model": {}, "spec": {"width": 3}},
             "tensor.pt": torch.zeros(3)}
    match = {"ckpt.pt": "no 'spec'", "unknown.pt": "unknown model 'transformer'",
             "future.pt": "format 3", "shape.pt": "shapes differ",
             "v1_odd.pt": "unrecognised format-1 spec", "tensor.pt": "not a bimsnn checkpoint"}
    for fname, obj in cases.items():
        torch.save(obj, tmp_path / fname)
        with pytest.raises(ValueError, match=match[fname]) as e:
            load(tmp_path / fname)
        assert fname in str(e.value)


# ---------------------------------------------------------------- format 1 (recipes today)
def _v1_file(tmp_path, fname: str, old_model: nn.Module, **fields) -> Path:
    """A model.pt as the recipes' writers produce it (format 1, weights on CPU)."""
    state = {k: v.cpu() for k, v in old_model.state_dict().items()}
    torch.save({"format": 1, "model": state, **fields}, tmp_path / fname)
    return tmp_path / fname


def test_format1_classifier_recipes(tmp_path):
    """The seizure / ECG recipes' old writer: {"format": 1, "model", "spec": {"name",
    "kwargs"}, "preprocessing", extras}."""
    for name in ("spiking_mamba", "snn", "cnn", "lstm"):
        old_spec = spec(name, **SMALL[name])
        torch.manual_seed(0)
        old = build(old_spec)
        _randomise(old)
        path = _v1_file(tmp_path, f"{name}.pt", old, spec=old_spec,
                        preprocessing={"kind": "chbmit"}, threshold=0.4, rule="hybrid")
        new, ck = load(path)
        _assert_same_state(old, new)
        x = _input(name)
        assert torch.equal(_out(old.eval(), x), _out(new, x))
        assert ck["spec"] == old_spec and ck["preprocessing"] == {"kind": "chbmit"}
        assert ck["threshold"] == 0.4 and ck["rule"] == "hybrid"


@pytest.mark.parametrize("which", ["keyword_spotting", "speech_recognition"])
def test_format1_speech_recipes(which, tmp_path):
    """KWS / ASR writers: spec = MambaConfig kwargs, input description in "features"."""
    mspec = {"d_model": 8, "n_inputs": C, "n_classes": K, "n_layers": 1, "d_state": 4,
             "readout": "mean_mem" if which == "keyword_spotting" else "li"}
    if which == "speech_recognition":
        mspec["readout_beta"] = 0.5
    feats = {"n_mels": 40, "norm": "global", "levels": 4, "delta": None, "stack": 2}
    torch.manual_seed(0)
    old = SpikingMambaNet(MambaConfig(**mspec))        # the recipes' build_model(spec)
    _randomise(old)
    path = _v1_file(tmp_path, "m.pt", old, spec=mspec, features=feats, classes=["x"] * K)
    new, ck = load(path)
    assert isinstance(new, SpikingMambaNet) and new.cfg.readout == mspec["readout"]
    _assert_same_state(old, new)
    x = _input("spiking_mamba")
    assert torch.equal(_out(old.eval(), x), _out(new, x))
    assert ck["spec"] == spec("spiking_mamba", **mspec)
    assert ck["preprocessing"] == feats and ck["features"] == feats


@pytest.mark.parametrize("kind", ["mamba", "lstm"])
def test_format1_language_modeling(kind, tmp_path):
    """LM writer: spec {"model", "vocab_size", "d_embed", "d_model", ...}, vocab + level."""
    old_spec = {"model": kind, "vocab_size": V, "d_embed": 4, "d_model": 8, "n_layers": 1,
                "d_state": 4, "beta": 0.8}
    torch.manual_seed(0)
    old = build(models.spec_from_v1(old_spec))
    _randomise(old)
    vocab = {"itos": ["<unk>", "a", "b"]}
    path = _v1_file(tmp_path, "lm.pt", old, spec=old_spec, vocab=vocab, level="char")
    new, ck = load(path)
    _assert_same_state(old, new)
    x = _input("spiking_mamba_lm")
    assert torch.equal(_out(old.eval(), x), _out(new, x))
    assert ck["preprocessing"] == {"vocab": vocab, "level": "char"}
    if kind == "mamba":
        assert new.net.cfg.beta == 0.8


# ---------------------------------------------------------------- same init as the old builders
def _same_build(old_fn, new_spec: dict, seed: int = 3) -> tuple[nn.Module, nn.Module]:
    """Build both under one seed; their weights and the RNG state after must be equal."""
    torch.manual_seed(seed)
    old = old_fn()
    rng_old = torch.get_rng_state()
    torch.manual_seed(seed)
    new = build(new_spec)
    assert torch.equal(rng_old, torch.get_rng_state()), "RNG stream differs"
    _assert_same_state(old, new)
    return old, new


@pytest.mark.parametrize("name", ["spiking_mamba", "cnn", "lstm"])
def test_init_identical_to_frozen_recipe_builder(name):
    """The old recipes/_common.build_model, frozen here with library classes (this stays
    meaningful after the recipes switch to bimsnn.models)."""
    from bimsnn.models.baselines import CNN1d, LSTMClassifier

    kw = {"spiking_mamba": dict(d_model=16, n_inputs=C, n_classes=K, n_layers=1, d_state=8,
                                expand=2, beta=0.9, readout_beta=0.9, readout="li"),
          "cnn": dict(n_inputs=C, n_classes=K, channels=[16, 16, 16]),
          "lstm": dict(n_inputs=C, n_classes=K, hidden=32)}[name]

    def old():
        if name == "spiking_mamba":
            m = SpikingMambaNet(MambaConfig(**kw))
            nn.init.zeros_(m.out_fc.bias)
            return m
        if name == "cnn":
            return CNN1d(C, K, channels=tuple(kw["channels"]))
        return LSTMClassifier(**kw)
    _same_build(old, spec(name, **kw))




@pytest.mark.parametrize("name", ["snn", "spiking_mamba", "spiking_mamba_lm"])
def test_readout_bias_zeroing_draws_no_random_numbers(name):
    """zero_readout_bias changes the bias only: other tensors and the RNG after are equal."""
    kw = dict(SMALL[name])
    torch.manual_seed(0)
    a = build(spec(name, **kw, zero_readout_bias=False))
    rng = torch.get_rng_state()
    torch.manual_seed(0)
    b = build(spec(name, **kw))
    assert torch.equal(rng, torch.get_rng_state())
    sa, sb = a.state_dict(), b.state_dict()
    bias = [k for k in sa if k.endswith("out_fc.bias")]
    assert len(bias) == 1 and not torch.equal(sa[bias[0]], sb[bias[0]])
    assert torch.equal(sb[bias[0]], torch.zeros_like(sb[bias[0]]))
    assert all(torch.equal(sa[k], sb[k]) for k in sa if k != bias[0])


# ---------------------------------------------------------------- model behaviour
def test_spiking_mlp_fused_equals_step_loop_forward_and_grad():
    """forward_seq (fused multi-step LIF, BPTT) and the step loop (online rules) agree in
    float64 on logits and on every parameter's gradient."""
    torch.manual_seed(0)
    net = SpikingMLP(C, K, hidden=8, n_layers=2, zero_readout_bias=False).double()
    x = (torch.rand(12, 3, C, dtype=torch.float64) < 0.5).double()
    fused, state = net.forward_seq(x)
    g_fused = torch.autograd.grad(fused.square().sum(), list(net.parameters()))
    st, outs = net.init_state(3), []
    for t in range(x.shape[0]):
        z, st = net.step(x[t], st)
        outs.append(z)
    loop = torch.stack(outs)
    g_loop = torch.autograd.grad(loop.square().sum(), list(net.parameters()))
    torch.testing.assert_close(fused, loop, rtol=1e-12, atol=1e-12)
    for a, b in zip(g_fused, g_loop):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    for a, b in zip(state.mems + (state.out,), st.mems + (st.out,)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # streaming in two chunks equals one pass
    first, mid = net.forward_seq(x[:5])
    second, _ = net.forward_seq(x[5:], mid)
    torch.testing.assert_close(torch.cat([first, second]), fused, rtol=1e-12, atol=1e-12)


def test_window_readout():
    torch.manual_seed(0)
    net = build(spec("spiking_mamba", **SMALL["spiking_mamba"], window=3)).eval()
    x = _input("spiking_mamba", T=9)
    with torch.no_grad():
        assert torch.equal(net(x), net.forward_seq(x)[0][-3:].mean(0))
    assert isinstance(net, SpikingMambaClassifier) and isinstance(net, SpikingMambaNet)
    with pytest.raises(ValueError, match="window"):
        build(spec("spiking_mamba", **SMALL["spiking_mamba"], window=0))


def test_hidden_spikes():
    torch.manual_seed(0)
    net = build(spec("snn", **SMALL["snn"]))
    x = (torch.rand(10, C) < 0.5).float()
    with torch.no_grad():                              # weights that make the LIFs fire
        for layer in net.layers:
            layer["fc"].weight.fill_(0.6)
    s = hidden_spikes(net, x)
    assert s.shape == (10, 8 + 8) and set(s.unique().tolist()) <= {0.0, 1.0} and s.sum() > 0
    assert net.training                                # mode restored
    assert hidden_spikes(build(spec("cnn", **SMALL["cnn"])), x) is None
    # the recorded spikes are the step loop's: layer 1 from the first hidden layer
    with torch.no_grad():
        spk = net.layers[0]["lif"].multi_step(net.layers[0]["fc"](x[:, None]))[0][:, 0]
    assert torch.equal(s[:, :8], spk)
