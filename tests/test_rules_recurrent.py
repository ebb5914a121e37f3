"""Recurrent neurons (RLeaky, RSynaptic) under RTRL = e-prop, and STDP on recurrent weights.

Symbols: T steps, B batch, N inputs, H neurons, s_t spikes, m_t membrane, ε eligibility
vectors (filtered presynaptic activity), L_t(t) e-prop's learning signal ∂L_t/∂m_t.
Tolerances (float64): relative error ≤ 1e-6 (issue 16; measured ≤ 1e-15, printed with -s).
"""

import pytest
import snntorch as snn
import torch
from snntorch import utils
from torch import nn

from bimsnn import surrogate
from bimsnn.rules import RTRL, STDP, Hybrid, stdp_omega_ref

T, B, N, H = 40, 3, 6, 5
SG = surrogate.atan()      # spikes in the membrane's dtype (snnTorch's are float32)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def _x(seed, shape=(N,)):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, B, *shape, generator=g) < 0.3).double() * 1.2


def _make(seed, mods):
    torch.manual_seed(seed)
    net = nn.Sequential(*mods()).double()
    with torch.no_grad():
        net[0].weight.uniform_(-0.2, 0.6)
    return net


def _loss(spk, mem, t):
    return ((spk - 0.3) ** 2).sum() + 0.3 * ((mem - 0.2 * (t % 3)) ** 2).sum()


def _run(net, x, rule=None, detach_spk=False, hidden=False):
    """Per-step loop. ``detach_spk``: BPTT with the incoming spikes detached, i.e. without
    the spike-to-membrane recurrent Jacobian (what e-prop drops)."""
    fc, lif = net
    if hidden:
        utils.reset(net)
    states = None if hidden else lif.reset_mem()
    if rule is not None:
        rule.reset(x.shape[1])
    total = 0.0
    for t in range(x.shape[0]):
        if hidden:
            if detach_spk and lif.spk.numel():
                lif.spk = lif.spk.detach()
            out = lif(fc(x[t]))
        else:
            spk_in = states[0].detach() if detach_spk else states[0]
            out = lif(fc(x[t]), spk_in, *states[1:])
            states = out
        loss = _loss(out[0], out[-1], t)
        if rule is not None:
            rule.backward(loss)
        else:
            total = total + loss
    if rule is None:
        total.backward()
    return {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}


def test_rleaky_eprop_equals_direct_formula():
    """RTRL on Linear → RLeaky(all_to_all) against e-prop written out here:
    ε_in(t) = β ε_in(t−1) + x_t, ε_rec(t) = β ε_rec(t−1) + s_{t−1}, ε_b(t) = β ε_b(t−1) + 1,
    ∂L/∂W = Σ_t Σ_b L(t)ᵀ ε(t), L(t) = ∂L_t/∂m_t through s_t = H(m_t − ϑ) and m_t only."""
    beta = 0.85

    def mods():
        return nn.Linear(N, H), snn.RLeaky(beta=beta, linear_features=H, spike_grad=SG)

    x = _x(1)
    net = _make(0, mods)
    with RTRL(net) as rule:
        g_rule = _run(net, x, rule)
    fc, lif = _make(0, mods)
    beta = float(lif.beta)                 # 0.85 as snnTorch stores it (float32 → float64)
    W_in, b_in = fc.weight.detach(), fc.bias.detach()
    W_rec, b_rec = lif.recurrent.weight.detach(), lif.recurrent.bias.detach()
    m, s = torch.zeros(B, H, dtype=torch.float64), torch.zeros(B, H, dtype=torch.float64)
    e_in, e_rec = torch.zeros(B, N).double(), torch.zeros(B, H).double()
    e_b = torch.zeros(B, H, dtype=torch.float64)
    g = {k: 0.0 for k in ("W_in", "b_in", "W_rec", "b_rec")}
    for t in range(T):
        r = (m > 1.0).double()                                   # detached reset of m_{t−1}
        m_new = beta * m + x[t] @ W_in.t() + b_in + s @ W_rec.t() + b_rec - r
        e_in, e_rec, e_b = beta * e_in + x[t], beta * e_rec + s, beta * e_b + 1
        mt = m_new.clone().requires_grad_(True)
        L = torch.autograd.grad(_loss(SG(mt - 1.0), mt, t), mt)[0]          # (B, H)
        g["W_in"] = g["W_in"] + L.t() @ e_in
        g["W_rec"] = g["W_rec"] + L.t() @ e_rec
        g["b_in"] = g["b_in"] + (L * e_b).sum(0)
        g["b_rec"] = g["b_rec"] + (L * e_b).sum(0)
        m, s = m_new, SG(m_new - 1.0).detach()
    errs = {"W_in": _rel(g_rule["0.weight"], g["W_in"]), "b_in": _rel(g_rule["0.bias"], g["b_in"]),
            "W_rec": _rel(g_rule["1.recurrent.weight"], g["W_rec"]),
            "b_rec": _rel(g_rule["1.recurrent.bias"], g["b_rec"])}
    g_bptt = _run(_make(0, mods), x)
    gap = _rel(g_rule["1.recurrent.weight"], g_bptt["1.recurrent.weight"])
    print("e-prop vs formula", {k: f"{v:.1e}" for k, v in errs.items()},
          f"; vs full BPTT {gap:.2f}")
    assert all(v <= 1e-6 for v in errs.values()), errs
    assert gap > 1e-3          # the dropped recurrent Jacobian matters here: BPTT differs


