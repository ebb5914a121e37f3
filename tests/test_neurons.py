"""Tests for bimsnn.neurons / bimsnn.surrogate: fused LIF vs its reference twin vs snnTorch 1.0.

Symbols: T time steps, B batch, N neurons.

Tolerances: spikes and membranes are compared exactly (the fused op uses snnTorch's float
operations in snnTorch's order). Gradients: float64 atol 1e-10; float32 (T=200, B=16, N=64)
rtol 1e-4 for per-element grads and rtol 1e-3 for β/U_thr grads, which sum T·B terms in a
different order than autograd does.
"""

from __future__ import annotations

import pytest
import snntorch as snn
import torch
from snntorch import surrogate as snn_sg
from snntorch import utils as snn_utils
from torch import nn

from bimsnn import surrogate as sg
from bimsnn.neurons import (
    Leaky,
    Synaptic,
    lif_multi_step,
    lif_multi_step_ref,
    lif_step,
    synaptic_multi_step,
    synaptic_step,
)
from bimsnn.neurons.functional import fused_lif

MECHS = ["subtract", "zero", "none"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _lif_inputs(T, B, N, dtype, seed, learn=True):
    """cur (T, B, N), mem0 (B, N), per-neuron beta/threshold (N,): all leaves requiring grad."""
    g = _gen(seed)
    cur = (torch.randn(T, B, N, generator=g, dtype=dtype) * 0.6 + 0.35).requires_grad_()
    mem0 = (torch.randn(B, N, generator=g, dtype=dtype) + 0.5).requires_grad_()
    beta = (torch.rand(N, generator=g, dtype=dtype) * 0.6 + 0.3).requires_grad_(learn)
    thr = (torch.rand(N, generator=g, dtype=dtype) * 0.5 + 0.75).requires_grad_(learn)
    return cur, mem0, beta, thr


def _run(fn, cur, mem0, beta, thr, wrt, seed=0, **kw):
    """Forward, then grads of a random linear functional of both outputs."""
    spk, mem = fn(cur, mem0, beta, thr, **kw)
    g = _gen(seed)
    gs = torch.randn(spk.shape, generator=g, dtype=spk.dtype)
    gm = torch.randn(mem.shape, generator=g, dtype=mem.dtype)
    grads = torch.autograd.grad((spk * gs).sum() + (mem * gm).sum(), wrt)
    return spk.detach(), mem.detach(), grads


# ----------------------------------------------------------------------------- surrogates
SURROGATES = [("atan", "atan", 3.0), ("fast_sigmoid", "fast_sigmoid", 10.0),
              ("sigmoid", "sigmoid", 5.0), ("straight_through", "straight_through_estimator", None)]


@pytest.mark.parametrize("ours, theirs, param", SURROGATES)
def test_surrogate_matches_snntorch_bitwise(ours, theirs, param):
    x = torch.randn(2000, generator=_gen(1))
    x[:10] = 0.0  # H(0) = 0 in both
    g_out = torch.randn(2000, generator=_gen(2))
    args = () if param is None else (param,)
    outs = []
    for fn in (getattr(sg, ours)(*args), getattr(snn_sg, theirs)(*args)):
        xi = x.clone().requires_grad_()
        spk = fn(xi)
        spk.backward(g_out)
        outs.append((spk.detach(), xi.grad))
    assert torch.equal(outs[0][0], outs[1][0])
    assert torch.equal(outs[0][1], outs[1][1])


@pytest.mark.parametrize("surrogate", [sg.atan(2.0), sg.fast_sigmoid(25), sg.sigmoid(5),
                                       sg.straight_through()], ids=repr)
def test_surrogate_derivative_is_that_of_its_primitive(surrogate):
    x = torch.linspace(-2, 2, 401, dtype=torch.float64).requires_grad_()
    (d_auto,) = torch.autograd.grad(surrogate.primitive(x).sum(), x)
    torch.testing.assert_close(surrogate.derivative(x.detach()), d_auto, rtol=1e-12, atol=1e-12)
    g = torch.randn(401, generator=_gen(3), dtype=torch.float64)
    acc = torch.randn(401, generator=_gen(4), dtype=torch.float64)
    torch.testing.assert_close(surrogate.grad_acc_(x.detach().clone(), g, acc),
                               acc + g * d_auto, rtol=1e-12, atol=1e-12)


def test_as_surrogate_reads_snntorch_closures():
    assert sg.as_surrogate(None) == sg.ATan(2.0)
    assert sg.as_surrogate(snn_sg.atan(alpha=3.0)) == sg.ATan(3.0)
    assert sg.as_surrogate(snn_sg.fast_sigmoid(slope=10)) == sg.FastSigmoid(10)
    assert sg.as_surrogate(snn_sg.sigmoid(slope=7)) == sg.Sigmoid(7)
    assert sg.as_surrogate(snn_sg.straight_through_estimator()) == sg.StraightThrough()
    assert sg.as_surrogate(snn_sg.heaviside()) is None
    assert sg.as_surrogate(lambda x: (x > 0).float()) is None


# -------------------------------------------------------------- fused op: gradcheck & ref
@pytest.mark.parametrize("mech", MECHS)
@pytest.mark.parametrize("surrogate", [sg.atan(2.0), sg.fast_sigmoid(5)], ids=repr)
@pytest.mark.parametrize("learn", [True, False])
def test_gradcheck_smooth_variant(mech, surrogate, learn):
    # Smooth variant: spikes = σ(U − U_thr) (the surrogate's primitive), reset still the
    # detached step H; so finite differences see exactly what the hand-written backward does.
    cur, mem0, beta, thr = _lif_inputs(5, 2, 3, torch.float64, seed=10, learn=learn)
    with torch.no_grad():
        _, mem = lif_multi_step_ref(cur, mem0, beta, thr, surrogate, mech)
    assert (mem > thr).any() and (mem <= thr).any()  # resets happen: that path is checked
    args = (cur, mem0, beta, thr) if learn else (cur, mem0, 0.7, 1.0)

    def f(c, m, *params):
        return fused_lif(c, m, *params, surrogate, mech, smooth=True)

    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("mech", MECHS)
@pytest.mark.parametrize("spike_grad, ref_grad", [
    (None, None),
    # snnTorch's closure is converted; the ref uses our twin, since snnTorch's own surrogate
    # backward runs in float32 (its spikes are always float32), far from 1e-10.
    (snn_sg.fast_sigmoid(slope=10), sg.fast_sigmoid(10)),
    (sg.sigmoid(5), sg.sigmoid(5))], ids=["default", "snntorch_fast_sigmoid", "sigmoid"])
def test_fused_matches_ref_float64(mech, spike_grad, ref_grad):
    cur, mem0, beta, thr = _lif_inputs(30, 3, 5, torch.float64, seed=11)
    wrt = (cur, mem0, beta, thr)
    s1, m1, g1 = _run(lif_multi_step, *wrt, wrt, spike_grad=spike_grad, reset_mechanism=mech)
    s2, m2, g2 = _run(lif_multi_step_ref, *wrt, wrt, spike_grad=ref_grad,
                      reset_mechanism=mech)
    assert 0.05 < s1.mean() < 0.95
    assert torch.equal(s1, s2) and torch.equal(m1, m2)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("mech", MECHS)
def test_fused_matches_ref_float32_realistic(mech):
    cur, _, beta, _ = _lif_inputs(200, 16, 64, torch.float32, seed=12)
    thr = torch.tensor(1.1, requires_grad=True)  # scalar learnable threshold: grad shape ()
    wrt = (cur, beta, thr)
    s1, m1, g1 = _run(lif_multi_step, cur, None, beta, thr, wrt, reset_mechanism=mech)
    s2, m2, g2 = _run(lif_multi_step_ref, cur, None, beta, thr, wrt, reset_mechanism=mech)
    assert torch.equal(s1, s2) and torch.equal(m1, m2)
    assert g1[2].shape == ()
    torch.testing.assert_close(g1[0], g2[0], rtol=1e-4, atol=1e-5)
    for a, b in zip(g1[1:], g2[1:]):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3 * b.abs().max().item())


