"""RTRL (paper eq. 7-8) against BPTT, in float64.

Symbols: T steps, B batch, N inputs, H hidden, K outputs.
Tolerances: single layer rel. error ≤ 1e-5 (measured ≤ 5e-16; 2e-9 for snnTorch's learned
threshold, because snnTorch's spikes are float32 even in a float64 net); multi-layer per-tensor cosine ≥ 0.95
and whole-vector cosine ≥ 0.5 (2 layers) / 0.3 (3 layers), measured 0.75 / 0.40 (seed 0;
per-tensor ≥ 0.997).
"""

import pytest
import snntorch as snn
import torch
from torch import nn

from bimsnn.rules import RTRL, NeuronTraceInject, neuron_trace_inject_ref
from bimsnn.rules.connections import Route, connection

T, B, N, H = 60, 3, 6, 5


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def _data(seed, n_in=N, n_out=H):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(T, B, n_in, generator=g) < 0.3).double() * 1.5
    tgt = torch.rand(T, B, n_out, generator=g).double()
    return x, tgt


def _run_stack(net, x, tgt, rule=None):
    """Per-step loop over a Sequential of (Linear, Leaky) pairs; loss on spikes + membrane."""
    L = len(net) // 2
    mems = [net[2 * k + 1].init_leaky() for k in range(L)]
    if rule is not None:
        rule.reset(x.shape[1])
    total = 0.0
    for t in range(x.shape[0]):
        h = x[t]
        for k in range(L):
            h, mems[k] = net[2 * k + 1](net[2 * k](h.to(x.dtype)), mems[k])
        loss_t = ((h.to(x.dtype) - tgt[t]) ** 2).sum() + 0.3 * ((mems[-1] - 0.5) ** 2).sum()
        if rule is not None:
            rule.backward(loss_t)
        else:
            total = total + loss_t
    if rule is None:
        total.backward()
    return {n: p.grad.clone() for n, p in net.named_parameters()}


def _stack(sizes, seed, leaky=snn.Leaky, **kw):
    torch.manual_seed(seed)
    mods = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        mods += [nn.Linear(a, b), leaky(**kw)]
    return nn.Sequential(*mods).double()


