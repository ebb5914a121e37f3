"""Second-order neurons (Synaptic, Alpha) under RTRL, float64, against BPTT.

Symbols: T steps, B batch, N inputs, H neurons.
Tolerance: relative error ≤ 1e-6 per parameter (issue 16; measured ≤ 1e-15, printed with -s;
up to ~1e-9 where snnTorch's float32 spikes round a learned threshold).
"""

import pytest
import snntorch as snn
import torch
from snntorch import utils
from torch import nn

import bimsnn
from bimsnn.rules import RTRL, STDP, Hybrid

T, B, N, H = 40, 3, 6, 5


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def _x(seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, B, N, generator=g) < 0.3).double() * 1.2


def _make(seed, neuron):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(N, H), neuron()).double()
    with torch.no_grad():
        net[0].weight.uniform_(-0.2, 0.6)
    return net


def _run(net, x, rule=None, hidden=False):
    """Per-step loop, loss on spikes and membrane at every step; explicit states unless
    ``hidden`` (init_hidden=True, output=True). Returns {name: grad}."""
    fc, lif = net
    states = None if hidden else tuple(s for s in lif.reset_mem())
    if hidden:
        utils.reset(net)
    if rule is not None:
        rule.reset(x.shape[1])
    total = 0.0
    for t in range(x.shape[0]):
        out = lif(fc(x[t])) if hidden else lif(fc(x[t]), *states)
        if not hidden:
            states = out[1:]
        spk, mem = out[0].double(), out[-1]
        loss = ((spk - 0.4) ** 2).sum() + 0.3 * ((mem - 0.2 * (t % 3)) ** 2).sum()
        if rule is not None:
            rule.backward(loss)
        else:
            total = total + loss
    if rule is None:
        total.backward()
    return {k: p.grad.clone() for k, p in net.named_parameters()}


def _errs(neuron, hidden=False, seed=0):
    x = _x(seed + 1)
    g_bptt = _run(_make(seed, neuron), x, None, hidden)
    net = _make(seed, neuron)
    with RTRL(net) as rule:
        g_rtrl = _run(net, x, rule, hidden)
    assert set(g_rtrl) == set(g_bptt)
    return {k: _rel(g_rtrl[k], g_bptt[k]) for k in g_bptt}


SYNAPTIC = {
    "subtract": dict(alpha=0.8, beta=0.9),
    "zero": dict(alpha=0.7, beta=0.9, reset_mechanism="zero"),
    "none": dict(alpha=0.6, beta=0.8, reset_mechanism="none"),
    "learn_all": dict(alpha=0.8, beta=0.85, learn_alpha=True, learn_beta=True,
                      learn_threshold=True),
    "per_neuron_zero": dict(alpha=torch.linspace(0.3, 0.9, H), beta=torch.linspace(0.5, 0.95, H),
                            reset_mechanism="zero", learn_alpha=True, learn_beta=True),
}


@pytest.mark.parametrize("cls", [snn.Synaptic, bimsnn.Synaptic], ids=["snntorch", "bimsnn"])
@pytest.mark.parametrize("name", list(SYNAPTIC))
def test_linear_synaptic_rtrl_equals_bptt(name, cls):
    errs = _errs(lambda: cls(**SYNAPTIC[name]))
    print("Synaptic", cls.__module__, name, {k: f"{v:.1e}" for k, v in errs.items()})
    assert all(v <= 1e-6 for v in errs.values()), errs


def test_synaptic_init_hidden():
    errs = _errs(lambda: bimsnn.Synaptic(alpha=0.8, beta=0.9, init_hidden=True, output=True),
                 hidden=True)
    assert all(v <= 1e-6 for v in errs.values()), errs


@pytest.mark.parametrize("mode", ["zero", "subtract", "none"])
def test_linear_alpha_rtrl_equals_bptt(mode):
    errs = _errs(lambda: snn.Alpha(alpha=0.9, beta=0.8, reset_mechanism=mode,
                                   learn_threshold=(mode == "subtract")))
    print("Alpha", mode, {k: f"{v:.1e}" for k, v in errs.items()})
    assert all(v <= 1e-6 for v in errs.values()), errs


def test_alpha_learnable_beta_is_refused_at_attach():
    net = nn.Sequential(nn.Linear(N, H), snn.Alpha(alpha=0.9, beta=0.8, learn_beta=True))
    with pytest.raises(TypeError, match="learnable beta"):
        RTRL(net)
    Hybrid(net, grad="autograd").remove()          # no traces needed: fine
    STDP(net).remove()


def test_synaptic_two_backwards_do_not_reuse_the_graph():
    """The failure issue 16 reported: a second rule.backward through a Synaptic net raised
    "backward through the graph a second time". Its state is now detached every step."""
    net = _make(0, lambda: snn.Synaptic(alpha=0.8, beta=0.9))
    for make in (RTRL, STDP, lambda m: Hybrid(m, lam=0.5)):
        with make(net) as rule:
            rule.reset(B)
            syn, mem = net[1].reset_mem()
            for t in range(3):
                spk, syn, mem = net[1](net[0](_x(0)[t]), syn, mem)
                rule.backward(None if isinstance(rule, STDP) else mem.sum())


def test_states_passed_as_keywords():
    """lif(cur, syn=syn, mem=mem): the hooks find, detach and trace keyword states too."""
    def run(net, rule):
        fc, lif = net
        syn, mem = lif.reset_mem()
        if rule:
            rule.reset(B)
        total, x = 0.0, _x(5)
        for t in range(T):
            spk, syn, mem = lif(fc(x[t]), syn=syn, mem=mem)
            loss = ((mem - 0.3) ** 2).sum() + spk.double().sum()
            if rule:
                rule.backward(loss)
            else:
                total = total + loss
        if not rule:
            total.backward()
        return net[0].weight.grad.clone()

    make = lambda: _make(4, lambda: snn.Synaptic(alpha=0.8, beta=0.9))  # noqa: E731
    g_bptt = run(make(), None)
    net = make()
    with RTRL(net) as rule:
        assert _rel(run(net, rule), g_bptt) <= 1e-6


@pytest.mark.parametrize("neuron", [lambda: snn.Synaptic(alpha=0.8, beta=0.9),
                                    lambda: snn.Alpha(alpha=0.9, beta=0.8)],
                         ids=["Synaptic", "Alpha"])
def test_stdp_on_second_order_neurons_equals_eq5(neuron):
    from bimsnn.rules import stdp_omega_ref
    kw = dict(A_plus=0.02, A_minus=0.015, tau_plus=5.0, tau_minus=3.0)
    net = _make(6, neuron)
    fc, lif = net
    x, post = _x(7), []
    with STDP(net, **kw) as rule:
        rule.reset(B)
        states = lif.reset_mem()
        for t in range(T):
            out = lif(fc(x[t]), *states)
            states = out[1:]
            post.append(out[0].detach().double())
            rule.backward(None)
        omega = rule.omegas[0].clone()
    post = torch.stack(post)
    assert post.sum() > 20
    assert _rel(omega, stdp_omega_ref(x, post, **kw)) <= 1e-6