@pytest.mark.parametrize("used", ["spk", "mem"])
def test_fused_with_one_output_unused(used):
    cur, mem0, beta, thr = _lif_inputs(20, 2, 4, torch.float64, seed=13)
    wrt = (cur, mem0, beta, thr)
    grads = []
    for fn in (lif_multi_step, lif_multi_step_ref):
        spk, mem = fn(*wrt, reset_mechanism="subtract")
        out = spk if used == "spk" else mem
        grads.append(torch.autograd.grad((out * torch.linspace(-1, 1, 4)).sum(), wrt))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_unknown_surrogate_falls_back_to_ref_loop():
    cur, mem0, _, _ = _lif_inputs(10, 2, 3, torch.float64, seed=14)
    spk, mem = lif_multi_step(cur, mem0, 0.8, 1.0, snn_sg.heaviside())
    assert "LIFMultiStep" not in type(spk.grad_fn).__name__
    s_ref, m_ref = lif_multi_step_ref(cur, mem0, 0.8, 1.0, snn_sg.heaviside())
    assert torch.equal(spk, s_ref) and torch.equal(mem, m_ref)


def test_beta_is_clamped_like_snntorch():
    cur, _, _, _ = _lif_inputs(10, 2, 3, torch.float64, seed=15)
    beta = torch.tensor([1.3, 0.5, -0.2], dtype=torch.float64, requires_grad=True)
    for fn in (lif_multi_step, lif_multi_step_ref):
        spk, mem = fn(cur, None, beta)
        _, mem_c = fn(cur, None, beta.detach().clamp(0, 1))
        assert torch.equal(mem, mem_c)
        (g,) = torch.autograd.grad(mem.sum(), beta)
        assert g[0] == 0 and g[2] == 0 and g[1] != 0