RECURRENT = {
    "rleaky_linear_learn_beta_threshold": (
        lambda: (nn.Linear(N, H), snn.RLeaky(beta=0.8, linear_features=H, spike_grad=SG,
                                            learn_beta=True, learn_threshold=True)), (N,)),
    "rleaky_linear_zero": (
        lambda: (nn.Linear(N, H), snn.RLeaky(beta=0.9, linear_features=H, spike_grad=SG,
                                            reset_mechanism="zero")), (N,)),
    "rleaky_one_to_one_V": (
        lambda: (nn.Linear(N, H), snn.RLeaky(beta=0.85, all_to_all=False,
                                            V=torch.linspace(0.1, 0.5, H), spike_grad=SG)),
        (N,)),
    "rsynaptic_linear": (
        lambda: (nn.Linear(N, H), snn.RSynaptic(alpha=0.7, beta=0.9, linear_features=H,
                                               spike_grad=SG, learn_alpha=True)), (N,)),
    "rleaky_conv": (
        lambda: (nn.Conv2d(2, 3, 3, padding=1), snn.RLeaky(beta=0.8, conv2d_channels=3,
                                                          kernel_size=3, spike_grad=SG)),
        (2, 6, 6)),
    "rsynaptic_conv_zero": (
        lambda: (nn.Conv2d(2, 3, 3, padding=1), snn.RSynaptic(
            alpha=0.6, beta=0.85, conv2d_channels=3, kernel_size=3, spike_grad=SG,
            reset_mechanism="zero")), (2, 6, 6)),
}


@pytest.mark.parametrize("name", list(RECURRENT))
def test_recurrent_rtrl_equals_bptt_without_spike_recurrence(name):
    """e-prop = BPTT of the same net with each step's incoming spikes detached."""
    mods, shape = RECURRENT[name]
    x = _x(2, shape)
    g_ref = _run(_make(3, mods), x, detach_spk=True)
    net = _make(3, mods)
    with RTRL(net) as rule:
        g_rtrl = _run(net, x, rule)
    assert set(g_rtrl) == set(g_ref)
    errs = {k: _rel(g_rtrl[k], g_ref[k]) for k in g_ref}
    print(name, {k: f"{v:.1e}" for k, v in errs.items()})
    assert all(v <= 1e-6 for v in errs.values()), errs


def test_recurrent_init_hidden():
    def mods():
        return nn.Linear(N, H), snn.RLeaky(beta=0.8, linear_features=H, spike_grad=SG,
                                           init_hidden=True, output=True)
    x = _x(4)
    g_ref = _run(_make(5, mods), x, detach_spk=True, hidden=True)
    net = _make(5, mods)
    with RTRL(net) as rule:
        g_rtrl = _run(net, x, rule, hidden=True)
    errs = {k: _rel(g_rtrl[k], g_ref[k]) for k in g_ref}
    assert all(v <= 1e-6 for v in errs.values()), errs


def test_stdp_on_recurrent_weights_pairs_previous_spikes():
    """The recurrent weight's presynaptic train is s(t−1): Ω_rec = eq. 5 on (s(t−1), s(t))."""
    kw = dict(A_plus=0.02, A_minus=0.015, tau_plus=5.0, tau_minus=3.0)
    net = _make(6, RECURRENT["rleaky_linear_zero"][0])
    fc, lif = net
    x = _x(7)
    with STDP(net, **kw) as rule:
        assert len(rule.omegas) == 2              # feed-forward and recurrent
        rule.reset(B)
        spk, mem = lif.reset_mem()
        post = []
        for t in range(T):
            spk, mem = lif(fc(x[t]), spk, mem)
            post.append(spk.detach())
            rule.backward(None)
        om_ff, om_rec = (o.clone() for o in rule.omegas)
    post = torch.stack(post)
    pre_rec = torch.cat([torch.zeros_like(post[:1]), post[:-1]])
    assert post.sum() > 20
    assert _rel(om_ff, stdp_omega_ref(x, post, **kw)) <= 1e-6
    assert _rel(om_rec, stdp_omega_ref(pre_rec, post, **kw)) <= 1e-6


def test_hybrid_on_rsynaptic_runs_online():
    net = _make(8, RECURRENT["rsynaptic_conv_zero"][0])
    with Hybrid(net, lam=0.5) as rule:
        g = _run(net, _x(9, (2, 6, 6)), rule)
    assert all(torch.isfinite(v).all() for v in g.values())
    assert {"0.weight", "1.recurrent.weight"} <= set(g)