CONFIGS = {
    "subtract": dict(beta=0.9),
    "zero": dict(beta=0.9, reset_mechanism="zero"),
    "none": dict(beta=0.8, reset_mechanism="none"),
    "learn_beta_threshold": dict(beta=0.9, learn_beta=True, learn_threshold=True),
    "zero_per_neuron_beta": dict(beta=torch.linspace(0.4, 0.95, H), reset_mechanism="zero",
                                 learn_beta=True),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_rtrl_equals_bptt_single_layer(name):
    x, tgt = _data(0)
    g_bptt = _run_stack(_stack([N, H], 1, **CONFIGS[name]), x, tgt)
    net = _stack([N, H], 1, **CONFIGS[name])
    with RTRL(net) as rule:
        g_rtrl = _run_stack(net, x, tgt, rule)
    errs = {k: _rel(g_rtrl[k], g_bptt[k]) for k in g_bptt}
    print(name, errs)
    assert set(g_rtrl) == set(g_bptt)
    assert all(v <= 1e-5 for v in errs.values()), errs


def test_rtrl_equals_bptt_bimsnn_leaky():
    neurons = pytest.importorskip("bimsnn.neurons")
    x, tgt = _data(2)
    kw = dict(beta=0.85, learn_beta=True, learn_threshold=True)
    g_bptt = _run_stack(_stack([N, H], 3, neurons.Leaky, **kw), x, tgt)
    net = _stack([N, H], 3, neurons.Leaky, **kw)
    with RTRL(net) as rule:
        g_rtrl = _run_stack(net, x, tgt, rule)
    errs = {k: _rel(g_rtrl[k], g_bptt[k]) for k in g_bptt}
    assert all(v <= 1e-5 for v in errs.values()), errs


def test_rtrl_sequence_linear_and_one_backward_equal_per_step():
    """fc applied to the whole (T, B, N) sequence, a Leaky loop, one backward at the end."""
    x, tgt = _data(4)
    net = _stack([N, H], 5, beta=0.9)
    with RTRL(net) as rule:
        g_step = _run_stack(net, x, tgt, rule)
    net2 = _stack([N, H], 5, beta=0.9)
    fc, lif = net2
    with RTRL(net2) as rule:
        rule.reset(B)
        cur = fc(x)                                                  # (T, B, H)
        mem, loss = lif.init_leaky(), 0.0
        for t in range(T):
            spk, mem = lif(cur[t], mem)
            loss = loss + ((spk.double() - tgt[t]) ** 2).sum() + 0.3 * ((mem - 0.5) ** 2).sum()
        rule.backward(loss)
    for k, p in net2.named_parameters():
        assert _rel(p.grad, g_step[k]) <= 1e-10


@pytest.mark.parametrize("sizes,bound", [([10, 20, 4], 0.5), ([10, 20, 20, 4], 0.3)])
def test_rtrl_multilayer_cosine_to_bptt(sizes, bound):
    x, tgt = _data(0, sizes[0], sizes[-1])
    g_bptt = _run_stack(_stack(sizes, 0, beta=0.9), x, tgt)
    net = _stack(sizes, 0, beta=0.9)
    with RTRL(net) as rule:
        g_rtrl = _run_stack(net, x, tgt, rule)
    flat = [torch.cat([g[k].flatten() for k in g_bptt]) for g in (g_rtrl, g_bptt)]
    cos = float(flat[0] @ flat[1] / flat[0].norm() / flat[1].norm())
    per = {k: float(g_rtrl[k].flatten() @ g_bptt[k].flatten()
                    / g_rtrl[k].norm() / g_bptt[k].norm()) for k in g_bptt}
    ratio = {k: float(g_rtrl[k].norm() / g_bptt[k].norm()) for k in g_bptt}
    print(f"{len(sizes) - 1} layers: cosine {cos:.3f} (bound {bound}); per tensor "
          f"{min(per.values()):.3f} min; norm ratios {ratio}")
    assert cos >= bound
    assert min(per.values()) >= 0.95
    last = list(g_bptt)[-2:]                    # last pair: its own recurrence only, exact
    assert all(_rel(g_rtrl[k], g_bptt[k]) <= 1e-5 for k in last)


@pytest.mark.parametrize("layer", ["conv", "linear"])
def test_neuron_trace_inject_matches_reference_twin(layer):
    """Every contraction kind ("pre", through an avg-pool route for the conv, "post",
    "bias", "diag") for two carried states, against plain autograd of the twin."""
    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, dtype=torch.float64, generator=g)

    Bn = 4
    if layer == "conv":
        m1, m2 = nn.Conv2d(2, 3, 3, padding=1).double(), nn.Conv2d(2, 3, 3).double()
        route = Route("avg", 3, 0, (6, 6), args=((2, 2), (2, 2), (0, 0), False, True, None))
        S, pre, P, F = (3, 3, 3), (2, 6, 6), 9, 18
    else:
        m1, m2 = nn.Linear(5, 3).double(), nn.Linear(5, 3).double()
        route = Route("id", 3, 1)
        S, pre, P, F = (3,), (5,), 1, 5
    c1, c2 = connection(m1), connection(m2)
    beta = (torch.rand(3, dtype=torch.float64, generator=g).view(3, *[1] * (len(S) - 1))
            .requires_grad_())
    states = (r(Bn, *S), r(Bn, *S))
    params = (m1.weight, m1.bias, m2.weight, beta)
    spec = (("pre", (r(Bn, *pre), r(Bn, *pre)), (c1, route)),
            ("bias", (r(Bn, 3, P), None), (c1, None)),
            ("post", (r(3, Bn, P, F), r(3, Bn, P, F)), (c2, None)),
            ("diag", (r(Bn, *S), r(Bn, *S)), None))
    ups = (r(Bn, *S), r(Bn, *S))
    out = NeuronTraceInject.apply(spec, 2, *states, *params)
    grads = torch.autograd.grad(sum((o * u).sum() for o, u in zip(out, ups)), params)
    ref = neuron_trace_inject_ref(spec, 2, *states, *params)
    grads_ref = torch.autograd.grad(sum((o * u).sum() for o, u in zip(ref, ups)), params)
    for o, o_ref, s in zip(out, ref, states):
        assert torch.equal(o, s) and torch.allclose(o_ref, s, rtol=0, atol=0)
    for a, b in zip(grads, grads_ref):
        assert a.shape == b.shape
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)