# -------------------------------------------------------------- Leaky vs snntorch.Leaky
def _leaky_pair(mech, **kw):
    """(ours, snnTorch's) with identical learnable per-neuron beta and scalar threshold."""
    beta = torch.linspace(0.5, 0.95, 6)
    ours = Leaky(beta=beta.clone(), threshold=0.9, learn_beta=True, learn_threshold=True,
                 reset_mechanism=mech, **kw)
    ref = snn.Leaky(beta=beta.clone(), threshold=0.9, learn_beta=True, learn_threshold=True,
                    reset_mechanism=mech, **kw)
    return ours, ref


def _step_loop(lif, cur):
    mem = lif.init_leaky()
    spks, mems = [], []
    for x in cur:
        spk, mem = lif(x, mem)
        spks.append(spk)
        mems.append(mem)
    return torch.stack(spks), torch.stack(mems)


def _assert_leaky_equal(ours, ref, out_ours, out_ref, cur):
    (s1, m1), (s2, m2) = out_ours, out_ref
    assert 0.05 < s2.mean() < 0.95
    assert torch.equal(s1, s2) and torch.equal(m1, m2)
    w = torch.randn(m1.shape, generator=_gen(5))
    g1 = torch.autograd.grad((s1 * w).sum() + (m1 * w).sum(), (cur, ours.beta, ours.threshold))
    g2 = torch.autograd.grad((s2 * w).sum() + (m2 * w).sum(), (cur, ref.beta, ref.threshold))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())


@pytest.mark.parametrize("mech", MECHS)
@pytest.mark.parametrize("spike_grad", [None, snn_sg.fast_sigmoid(slope=10)],
                         ids=["default", "fast_sigmoid"])
