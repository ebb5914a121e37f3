"""Language models (bimsnn.models.lm) and the readout option they use (issue 13):
SpikingMambaNet's ``readout_input``, the non-spiking twin, the parameter-matched LSTM, and
the recipe's comparison run.

Symbols: T time, B batch, C inputs, D model width, K classes, V vocabulary.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from bimsnn.models.lm import SmoothLeaky, SmoothMambaLM, SpikingMambaLM
from bimsnn.ssm.mamba import MambaConfig, SpikingMambaNet
from bimsnn.tasks import lm as task

CFG = dict(d_model=8, n_inputs=3, n_classes=5, d_state=4)


def _net(seed: int, **kw) -> SpikingMambaNet:
    torch.manual_seed(seed)
    return SpikingMambaNet(MambaConfig(**{**CFG, **kw})).double()


def _x(T: int = 12, B: int = 3, C: int = 3) -> torch.Tensor:
    torch.manual_seed(100)
    return (torch.rand(T, B, C, dtype=torch.float64) < 0.5).double()


def _old_forward_seq(net: SpikingMambaNet, x: torch.Tensor) -> torch.Tensor:
    """SpikingMambaNet's path before ``readout_input`` existed, composed from its modules:
    in_fc → in_lif → each block's spikes → out_fc(spikes) → out_li membrane = logits."""
    s, _ = net.in_lif.multi_step(net.in_fc(x))
    for block in net.blocks:
        s, _ = block(s)
    _, mem = net.out_li.multi_step(net.out_fc(s))
    return mem


def _grads(net, x) -> dict[str, torch.Tensor]:
    net.zero_grad()
    net.forward_seq(x)[0].square().sum().backward()
    return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("n_layers,readout", [(1, "li"), (2, "li"), (1, "mean_mem")])
def test_default_readout_input_is_the_old_spike_readout(n_layers, readout):
    """Default config (no readout_input) = explicit "spikes" = the old path recomposed
    from the same seed's modules: outputs bit-equal, gradients equal."""
    x = _x()
    default = _net(0, n_layers=n_layers, readout=readout)
    spikes = _net(0, n_layers=n_layers, readout=readout, readout_input="spikes")
    assert default.cfg.readout_input == "spikes"
    out = default.forward_seq(x)[0]
    assert torch.equal(out, spikes.forward_seq(x)[0])
    if readout == "li":
        assert torch.equal(out, _old_forward_seq(_net(0, n_layers=n_layers), x))
    g1, g2 = _grads(default, x), _grads(spikes, x)
    assert g1.keys() == g2.keys() and all(torch.equal(g1[k], g2[k]) for k in g1)


@pytest.mark.parametrize("readout_input", ["spikes", "membrane", "current"])
def test_readout_input_feeds_out_fc_what_it_names(readout_input):
    """logits = out_li(out_fc(f)) with f the last block's spikes / membrane / current,
    recomputed by hand from forward_full; the streaming step gives the same logits."""
    x = _x()
    net = _net(1, n_layers=2, readout_input=readout_input, readout_beta=0.0)
    logits, _ = net.forward_seq(x)
    s, _ = net.in_lif.multi_step(net.in_fc(x))
    s, _ = net.blocks[0](s)
    spk, mem, cur, _ = net.blocks[1].forward_full(s)
    f = {"spikes": spk, "membrane": mem, "current": cur}[readout_input]
    torch.testing.assert_close(logits, net.out_fc(f), rtol=0, atol=1e-12)
    if readout_input != "spikes":
        assert not torch.equal(f, spk) and not torch.equal(logits, net.out_fc(spk))
    state, steps = None, []
    for t in range(x.shape[0]):
        out, state = net.step(x[t], state)
        steps.append(out)
    torch.testing.assert_close(torch.stack(steps), logits, rtol=1e-9, atol=1e-10)


def test_current_readout_bypasses_only_the_last_lif():
    """With readout_input="current" the last block's LIF is off the path to the logits:
    moving its threshold changes nothing, while the first layers still learn (finite,
    non-zero gradients); with "spikes" the same move changes the logits."""
    x = _x(T=20)
    for readout_input, moves in (("current", False), ("spikes", True)):
        net = _net(2, readout_input=readout_input)
        before = net.forward_seq(x)[0]
        net.blocks[-1].lif.threshold.fill_(0.3)
        after = net.forward_seq(x)[0]
        assert (not torch.equal(before, after)) == moves, readout_input
    g = _grads(_net(2, readout_input="current"), x)
    for name in ("in_fc.weight", "blocks.0.in_proj.weight", "blocks.0.ssm.A_log",
                 "out_fc.weight"):
        assert torch.isfinite(g[name]).all() and g[name].abs().sum() > 0, name


def test_unknown_readout_input_is_refused():
    with pytest.raises(ValueError, match="readout_input"):
        MambaConfig(**CFG, readout_input="spike")


