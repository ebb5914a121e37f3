"""Conv1d / Conv2d → neuron layers under RTRL and STDP, float64, against BPTT and eq. 5.

Symbols: T steps, B batch, C input channels, O output channels, (Hh, Ww) input map.
Tolerances: RTRL vs BPTT relative error ≤ 1e-6 per parameter (issue 16; measured ≤ 1e-14,
printed with -s); STDP Ω vs the literal double sum ≤ 1e-6 relative (measured ~1e-16).
"""

import pytest
import snntorch as snn
import torch
from snntorch import utils
from torch import nn

import bimsnn
from bimsnn.rules import RTRL, STDP, Hybrid, stdp_omega_ref

T, B, C, O, HW = 32, 2, 2, 3, 8
KW = dict(A_plus=0.02, A_minus=0.015, tau_plus=6.0, tau_minus=4.0)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def _x(seed, shape=(C, HW, HW), p=0.3):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, B, *shape, generator=g) < p).double() * 1.5


def _net(seed, *mods):
    """Sequential of ``mods`` (modules, or one zero-argument factory called after seeding,
    so that default initialisations agree between the BPTT and the rule run)."""
    torch.manual_seed(seed)
    if len(mods) == 1 and callable(mods[0]) and not isinstance(mods[0], nn.Module):
        mods = mods[0]()
    net = nn.Sequential(*mods).double()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                m.weight.uniform_(-0.15, 0.45)        # frequent, not saturated, spiking
    return net


def _run(net, x, rule=None, state_fn=None):
    """Explicit-state loop (or init_hidden when state_fn is None and the neuron keeps it);
    loss on spikes and membrane at every step. Returns {name: grad}."""
    lif = net[-1]
    states = state_fn(lif) if state_fn else None
    if rule is not None:
        rule.reset(x.shape[1])
    total = 0.0
    for t in range(x.shape[0]):
        h = x[t]
        for m in net[:-1]:
            h = m(h)
        if states is None:
            out = lif(h)
        else:
            out = lif(h, *states)
            states = out[1:]
        spk, mem = out[0], out[-1]
        g = torch.Generator().manual_seed(1000 + t)
        tgt = torch.rand(spk.shape, generator=g, dtype=torch.float64)
        loss = ((spk.double() - tgt) ** 2).sum() + 0.3 * ((mem - 0.5) ** 2 * tgt).sum()
        if rule is not None:
            rule.backward(loss)
        else:
            total = total + loss
    if rule is None:
        total.backward()
    return {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}


def _leaky_state(lif):
    return (lif.init_leaky(),)


def _syn_state(lif):
    return lif.init_synaptic()


def _compare(make, x, state_fn, **rule_kw):
    g_bptt = _run(make(), x, None, state_fn)
    net = make()
    with RTRL(net, **rule_kw) as rule:
        g_rtrl = _run(net, x, rule, state_fn)
    assert set(g_rtrl) == set(g_bptt)
    return {k: _rel(g_rtrl[k], g_bptt[k]) for k in g_bptt}


CASES = {
    "conv2d_leaky": (lambda: (nn.Conv2d(C, O, 3, padding=1), snn.Leaky(beta=0.8)), _leaky_state),
    "maxpool_before_leaky": (lambda: (nn.Conv2d(C, O, 3), nn.MaxPool2d(2),
                                      snn.Leaky(beta=0.8)), _leaky_state),
    "avgpool_before_leaky": (lambda: (nn.Conv2d(C, O, 3, padding=1, stride=2), nn.AvgPool2d(2),
                                      snn.Leaky(beta=0.8)), _leaky_state),
    "zero_reset_per_channel_beta": (lambda: (
        nn.Conv2d(C, O, 3, padding="same", padding_mode="reflect"),
        snn.Leaky(beta=torch.tensor([0.5, 0.8, 0.95]).view(O, 1, 1), reset_mechanism="zero",
                  learn_beta=True)), _leaky_state),
    "grouped_dilated_learn_threshold": (lambda: (
        nn.Conv2d(2 * C, 2 * O, 3, padding=2, dilation=2, groups=2),
        bimsnn.Leaky(beta=0.85, learn_threshold=True, learn_beta=True)), _leaky_state),
    "flatten_before_leaky": (lambda: (nn.Conv2d(C, O, 3), nn.Flatten(),
                                      snn.Leaky(beta=0.8)), _leaky_state),
    "conv2d_synaptic": (lambda: (nn.Conv2d(C, O, 3, padding=1),
                                 snn.Synaptic(alpha=0.7, beta=0.85, learn_alpha=True)),
                        _syn_state),
    "maxpool_synaptic_zero": (lambda: (nn.Conv2d(C, O, 3), nn.MaxPool2d(2, stride=1),
                                       bimsnn.Synaptic(alpha=0.6, beta=0.9,
                                                       reset_mechanism="zero")), _syn_state),
}