def test_leaky_matches_snntorch(mech, spike_grad):
    ours, ref = _leaky_pair(mech, spike_grad=spike_grad)
    cur = (torch.randn(40, 3, 6, generator=_gen(6)) * 0.7 + 0.3).requires_grad_()
    _assert_leaky_equal(ours, ref, _step_loop(ours, cur), _step_loop(ref, cur), cur)


@pytest.mark.parametrize("mech", MECHS)
def test_leaky_multi_step_matches_snntorch(mech):
    ours, ref = _leaky_pair(mech)
    cur = (torch.randn(40, 3, 6, generator=_gen(7)) * 0.7 + 0.3).requires_grad_()
    out = ours.multi_step(cur)
    assert torch.equal(ours.mem, out[1][-1])
    _assert_leaky_equal(ours, ref, out, _step_loop(ref, cur), cur)


@pytest.mark.parametrize("kw", [{"surrogate_disable": True}, {"reset_delay": False},
                                {"graded_spikes_factor": 0.5}, {"output": True}], ids=str)
def test_leaky_options_match_snntorch(kw):
    ours, ref = Leaky(beta=0.8, **kw), snn.Leaky(beta=0.8, **kw)
    cur = torch.randn(25, 2, 4, generator=_gen(8)) + 0.4
    (s1, m1), (s2, m2) = _step_loop(ours, cur), _step_loop(ref, cur)
    assert torch.equal(s1, s2) and torch.equal(m1, m2)


def test_leaky_is_an_snntorch_neuron():
    lif = Leaky(beta=0.9, learn_beta=True)
    assert isinstance(lif, snn.Leaky) and isinstance(lif, snn.SpikingNeuron)
    ref = snn.Leaky(beta=0.5, learn_beta=True)
    lif.load_state_dict(ref.state_dict())  # same parameters and buffers
    assert lif.beta.item() == 0.5
    spk, mem = lif(torch.ones(2, 3, dtype=torch.float64), None)  # None = fresh state
    assert spk.dtype == mem.dtype == torch.float64


def test_init_hidden_in_sequential_and_utils_reset():
    torch.manual_seed(0)
    nets = []
    for cls in (Leaky, snn.Leaky):
        torch.manual_seed(0)
        nets.append(nn.Sequential(nn.Linear(5, 4), cls(beta=0.8, init_hidden=True)))
    x = torch.rand(15, 2, 5, generator=_gen(9)) * 2

    def run(net):
        snn_utils.reset(net)
        return torch.stack([net(xt) for xt in x])

    first = run(nets[0])
    assert torch.equal(first, run(nets[1])) and first.any()
    assert torch.equal(run(nets[0]), first)  # reset restarts from zero
    snn_utils.reset(nets[0])
    assert not nets[0][1].mem.any()
    with pytest.raises(TypeError):
        nets[0][1](torch.zeros(2, 4), torch.zeros(2, 4))


def test_hooks_can_replace_mem():
    lif = Leaky(beta=0.9)
    seen = []
    lif.register_forward_pre_hook(lambda m, args: (args[0], torch.zeros_like(args[1])))
    lif.register_forward_hook(lambda m, args, out: seen.append(out))
    spk, mem = lif(torch.full((1, 2), 0.5), torch.full((1, 2), 5.0))
    torch.testing.assert_close(mem, torch.full((1, 2), 0.5))  # started from the hook's zeros
    assert seen[0][1] is mem
    with pytest.warns(UserWarning, match="bypasses forward hooks"):
        lif.multi_step(torch.zeros(3, 1, 2))


# ------------------------------------------------------------------------------ Synaptic
def _synaptic_loop(lif, cur):
    syn, mem = lif.init_synaptic()
    out = []
    for x in cur:
        spk, syn, mem = lif(x, syn, mem)
        out.append((spk, syn, mem))
    return tuple(torch.stack(s) for s in zip(*out))


