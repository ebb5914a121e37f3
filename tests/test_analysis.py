"""bimsnn.analysis: energy counts, sparsity, memory measurement and the STDP window fit."""

import math

import matplotlib
import numpy as np
import pytest
import snntorch as snn
import torch
from torch import nn

from bimsnn import Leaky
from bimsnn.analysis.energy import E_AC_PJ, E_MAC_PJ, energy_report, spike_sparsity, synops
from bimsnn.analysis.memory import (
    MemoryConfig,
    make_data,
    make_model,
    measure,
    memory_vs_T,
    plot_memory,
    train_once,
)
from bimsnn.analysis.plasticity import (
    PairProtocol,
    fit_window,
    network_window,
    pair_window,
    plot_window,
    stdp_window,
)
from bimsnn.ssm.mamba import MambaConfig, SpikingMambaNet
from bimsnn.surrogate import ATan

matplotlib.use("Agg")


def _step_loop(net, x):
    """Per-step forward of an init_hidden Sequential: x (T, B, C) → stacked outputs."""
    return torch.stack([net(x_t) for x_t in x])


def _layer(n_in=4, n_out=3, **lif):
    return nn.Sequential(nn.Linear(n_in, n_out, bias=False), snn.Leaky(init_hidden=True, **lif))


# ------------------------------------------------------------------------------ energy
def test_synops_of_known_spikes_and_fan_out():
    x = torch.zeros(5, 2, 4)
    x[0, 0, 0] = x[1, 0, 3] = x[4, 1, 2] = 1.0          # 3 input spikes over B = 2 samples
    rep = energy_report(_layer(beta=0.9), x, _step_loop)
    row = rep.layers.iloc[0]
    assert row["input"] == "spikes" and row["fan_out"] == 3
    assert row["synops"] == pytest.approx(3 * 3 / 2)     # spikes · fan-out, per sample
    assert row["macs"] == 0
    assert row["ann_macs"] == pytest.approx(5 * 4 * 3)  # T · N · M per sample
    assert rep.totals["energy_nJ"] == pytest.approx(4.5 * E_AC_PJ / 1e3)
    assert rep.totals["ann_energy_nJ"] == pytest.approx(60 * E_MAC_PJ / 1e3)
    assert rep.totals["ann_over_snn"] == pytest.approx(60 * 4.6 / (4.5 * 0.9))
    assert synops(x, 3) == 9
    assert "| layer |" in rep.to_markdown() and "SynOps" in rep.to_markdown()


def test_dense_and_graded_inputs_count_as_macs_signed_spikes_as_synops():
    g = torch.Generator().manual_seed(0)
    dense = torch.rand(4, 3, 4, generator=g)
    rep = energy_report(_layer(beta=0.9), dense, _step_loop)
    assert rep.layers.loc[0, "input"] == "dense"
    assert rep.layers.loc[0, "synops"] == 0
    assert rep.layers.loc[0, "macs"] == pytest.approx(4 * 4 * 3)
    assert rep.totals["ann_over_snn"] == pytest.approx(1.0)
    signed = torch.tensor([1.0, -1.0, 0.0, 0.0]).repeat(4, 3, 1)
    assert energy_report(_layer(beta=0.9), signed, _step_loop).layers.loc[0, "input"] == "spikes"
    assert energy_report(_layer(beta=0.9), 2 * signed, _step_loop).layers.loc[0, "input"] == "dense"


def _identity_layer():
    """Linear = identity, β = 0, zero reset: the Leaky spikes exactly where x > θ = 0.5."""
    fc = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        fc.weight.copy_(torch.eye(3))
    return fc, Leaky(beta=0.0, threshold=0.5, reset_mechanism="zero")