@pytest.mark.parametrize("name", list(CASES))
def test_conv_rtrl_equals_bptt(name):
    mods, state_fn = CASES[name]
    shape = (2 * C if "grouped" in name else C, HW, HW)
    errs = _compare(lambda: _net(1, mods), _x(0, shape), state_fn)
    print(name, {k: f"{v:.1e}" for k, v in errs.items()})
    assert all(v <= 1e-6 for v in errs.values()), errs


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("pool", [None, "max"])
def test_conv1d_rtrl_equals_bptt(pool):
    def mods():
        m = [nn.Conv1d(C, O, 4, padding="same", stride=1)]
        m += [nn.MaxPool1d(3, stride=2)] if pool else []
        return [*m, snn.Leaky(beta=0.9, learn_beta=True)]

    def make():
        return _net(2, mods)
    errs = _compare(make, _x(3, (C, 16)), _leaky_state)
    print("conv1d", pool, errs)
    assert all(v <= 1e-6 for v in errs.values()), errs


def test_conv_init_hidden_tutorial7_layer():
    """Tutorial 7's first layer, init_hidden=True: Conv2d → MaxPool2d → Leaky (one layer)."""
    def make():
        return _net(4, lambda: (nn.Conv2d(C, O, 5), nn.MaxPool2d(2),
                                snn.Leaky(beta=0.5, init_hidden=True, output=True)))

    def run(net, rule):
        utils.reset(net)
        return _run(net, _x(5, (C, 12, 12)), rule)

    g_bptt = run(make(), None)
    net = make()
    with RTRL(net) as rule:
        g_rtrl = run(net, rule)
    errs = {k: _rel(g_rtrl[k], g_bptt[k]) for k in g_bptt}
    print("init_hidden", errs)
    assert all(v <= 1e-6 for v in errs.values()), errs


def test_pool_traces_input_is_approximate_and_cheaper():
    """pool_traces="input": presynaptic traces through the previous step's max-pool
    selection; close to, but not equal to, BPTT (the test shows both)."""
    mods, state_fn = CASES["maxpool_before_leaky"]
    errs = _compare(lambda: _net(1, mods), _x(0), state_fn, pool_traces="input")
    print("pool_traces=input", errs)
    assert errs["0.weight"] > 1e-6 and errs["0.weight"] < 0.5
    assert errs["0.bias"] <= 1e-6              # the bias trace is exact either way


def test_pool_flatten_dropout_after_the_neuron():
    """Conv→Leaky→MaxPool→Flatten→Dropout→Linear→Leaky: the routing modules after a neuron
    only change the next connection's input. The last pair is exact; the conv's gradient
    (cross-layer, within-step) keeps BPTT's direction."""
    def make():
        return _net(6, lambda: (nn.Conv2d(C, O, 3, padding=1), snn.Leaky(beta=0.8),
                                nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.2),
                                nn.Linear(O * 16, 4), snn.Leaky(beta=0.9)))

    def run(net, rule):
        torch.manual_seed(0)                       # same dropout masks in both runs
        mems, total = [net[1].init_leaky(), net[6].init_leaky()], 0.0
        if rule:
            rule.reset(B)
        x = _x(7)
        for t in range(T):
            s1, mems[0] = net[1](net[0](x[t]), mems[0])
            h = net[5](net[4](net[3](net[2](s1.double()))))
            s2, mems[1] = net[6](h, mems[1])
            loss = ((s2.double() - 0.3) ** 2).sum() + ((mems[1] - 0.5) ** 2).sum()
            if rule:
                rule.backward(loss)
            else:
                total = total + loss
        if not rule:
            total.backward()
        return {k: p.grad.clone() for k, p in net.named_parameters()}

    g_bptt = run(make(), None)
    net = make()
    with RTRL(net) as rule:
        assert [type(fc).__name__ for fc, _ in rule.pairs] == ["Conv2d", "Linear"]
        g_rtrl = run(net, rule)
    assert _rel(g_rtrl["5.weight"], g_bptt["5.weight"]) <= 1e-6
    cos = float(torch.nn.functional.cosine_similarity(g_rtrl["0.weight"].flatten(),
                                                      g_bptt["0.weight"].flatten(), dim=0))
    print("conv layer cosine to BPTT", cos)
    assert cos > 0.9


# ------------------------------------------------------------------------ STDP on conv
def _conv_literal(pre, post, conv, **kw):
    """Eq. 5 over every (input position, output position) pair the kernel connects:
    for each output position p and kernel offset k, the pre train at input position
    p·stride + k·dilation − padding (zero outside) pairs with the post train at p."""
    O_, Cg, kh, kw_ = conv.weight.shape
    sh, sw = conv.stride
    ph, pw = conv.padding
    dh, dw = conv.dilation
    Hin, Win = pre.shape[-2:]
    omega = torch.zeros(O_, Cg, kh, kw_, dtype=torch.float64)
    for i in range(post.shape[-2]):
        for j in range(post.shape[-1]):
            for a in range(kh):
                for b in range(kw_):
                    u, v = i * sh + a * dh - ph, j * sw + b * dw - pw
                    if 0 <= u < Hin and 0 <= v < Win:
                        omega[:, :, a, b] += stdp_omega_ref(pre[..., u, v], post[..., i, j],
                                                            **kw)
    return omega