def test_max_route_adjoint():
    """Route "max": forward gathers the selected positions, T scatters back (its adjoint)."""
    route = Route("max", 2, 2, (1, 4), idx=torch.tensor([[[0, 3], [1, 1]]]))
    z = torch.arange(8.0).reshape(1, 2, 4)
    assert route.fwd(z).tolist() == [[[0.0, 3.0], [5.0, 5.0]]]
    g = torch.ones(1, 2, 2)
    assert route.T(g).tolist() == [[[1.0, 0.0, 0.0, 1.0], [0.0, 2.0, 0.0, 0.0]]]
    assert float((route.fwd(z) * g).sum()) == float((z * route.T(g)).sum())


def test_rtrl_rejects_unsupported_leaky():
    net = nn.Sequential(nn.Linear(3, 2), snn.Leaky(beta=0.9, reset_delay=False))
    with pytest.raises(TypeError, match="reset_delay"):
        RTRL(net)
    RTRL(nn.Sequential(nn.Linear(3, 2), snn.Leaky(beta=0.9))).remove()   # tap was released


def test_rtrl_on_spiking_mamba_net_streams():
    mamba = pytest.importorskip("bimsnn.ssm.mamba")
    torch.manual_seed(0)
    net = mamba.SpikingMambaNet(mamba.MambaConfig(d_model=8, n_inputs=3, n_classes=2))
    x = (torch.rand(12, 2, 3) < 0.5).float()
    with torch.no_grad():
        ref = [net.step(x[0])[0]]
    with RTRL(net) as rule:
        assert len(rule.pairs) == 3            # in_fc→in_lif, out_proj→lif, out_fc→out_li
        rule.reset(2)
        state = None
        for t in range(12):
            out, state = net.step(x[t], state)
            rule.backward(out.pow(2).sum())
    grads = {n: p.grad for n, p in net.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    with torch.no_grad():
        assert torch.equal(net.step(x[0])[0], ref[0])
    block = net.blocks[0]                          # a bare block: out_proj → lif (+ residual)
    with RTRL(block) as rule:
        assert rule.pairs == [(block.out_proj, block.lif)]
        rule.reset(2)
        state, s = None, (torch.rand(12, 2, 8) < 0.5).float()
        block.zero_grad()
        for t in range(12):
            out, state = block.step(s[t], state)
            rule.backward(out.sum() + state.mem.pow(2).sum())
    assert torch.isfinite(block.out_proj.weight.grad).all()


def test_rtrl_init_hidden_sequential():
    """snnTorch's init_hidden=True style (state in the module's mem buffer)."""
    utils = pytest.importorskip("snntorch.utils")

    def make():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(N, H),
                             snn.Leaky(beta=0.9, init_hidden=True, output=True)).double()

    x, tgt = _data(6)

    def run(net, rule):
        utils.reset(net)
        total = 0.0
        if rule:
            rule.reset(B)
        for t in range(T):
            spk, mem = net(x[t])
            loss = ((mem - tgt[t]) ** 2).sum() + spk.sum()
            if rule:
                rule.backward(loss)
            else:
                total = total + loss
        if not rule:
            total.backward()
        return net[0].weight.grad.clone()

    g_bptt = run(make(), None)
    net = make()
    with RTRL(net) as rule:
        assert _rel(run(net, rule), g_bptt) <= 1e-5


@pytest.mark.filterwarnings("ignore:Leaky.multi_step bypasses")   # bimsnn.neurons' own warning
def test_fused_multi_step_is_flagged():
    """A fused multi_step bypasses module hooks: the rule warns instead of silently doing BPTT."""
    neurons = pytest.importorskip("bimsnn.neurons")
    fc, lif = nn.Linear(N, H), neurons.Leaky(beta=0.9)
    if not hasattr(lif, "multi_step"):
        pytest.skip("bimsnn.Leaky has no multi_step")
    x, _ = _data(0)
    with RTRL(nn.Sequential(fc, lif)) as rule, pytest.warns(UserWarning, match="no per-step"):
        rule.reset(B)
        spk, mem = lif.multi_step(fc(x.float()))
        rule.backward(mem.sum())