def test_sparsity_known_spikes_per_step_and_multi_step():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(20, 4, 3, generator=g)
    expected = float((x > 0.5).float().mean())
    fc, lif = _identity_layer()
    net = nn.Sequential(fc, lif)

    def per_step(net, x):
        mem = None
        for x_t in x:
            _, mem = lif(fc(x_t), mem)

    def fused(net, x):
        lif.multi_step(fc(x))

    a, b = spike_sparsity(net, x, per_step), spike_sparsity(net, x, fused)
    for df in (a, b):
        assert df.loc[0, "rate"] == pytest.approx(expected)
        assert df.loc[0, "sparsity"] == pytest.approx(1 - expected)
        assert df.loc[0, "neurons"] == 3 and df.loc[0, "steps"] == 20
        assert df.loc[0, "spikes"] == pytest.approx(float((x > 0.5).sum()) / 4)
    # everything is restored: no instance patch, no hooks
    assert "multi_step" not in vars(lif) and not lif._forward_hooks and not fc._forward_hooks


def test_conv1d_counts():
    conv = nn.Conv1d(4, 6, 3, groups=2)
    x = torch.rand(2, 4, 10)
    rep = energy_report(conv, x, lambda m, x: m(x), batch_dim=0)
    row = rep.layers.iloc[0]
    assert row["macs"] == pytest.approx(6 * 8 * (4 // 2) * 3)   # numel(out)/B · C_in/g · k
    spikes = (x > 0.5).float()
    row = energy_report(conv, spikes, lambda m, x: m(x), batch_dim=0).layers.iloc[0]
    assert row["synops"] == pytest.approx(float(spikes.sum()) / 2 * (6 // 2) * 3)


def test_mamba_net_parallel_equals_streaming_and_ssm_count():
    torch.manual_seed(0)
    cfg = MambaConfig(d_model=8, n_inputs=3, n_classes=2, d_state=4)
    net = SpikingMambaNet(cfg)
    x = (torch.rand(12, 2, 3, generator=torch.Generator().manual_seed(2)) < 0.4).float()

    def stream(net, x):
        st = net.init_state(x.shape[1])
        for x_t in x:
            _, st = net.step(x_t, st)

    par, st = energy_report(net, x), energy_report(net, x, stream)
    assert par.totals == pytest.approx(st.totals)
    rows = par.layers.set_index("layer")
    assert rows.loc["in_fc", "input"] == "spikes" and rows.loc["out_fc", "input"] == "spikes"
    assert rows.loc["blocks.0.ssm", "macs"] == pytest.approx(12 * cfg.d_inner * (4 * 4 + 1))
    assert rows.loc["blocks.0.out_proj", "input"] == "dense"
    assert set(par.neurons["layer"]) == {"in_lif", "blocks.0.lif", "out_li"}
    assert "multi_step" not in vars(net.in_lif) and "step" not in vars(net.blocks[0].ssm)


# ------------------------------------------------------------------------------ memory
def test_graph_bytes_grow_with_T_for_bptt_only():
    cfg = MemoryConfig(width=16, batch=2)
    df = memory_vs_T([10, 40], ("bptt", "rtrl"), cfg, subprocess_=False)
    g = df.set_index(["method", "T"])["graph_mb"]
    assert g[("bptt", 40)] / g[("bptt", 10)] == pytest.approx(4.0, rel=0.1)
    assert g[("rtrl", 40)] == pytest.approx(g[("rtrl", 10)])
    assert g[("rtrl", 40)] < g[("bptt", 40)] / 10
    ax = plot_memory(df, y="graph_mb")
    assert len(ax.get_lines()) == 2


@pytest.mark.parametrize("model", ["mlp", "mamba"])
def test_chunked_graph_bytes_are_flat_in_T_and_follow_K(model):
    """*_chunk methods: the saved-for-backward peak is one chunk's graph, whatever T, and
    grows with K; the pass writes finite gradients."""
    g = {}
    for K in (8, 32):
        cfg = MemoryConfig(model=model, width=16, batch=2, chunk=K)
        df = memory_vs_T([64, 256], ("rtrl_chunk", "hybrid_chunk"), cfg, subprocess_=False)
        g[K] = df.set_index(["method", "T"])["graph_mb"]
        for m in ("rtrl_chunk", "hybrid_chunk"):
            assert g[K][(m, 256)] == pytest.approx(g[K][(m, 64)], rel=0.05)
    assert g[32][("rtrl_chunk", 256)] > 2 * g[8][("rtrl_chunk", 256)]
    net = make_model(MemoryConfig(model=model, width=16, batch=2))
    x, y = make_data(MemoryConfig(model=model, width=16, batch=2), 40)
    train_once("rtrl_chunk", net, x, y, chunk=16)
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(gr).all() for gr in grads)


@pytest.mark.slow
def test_measure_in_fresh_subprocess():
    rec = measure("rtrl", 20, MemoryConfig(width=8, batch=1))
    assert rec["method"] == "rtrl" and rec["T"] == 20
    assert math.isfinite(rec["net_mb"]) and rec["graph_mb"] > 0


# ------------------------------------------------------------------------------ plasticity
def test_fit_recovers_known_window_from_noisy_samples():
    rng = np.random.default_rng(0)
    dts = np.arange(-30, 31)
    true = (0.8, 12.0, 0.5, 6.0)
    y = stdp_window(dts, *true) + rng.normal(0, 0.02, dts.size)
    fit = fit_window(dts, y)
    assert fit.A_plus == pytest.approx(0.8, rel=0.1) and fit.tau_plus == pytest.approx(12, rel=0.1)
    assert fit.A_minus == pytest.approx(0.5, rel=0.1) and fit.tau_minus == pytest.approx(6, rel=0.15)
    assert fit.r2 > 0.97
    assert fit_window(dts, rng.normal(0, 1, dts.size)).r2 < 0.5    # noise does not fit


def test_pair_window_matches_closed_form_without_penalty():
    # λ = 0: only the reward at t_post; control gradient is 0. Exactly, for Δt ≥ 0:
    # Δw = σ'(I_T + w0 β^Δt − θ) β^Δt, and 0 for Δt < 0 (causality).
    cfg = PairProtocol(lam=0.0, max_dt=8, T=30)
    dts, dw = pair_window(cfg)
    b = float(np.float32(cfg.beta)) ** dts[dts >= 0]      # the Leaky keeps β as float32
    u = torch.tensor(cfg.teacher + cfg.w0 * b - cfg.threshold, dtype=torch.float64)
    expected = ATan(cfg.alpha).derivative(u).numpy() * b
    np.testing.assert_allclose(dw[dts >= 0], expected, rtol=1e-12)
    assert np.all(dw[dts < 0] == 0)


def test_pair_window_rtrl_equals_bptt_and_ltd_needs_penalty_and_subtract_reset():
    cfg = PairProtocol(max_dt=8, T=40)
    dts, bptt = pair_window(cfg, "bptt")
    _, rtrl = pair_window(cfg, "rtrl")
    np.testing.assert_allclose(rtrl, bptt, rtol=0, atol=1e-12)
    assert bptt[dts == 0][0] > 0 and np.all(bptt[dts < 0] < 0)       # both lobes
    assert np.all(np.diff(bptt[dts < 0]) < 0)                       # LTD deepens towards 0⁻
    _, zero = pair_window(PairProtocol(max_dt=8, T=40, reset="zero"))
    assert np.all(zero[dts < 0] == 0) and zero[dts == 0][0] > 0
    with pytest.raises(ValueError):
        pair_window(cfg, "stdp")


def test_network_window_has_both_lobes():
    dts, mean, sem = network_window(PairProtocol(max_dt=6, T=40), trials=96, chunk=48, seed=3)
    assert mean.shape == sem.shape == dts.shape
    assert mean[dts == 0][0] > 3 * sem[dts == 0][0]
    assert mean[dts == -1][0] < -3 * sem[dts == -1][0]
    fit = fit_window(dts, mean)
    ax = plot_window(dts, mean, fit, sem)
    assert fit.A_plus > 0 and fit.A_minus > 0 and len(ax.get_lines()) >= 2