@pytest.mark.parametrize("bound", ["additive", "soft"])
def test_conv_stdp_equals_literal_double_sum(bound):
    net = _net(8, nn.Conv2d(C, O, 3, stride=2, padding=1), snn.Leaky(beta=0.7))
    conv, lif = net
    x = _x(9, (C, 9, 9))
    w = conv.weight.detach().clone()
    net.requires_grad_(False)                 # pure STDP: no graph needed, none built
    with STDP(net, bound=bound, w_min=-0.5, w_max=1.0, **KW) as rule:
        rule.reset(B)
        mem, post = lif.init_leaky(), []
        for t in range(T):
            spk, mem = lif(conv(x[t]), mem)
            post.append(spk.double())
            rule.backward(None)
        omega = rule.omegas[0].clone()
    post = torch.stack(post)
    assert net[0].weight.grad is not None
    assert post.sum() > 50 and x.sum() > 50
    ltp = _conv_literal(x, post, conv, **{**KW, "A_minus": 0.0})     # pairs with Δ ≥ 0
    ltd = -_conv_literal(x, post, conv, **{**KW, "A_plus": 0.0})     # pairs with Δ < 0
    if bound == "soft":                # per weight entry: (w_max − w) LTP − (w − w_min) LTD
        ref = (1.0 - w) * ltp - (w + 0.5) * ltd
    else:
        ref = ltp - ltd
    err = _rel(omega, ref)
    print(f"conv STDP {bound}: rel error {err:.1e}")
    assert err <= 1e-6
    assert torch.allclose(net[0].weight.grad, -omega, atol=1e-12)


def test_conv_stdp_with_pooling_with_and_without_graph():
    """Max pooling before the neuron: the route comes from the autograd graph, or, under
    no_grad, from the registered MaxPool2d module; both give the same Ω."""
    mods, _ = CASES["maxpool_before_leaky"]
    x, omegas = _x(11), []
    for grad in (True, False):
        net = _net(1, mods)
        with STDP(net, **KW) as rule, torch.set_grad_enabled(grad):
            rule.reset(B)
            mem = net[2].init_leaky()
            for t in range(T):
                _, mem = net[2](net[1](net[0](x[t])), mem)
                rule.backward(None)
            omegas.append(rule.omegas[0].clone())
    assert omegas[0].abs().sum() > 0
    assert torch.allclose(omegas[0], omegas[1], rtol=1e-12, atol=1e-15)


def test_conv_hybrid_mixes_rtrl_and_stdp():
    mods, state_fn = CASES["maxpool_before_leaky"]
    x = _x(0)
    net = _net(1, mods)
    with RTRL(net) as rule:
        g = _run(net, x, rule, state_fn)
    net = _net(1, mods)
    with STDP(net, **KW) as rule:
        rule.reset(B)
        mem = net[2].init_leaky()
        for t in range(T):
            _, mem = net[2](net[1](net[0](x[t])), mem)
            rule.backward(None)
        omega = rule.omegas[0].clone()
    net = _net(1, mods)
    with Hybrid(net, lam=0.3, stdp=STDP(**KW)) as rule:
        h = _run(net, x, rule, state_fn)
    assert torch.allclose(h["0.weight"], 0.3 * g["0.weight"] - 0.7 * omega, rtol=1e-6,
                          atol=1e-10)


# ------------------------------------------------------------------ attach-time errors
@pytest.mark.parametrize("mid,match", [(nn.Dropout(0.1), "place it after the neuron"),
                                       (nn.BatchNorm2d(O), "BatchNorm2d")])
def test_unsupported_layer_between_conv_and_neuron_fails_at_attach(mid, match):
    net = nn.Sequential(nn.Conv2d(C, O, 3), mid, snn.Leaky(beta=0.9))
    for make in (RTRL, STDP, Hybrid):
        with pytest.raises(TypeError, match=match):
            make(net)
    RTRL(nn.Sequential(nn.Conv2d(C, O, 3), snn.Leaky(beta=0.9))).remove()


def test_untraceable_connection_fails_at_attach():
    net = nn.Sequential(nn.ConvTranspose2d(C, O, 3), snn.Leaky(beta=0.9))
    with pytest.raises(TypeError, match="ConvTranspose2d"):
        RTRL(net)
    net = nn.Sequential(nn.Conv2d(C, O, 3), nn.Conv3d(1, 1, 1), snn.Leaky(beta=0.9))
    with pytest.raises(TypeError, match="Conv3d"):
        STDP(net)