@pytest.mark.parametrize("mech", MECHS)
@pytest.mark.parametrize("path", ["step", "multi_step"])
def test_synaptic_matches_snntorch(mech, path):
    kw = dict(alpha=torch.linspace(0.3, 0.8, 5), beta=0.7, threshold=1.2, learn_alpha=True,
              learn_beta=True, reset_mechanism=mech)
    ours, ref = Synaptic(**kw), snn.Synaptic(**kw)
    cur = (torch.randn(30, 2, 5, generator=_gen(16)) * 0.5 + 0.25).requires_grad_()
    out1 = _synaptic_loop(ours, cur) if path == "step" else ours.multi_step(cur)
    out2 = _synaptic_loop(ref, cur)
    assert 0.05 < out2[0].mean() < 0.95
    for a, b in zip(out1, out2):
        assert torch.equal(a, b)
    w = torch.randn(out1[0].shape, generator=_gen(17))
    g1, g2 = (torch.autograd.grad(sum((o * w).sum() for o in out), (cur, m.alpha, m.beta))
              for out, m in ((out1, ours), (out2, ref)))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())


@pytest.mark.parametrize("alpha, beta", [(0.8, 0.6), (0.7, 0.7)])
def test_synaptic_single_spike_response_is_double_exponential(alpha, beta):
    T = 40
    cur = torch.zeros(T, 1, 1, dtype=torch.float64)
    cur[0] = 1.0  # one input spike at t = 0
    _, syn, mem = synaptic_multi_step(cur, None, None, alpha, beta, threshold=1e9)
    t = torch.arange(T, dtype=torch.float64)
    kernel = ((alpha ** (t + 1) - beta ** (t + 1)) / (alpha - beta) if alpha != beta
              else (t + 1) * beta ** t)
    torch.testing.assert_close(syn.flatten(), alpha ** t, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(mem.flatten(), kernel, rtol=1e-12, atol=1e-15)


# -------------------------------------------------------------------------------- shapes
def test_wrong_shapes_raise_value_error_naming_shapes():
    cur = torch.zeros(4, 2, 3)
    for fn in (lif_multi_step, lif_multi_step_ref):
        with pytest.raises(ValueError, match=r"mem0: expected shape \(2, 3\).*got \(3, 3\)"):
            fn(cur, torch.zeros(3, 3), 0.9)
        with pytest.raises(ValueError, match=r"cur: expected shape \(T, B, \.\.\.\).*got \(4,\)"):
            fn(torch.zeros(4), None, 0.9)
        with pytest.raises(ValueError, match=r"beta: expected .*\(2, 3\), got \(4,\)"):
            fn(cur, None, torch.full((4,), 0.9))
        with pytest.raises(ValueError, match="reset_mechanism"):
            fn(cur, None, 0.9, reset_mechanism="hard")
    with pytest.raises(ValueError, match=r"mem: expected shape \(2, 3\).*got \(2, 4\)"):
        lif_step(cur[0], torch.zeros(2, 4), 0.9)
    with pytest.raises(ValueError, match=r"syn: expected shape \(2, 3\).*got \(1, 3\)"):
        synaptic_step(cur[0], torch.zeros(1, 3), None, 0.5, 0.9)
    with pytest.raises(ValueError, match=r"syn0: expected shape \(2, 3\).*got \(2,\)"):
        synaptic_multi_step(cur, torch.zeros(2), None, 0.5, 0.9)


def test_module_state_shape_rules():
    lif = Leaky(beta=0.9)
    x = torch.full((2, 3), 0.5)
    with pytest.raises(ValueError, match=r"mem: expected shape \(2, 3\).*got \(4, 3\)"):
        lif(x, torch.ones(4, 3))  # a non-zero state of another shape is a bug
    _, mem = lif(x, torch.zeros(4, 3))  # a zeroed state (e.g. from a larger batch) is fresh
    torch.testing.assert_close(mem, x)
    with pytest.raises(ValueError, match=r"syn: expected shape \(2, 3\).*got \(2, 1\)"):
        Synaptic(alpha=0.5, beta=0.9)(x, torch.ones(2, 1), None)
