"""Tests for bimsnn.ssm.mamba: SelectiveSSM, SpikingMamba block, SpikingMambaNet.

Symbols: T time, B batch, C input channels, D model width, E expanded width, N state size,
K classes. Every test builds fresh modules under its own seed.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bimsnn.neurons import Leaky
from bimsnn.ssm.mamba import (
    MambaBlockState,
    MambaConfig,
    SelectiveSSM,
    SpikingMamba,
    SpikingMambaNet,
)

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread is fastest, and on a busy machine two threads
    spin-wait on each other (measured 10-100x slower). Restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _spikes(shape, p, gen, dtype=torch.float32):
    return (torch.rand(shape, generator=gen) < p).to(dtype)


def _cfg(**kw):
    base = dict(d_model=8, n_inputs=5, n_classes=3, n_layers=2, d_state=4, beta=0.8)
    base.update(kw)
    return MambaConfig(**base)


def _grads(module):
    return {n: p.grad.clone() for n, p in module.named_parameters()}


# ------------------------------------------------------------------------------- config
def test_config_derived_fields():
    cfg = MambaConfig(d_model=40, n_inputs=3, n_classes=2, expand=3)
    assert cfg.d_inner == 120 and cfg.dt_rank == math.ceil(40 / 16) == 3
    assert MambaConfig(d_model=8, n_inputs=1, n_classes=2, dt_rank=5).dt_rank == 5


@pytest.mark.parametrize("bad", [
    dict(d_model=0), dict(n_inputs=-1), dict(n_classes=2.5), dict(n_layers=0), dict(d_conv=0),
    dict(dt_rank="big"), dict(dt_rank=0), dict(dt_min=0.2, dt_max=0.1), dict(dt_min=0.0),
    dict(beta=1.5), dict(readout_beta=-0.1), dict(threshold=0.0), dict(readout="max"),
    dict(norm="batch"),
])
def test_config_rejects_bad_values(bad):
    kw = dict(d_model=8, n_inputs=3, n_classes=2)
    kw.update(bad)
    with pytest.raises(ValueError, match=next(iter(bad))):
        MambaConfig(**kw)


# ---------------------------------------------------------------------------- SelectiveSSM
def test_selective_ssm_init_follows_mamba():
    torch.manual_seed(0)
    E, N, R, dt_min, dt_max = 256, 6, 3, 1e-3, 1e-1
    ssm = SelectiveSSM(E, N, R, dt_min=dt_min, dt_max=dt_max)
    assert ssm.x_proj.weight.shape == (R + 2 * N, E) and ssm.x_proj.bias is None
    assert ssm.dt_proj.weight.shape == (E, R) and ssm.dt_proj.bias.shape == (E,)
    torch.testing.assert_close(ssm.A_log, torch.log(torch.arange(1.0, N + 1)).expand(E, N))
    torch.testing.assert_close(ssm.D, torch.ones(E))
    dt = F.softplus(ssm.dt_proj.bias.double())  # inverse softplus undone
    assert dt.min() >= dt_min * (1 - 1e-5) and dt.max() <= dt_max * (1 + 1e-5)
    assert dt.min() < 3 * dt_min and dt.max() > dt_max / 3  # log-uniform covers the range
    assert SelectiveSSM(64, N).dt_rank == 2  # default ⌈E/32⌉ = ⌈d_model/16⌉ at expand 2


def _ssm_eq12(ssm, u, h0):
    """Eq. 1-2 written out independently: split (Δ_low, B, C), softplus, exp(ΔA), loop."""
    R, N = ssm.dt_rank, ssm.d_state
    dbc = u @ ssm.x_proj.weight.T
    dt_low, Bm, Cm = dbc[..., :R], dbc[..., R:R + N], dbc[..., R + N:]
    delta = F.softplus(dt_low @ ssm.dt_proj.weight.T + ssm.dt_proj.bias)   # (T, B, E)
    A = -torch.exp(ssm.A_log)
    h, ys = h0, []
    for t in range(u.shape[0]):
        Abar = torch.exp(delta[t, :, :, None] * A)                          # (B, E, N)
        h = Abar * h + (delta[t] * u[t])[:, :, None] * Bm[t, :, None, :]
        ys.append(torch.einsum("ben,bn->be", h, Cm[t]) + ssm.D * u[t])
    return torch.stack(ys), h


@pytest.mark.parametrize("path", ["forward", "step"])
def test_selective_ssm_matches_eq12_forward_and_grads(path):
    torch.manual_seed(1)
    ssm = SelectiveSSM(6, 3, 2, dt_min=0.05, dt_max=0.5).to(F64)
    u = torch.randn(9, 2, 6, dtype=F64, requires_grad=True)
    h0 = torch.randn(2, 6, 3, dtype=F64, requires_grad=True)
    w = torch.randn(9, 2, 6, dtype=F64)
    if path == "forward":
        y, h = ssm(u, h0)
    else:
        h, ys = h0, []
        for t in range(9):
            y_t, h = ssm.step(u[t], h)
            ys.append(y_t)
        y = torch.stack(ys)
    ((y * w).sum() + h.square().sum()).backward()
    got = [u.grad.clone(), h0.grad.clone(), *_grads(ssm).values()]
    u.grad = h0.grad = None
    ssm.zero_grad()
    y_ref, h_ref = _ssm_eq12(ssm, u, h0)
    ((y_ref * w).sum() + h_ref.square().sum()).backward()
    torch.testing.assert_close(y, y_ref, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(h, h_ref, atol=1e-10, rtol=1e-10)
    want = [u.grad, h0.grad, *_grads(ssm).values()]
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r, atol=1e-10, rtol=1e-9)


# ------------------------------------------------------------------ streaming == forward
def _block_stream(block, x, state):
    spk = []
    for x_t in x:
        s_t, state = block.step(x_t, state)
        spk.append(s_t)
    return torch.stack(spk), state


@pytest.mark.parametrize("norm,residual", [("none", True), ("rms", False), ("layer", True)])
def test_block_streaming_equals_forward_float64(norm, residual):
    torch.manual_seed(2)
    gen = torch.Generator().manual_seed(3)
    block = SpikingMamba(_cfg(d_model=12, norm=norm, residual=residual, threshold=0.5)).to(F64)
    x = _spikes((40, 3, 12), 0.5, gen, F64)
    w = torch.randn(40, 3, 12, dtype=F64, generator=gen)
    spk_f, st_f = block(x)
    assert 0 < spk_f.mean() < 1  # the block is active, so the comparison means something
    ((spk_f * w).sum() + st_f.mem.sum() + st_f.h.sum()).backward()
    g_f = _grads(block)
    block.zero_grad()
    spk_s, st_s = _block_stream(block, x, block.init_state(3))
    ((spk_s * w).sum() + st_s.mem.sum() + st_s.h.sum()).backward()
    assert torch.equal(spk_f, spk_s)
    for a, b in zip(st_f, st_s):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=0)
    for n, g in _grads(block).items():
        assert g.abs().sum() > 0, n
        torch.testing.assert_close(g, g_f[n], atol=1e-9, rtol=1e-9, msg=n)


def test_block_chunked_forward_carries_state():
    torch.manual_seed(4)
    gen = torch.Generator().manual_seed(5)
    block = SpikingMamba(_cfg(d_conv=3)).to(F64)
    x = _spikes((30, 2, 8), 0.4, gen, F64)
    spk, st = block(x)
    spk1, st1 = block(x[:11])
    spk2, st2 = block(x[11:], st1)
    assert torch.equal(spk, torch.cat([spk1, spk2]))
    for a, b in zip(st, st2):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def _net_stream(net, x):
    state, out = net.init_state(x.shape[1]), []
    for x_t in x:
        l_t, state = net.step(x_t, state)
        out.append(l_t)
    return torch.stack(out), state


@pytest.mark.parametrize("readout", ["li", "mean_mem"])
def test_net_streaming_equals_forward_float64(readout):
    torch.manual_seed(6)
    gen = torch.Generator().manual_seed(7)
    net = SpikingMambaNet(_cfg(readout=readout, threshold=0.5)).to(F64)
    x = _spikes((35, 4, 5), 0.5, gen, F64)
    w = torch.randn(35, 4, 3, dtype=F64, generator=gen)
    seq, _ = net.forward_seq(x)
    torch.testing.assert_close(net(x), seq[-1], atol=0, rtol=0)
    (seq * w).sum().backward()
    g_f = _grads(net)
    net.zero_grad()
    seq_s, state = _net_stream(net, x)
    (seq_s * w).sum().backward()
    assert state.steps == 35
    torch.testing.assert_close(seq_s, seq, atol=1e-9, rtol=0)
    for n, g in _grads(net).items():
        torch.testing.assert_close(g, g_f[n], atol=1e-9, rtol=1e-9, msg=n)


def test_net_streaming_equals_forward_float32_realistic():
    """Realistic float32 size. Tolerance: logits within 1e-4 and ≥ 99.9 % of the
    blocks' output spikes equal (a float32 rounding flip at threshold is allowed, rarely)."""
    torch.manual_seed(8)
    gen = torch.Generator().manual_seed(9)
    net = SpikingMambaNet(_cfg(d_model=32, n_inputs=20, d_state=16, n_layers=2,
                               threshold=0.5))
    x = _spikes((128, 8, 20), 0.3, gen)
    with torch.no_grad():
        seq, st = net.forward_seq(x)
        seq_s, st_s = _net_stream(net, x)
    torch.testing.assert_close(seq_s, seq, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(st_s.blocks[-1].h, st.blocks[-1].h, atol=1e-4, rtol=1e-4)


def test_mean_mem_readout_is_running_mean_of_li():
    torch.manual_seed(10)
    gen = torch.Generator().manual_seed(11)
    li = SpikingMambaNet(_cfg(readout="li")).to(F64)
    mm = SpikingMambaNet(_cfg(readout="mean_mem")).to(F64)
    mm.load_state_dict(li.state_dict())
    x = _spikes((20, 2, 5), 0.5, gen, F64)
    mem = li.forward_seq(x)[0]
    t = torch.arange(1, 21, dtype=F64).view(-1, 1, 1)
    torch.testing.assert_close(mm.forward_seq(x)[0], mem.cumsum(0) / t, atol=1e-12, rtol=0)
    torch.testing.assert_close(mm(x), mem.mean(0), atol=1e-12, rtol=0)


def test_step_routes_through_ssm_step_and_lif_modules():
    """The online rules wrap ``block.ssm.step`` and hook ``Leaky`` modules: keep that contract."""
    torch.manual_seed(12)
    net = SpikingMambaNet(_cfg())
    block = net.blocks[0]
    assert isinstance(block.lif, Leaky) and isinstance(net.in_lif, Leaky)
    assert block.in_proj.out_features == 2 * block.out_proj.in_features
    calls = {"ssm": 0, "lif": 0}
    orig = block.ssm.step

    def wrapped(u_t, h):
        calls["ssm"] += 1
        return orig(u_t, h)

    block.ssm.step = wrapped
    block.lif.register_forward_pre_hook(lambda m, a: calls.__setitem__("lif", calls["lif"] + 1))
    state = net.init_state(2)
    for _ in range(3):
        _, state = net.step(torch.ones(2, 5), state)
    assert calls == {"ssm": 3, "lif": 3}
    assert isinstance(state.blocks[0], MambaBlockState)


# ----------------------------------------------------------------------- shapes, grads
def test_wrong_shapes_raise_with_expected_and_given():
    torch.manual_seed(13)
    net = SpikingMambaNet(_cfg())
    with pytest.raises(ValueError, match=r"\(T, B, 5\).*\(4, 2, 6\)"):
        net(torch.zeros(4, 2, 6))
    with pytest.raises(ValueError, match=r"\(T, B, 5\).*\(2, 5\)"):
        net.forward_seq(torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"\(B, 5\).*\(2, 7\)"):
        net.step(torch.zeros(2, 7))
    with pytest.raises(ValueError, match=r"state.in_mem.*\(2, 8\).*\(3, 8\)"):
        net.step(torch.zeros(2, 5), net.init_state(3))
    block = net.blocks[0]
    with pytest.raises(ValueError, match=r"\(T, B, 8\).*\(3, 2, 9\)"):
        block(torch.zeros(3, 2, 9))
    with pytest.raises(ValueError, match=r"\(B, 8\).*\(3, 2, 8\)"):
        block.step(torch.zeros(3, 2, 8))
    bad_h = block.init_state(2)._replace(h=torch.zeros(3, 16, 4))
    with pytest.raises(ValueError, match=r"state.h.*\(2, 16, 4\).*\(3, 16, 4\)"):
        block(torch.zeros(5, 2, 8), bad_h)
    with pytest.raises(ValueError, match=r"\(T, B, 16\).*\(5, 2, 15\)"):
        block.ssm(torch.zeros(5, 2, 15))


@pytest.mark.parametrize("readout,norm", [("li", "rms"), ("mean_mem", "none")])
def test_gradients_reach_every_parameter(readout, norm):
    torch.manual_seed(14)
    gen = torch.Generator().manual_seed(15)
    net = SpikingMambaNet(_cfg(readout=readout, norm=norm, threshold=0.3))
    x = _spikes((25, 6, 5), 0.5, gen)
    y = torch.randint(3, (6,), generator=gen)
    F.cross_entropy(net(x), y).backward()
    for n, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
        assert p.grad.abs().sum() > 0, n


# ------------------------------------------------------------------------------ learning
def _delayed_cue(batch, gen, K=4, cue=5, delay=100, recall=5, p_noise=0.1):
    """Delayed cue recall. Channels: 2 per class (cue), 4 distractors, 1 "go".

    Steps [0, cue): the class's two cue channels fire (p = 0.9); [cue, cue+delay):
    distractor channels fire at p_noise; last ``recall`` steps: "go" fires. The class
    must be read out at the last step, ≥ ``delay`` steps after the cue ended.
    Returns x (T, B, 2K+5), y (B,).
    """
    T, C = cue + delay + recall, 2 * K + 5
    y = torch.randint(K, (batch,), generator=gen)
    x = torch.zeros(T, batch, C)
    x[:cue, :, :2 * K] = (F.one_hot(y, K).repeat_interleave(2, 1).float()
                          * _spikes((cue, batch, 2 * K), 0.9, gen))
    x[cue:cue + delay, :, 2 * K:2 * K + 4] = _spikes((delay, batch, 4), p_noise, gen)
    x[T - recall:, :, -1] = 1.0
    return x, y


@pytest.mark.slow
def test_learns_delayed_cue_recall_over_100_steps():
    """BPTT + Adam on fresh batches until 5 consecutive train batches reach ≥ 97 %,
    then ≥ 95 % on 512 held-out sequences (seeds 0-7 all converge in ≤ 140 steps).

    The memory must live in the SSM state: zeroing every block's h mid-delay (t = 55)
    drops held-out accuracy to chance. (With the SSM's decay clamped fast, the net still
    learns the task, through the spiking-phase memory of LIF membranes under constant
    drive: this ablation is what tells the two apart.)
    """
    torch.manual_seed(0)
    gen, test_gen = torch.Generator().manual_seed(1), torch.Generator().manual_seed(999)
    K = 4
    net = SpikingMambaNet(MambaConfig(d_model=16, n_inputs=2 * K + 5, n_classes=K, d_state=8))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x_test, y_test = _delayed_cue(512, test_gen, K)

    def accuracy(logits):
        return (logits.argmax(-1) == y_test).float().mean().item()

    with torch.no_grad():
        assert accuracy(net(x_test)) < 0.5  # chance level before training
    streak = 0
    for _ in range(400):
        x, y = _delayed_cue(32, gen, K)
        logits = net(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        streak = streak + 1 if (logits.argmax(-1) == y).float().mean() >= 0.97 else 0
        if streak == 5:
            break
    with torch.no_grad():
        assert accuracy(net(x_test)) >= 0.95
        _, state = net.forward_seq(x_test[:55])
        state = state._replace(blocks=tuple(b._replace(h=torch.zeros_like(b.h))
                                            for b in state.blocks))
        assert accuracy(net.forward_seq(x_test[55:], state)[0][-1]) < 0.5