# ---------------------------------------------------------------------------- the smooth twin
def test_twin_has_the_spiking_models_parameters():
    """Same names, shapes, count, and (same seed) the same initial values; every spiking LIF
    is a SmoothLeaky, the readout integrator is untouched."""
    kw = dict(d_model=8, n_layers=2, d_state=4, readout_input="current")
    torch.manual_seed(0)
    spk = SpikingMambaLM(11, 4, **kw)
    torch.manual_seed(0)
    twin = SmoothMambaLM(11, 4, **kw)
    a, b = spk.state_dict(), twin.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    count = [sum(p.numel() for p in m.parameters()) for m in (spk, twin)]
    assert count[0] == count[1] > 0
    lifs = [twin.net.in_lif, *(blk.lif for blk in twin.net.blocks)]
    assert all(isinstance(m, SmoothLeaky) for m in lifs)
    assert not isinstance(twin.net.out_li, SmoothLeaky)
    spec = task.lm_spec("smooth", 11, d_embed=4, **kw)
    assert task.n_params(spec) == count[0]


def test_twin_passes_smooth_values_and_streams_like_it_runs():
    """The twin's layers output σ(U − U_thr) ∈ (0, 1), not spikes; its multi-step path and
    its per-step path agree on logits and gradients."""
    torch.manual_seed(3)
    twin = SmoothMambaLM(7, 4, d_model=8, d_state=4, readout_input="spikes").double()
    ids = torch.randint(0, 7, (10, 2))
    s, mem = twin.net.in_lif.multi_step(twin.net.in_fc(twin.embed(ids).double()))
    assert ((s > 0) & (s < 1)).all() and not torch.equal(s, s.round())
    sg = twin.net.in_lif.spike_grad
    torch.testing.assert_close(s, sg.primitive(mem - 1.0))
    logits, _ = twin.forward_seq(ids)
    (g_seq,) = torch.autograd.grad(logits.square().sum(), twin.net.in_fc.weight)
    state, steps = None, []
    for t in range(ids.shape[0]):
        out, state = twin.step(ids[t], state)
        steps.append(out)
    steps = torch.stack(steps)
    (g_step,) = torch.autograd.grad(steps.square().sum(), twin.net.in_fc.weight)
    torch.testing.assert_close(steps, logits, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(g_step, g_seq, rtol=1e-7, atol=1e-9)


def test_lstm_hidden_matches_the_parameter_count():
    """lstm_hidden_for's closed form is the built model's count, and it picks the nearest."""
    spiking = task.n_params(task.lm_spec("mamba", 50, d_embed=8, d_model=24, d_state=4))
    for layers in (1, 2):
        h = task.lstm_hidden_for(spiking, 50, 8, layers)
        counts = {d: task.n_params(task.lm_spec("lstm", 50, d_embed=8, n_layers=layers,
                                                lstm_hidden=h + d)) for d in (-1, 0, 1)}
        assert abs(counts[0] - spiking) <= min(abs(counts[-1] - spiking),
                                               abs(counts[1] - spiking))
        assert abs(counts[0] - spiking) / spiking < 0.03


# ---------------------------------------------------------------------------- the recipe
def test_recipe_trains_the_spiking_model_and_the_lstm_for_the_same_steps(recipe, tmp_path):
    lm = recipe("language_modeling")
    res = lm.main(["--out", str(tmp_path), "--epochs", "2", "--max-train-tokens", "1200",
                   "--max-eval-tokens", "300", "--seq-len", "16", "--d-model", "16",
                   "--d-embed", "8", "--d-state", "4", "--compare", "smooth,lstm",
                   "--batch-size", "16", "--no-progress"])
    saved = json.loads((tmp_path / "metrics.json").read_text())
    rows = saved["comparison"]
    assert list(rows) == ["mamba", "smooth", "lstm"]
    assert saved["model"]["kwargs"]["readout_input"] == "current"
    assert rows["mamba"]["params"] == rows["smooth"]["params"] == saved["params"]
    assert abs(rows["lstm"]["params"] - saved["params"]) / saved["params"] < 0.03
    for name, r in rows.items():
        assert math.isfinite(r["bpc"]) and r["train_seconds"] > 0, name
        assert saved["bpc_ratio"].get(name, 1.0) == pytest.approx(
            rows["mamba"]["bpc"] / r["bpc"])
    assert saved["train_seconds"] > 0 and saved["peak_rss_mb"] > 0
    assert res["bpc"] == rows["mamba"]["bpc"]
    # same TrainConfig → same number of optimizer steps for every model
    steps = {n: torch.load(tmp_path / ("" if n == "mamba" else f"compare/{n}") / "ckpt.pt",
                           weights_only=True)["progress"]["global_step"] for n in rows}
    assert set(steps.values()) == {2 * math.ceil(((1200 - 1) // 16) / 16)}, steps  # 2 epochs
    report = (tmp_path / "report.md").read_text()
    assert all(f"| {n} |" in report for n in rows)

