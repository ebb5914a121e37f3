"""STDP (paper eq. 5-6) against the literal double sum, and Hybrid (eq. 4) limits, float64.

Symbols: T steps, B batch, N pre (Linear inputs), H post (Leaky), Ω (H, N).
Tolerances: Ω vs literal double sum (:func:`stdp_omega_ref`) ≤ 1e-6 abs (measured ~1e-17);
the reference itself vs a loop over spike pairs ≤ 1e-12; Hybrid limits: rel. 1e-6
(snnTorch's spikes are float32, so scaling the loss by λ rounds differently; measured 5e-9).
"""

import math

import numpy as np
import pytest
import snntorch as snn
import torch
from torch import nn

from bimsnn.rules import RTRL, STDP, Hybrid, stdp_omega_ref, stdp_step, stdp_window

T, B, N, H = 40, 2, 5, 4
KW = dict(A_plus=0.02, A_minus=0.015, tau_plus=7.0, tau_minus=4.0)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _net(seed, sizes=(N, H)):
    torch.manual_seed(seed)
    mods = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        fc = nn.Linear(a, b)
        with torch.no_grad():
            fc.weight.uniform_(-0.2, 0.9)              # enough drive for frequent post spikes
        mods += [fc, snn.Leaky(beta=0.8)]
    return nn.Sequential(*mods).double()


def _spikes(seed, n=N):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, B, n, generator=g) < 0.3).double()


def _run(net, x, rule, loss_fn=None):
    """Per-step loop; returns (pre, post) spike trains of the first pair."""
    L = len(net) // 2
    mems = [net[2 * k + 1].init_leaky() for k in range(L)]
    rule.reset(x.shape[1])
    post = []
    for t in range(x.shape[0]):
        h = x[t]
        for k in range(L):
            h, mems[k] = net[2 * k + 1](net[2 * k](h.double()), mems[k])
            if k == 0:
                post.append(h.detach().double())
        rule.backward(None if loss_fn is None else loss_fn(h.double(), mems[-1], t))
    return x, torch.stack(post)


def _spike_pair_loop(pre, post, A_plus, A_minus, tau_plus, tau_minus):
    """Eq. 5 by a loop over every (post spike, pre spike) pair; LTP and LTD parts."""
    ltp = torch.zeros(post.shape[-1], pre.shape[-1], dtype=torch.float64)
    ltd = torch.zeros_like(ltp)
    for b in range(pre.shape[1]):
        pre_spikes = pre[:, b].nonzero().tolist()
        for ti, i in post[:, b].nonzero().tolist():
            for tj, j in pre_spikes:
                d = ti - tj                                   # t_i − t_j (post − pre)
                if d >= 0:
                    ltp[i, j] += A_plus * math.exp(-d / tau_plus)
                else:
                    ltd[i, j] += A_minus * math.exp(d / tau_minus)
    return ltp / pre.shape[1], ltd / pre.shape[1]             # batch mean


def test_omega_ref_equals_spike_pair_loop():
    g = torch.Generator().manual_seed(0)
    pre = (torch.rand(T, B, N, generator=g) < 0.3).double()
    post = (torch.rand(T, B, H, generator=g) < 0.3).double()
    w = torch.rand(H, N, generator=g, dtype=torch.float64)
    ltp, ltd = _spike_pair_loop(pre, post, **KW)
    assert torch.allclose(stdp_omega_ref(pre, post, **KW), ltp - ltd, atol=1e-12)
    soft = stdp_omega_ref(pre, post, bound="soft", w=w, w_min=-0.5, w_max=1.5, **KW)
    assert torch.allclose(soft, (1.5 - w) * ltp - (w + 0.5) * ltd, atol=1e-12)


def test_stdp_window_numpy_and_torch_agree():
    dt = np.arange(-30, 31)
    ref = np.where(dt >= 0, 0.02 * np.exp(-dt / 7.0), -0.015 * np.exp(dt / 4.0))
    assert np.allclose(stdp_window(dt, 0.02, 7.0, 0.015, 4.0), ref, rtol=0, atol=1e-15)
    out = stdp_window(torch.tensor(dt, dtype=torch.float64), 0.02, 7.0, 0.015, 4.0)
    assert torch.allclose(out, torch.tensor(ref), rtol=0, atol=1e-15)


def test_stdp_step_is_pure_and_sums_to_eq5():
    """stdp_step: state in, state out (the inputs are not modified); summed over a
    sequence it is Ω of eq. 5."""
    pre, post = _spikes(4), _spikes(5, H)
    state, total = None, 0.0
    for t in range(T):
        before = None if state is None else (state.pre.clone(), state.post.clone())
        dw, new = stdp_step(pre[t], post[t], state, **KW)
        if before is not None:
            assert torch.equal(state.pre, before[0]) and torch.equal(state.post, before[1])
        state, total = new, total + dw
    assert torch.allclose(total, stdp_omega_ref(pre, post, **KW), atol=1e-12)


@pytest.mark.parametrize("bound", ["additive", "soft"])
def test_online_omega_equals_literal_double_sum(bound):
    net = _net(0)
    w = net[0].weight.detach().clone()
    with STDP(net, bound=bound, w_min=-0.5, w_max=1.5, **KW) as rule:
        pre, post = _run(net, _spikes(1), rule)
        omega = rule.omegas[0].clone()
        grad = net[0].weight.grad.clone()
    assert post.sum() > 20 and pre.sum() > 20                  # the test sees many pairs
    if bound == "soft":
        expected = stdp_omega_ref(pre, post, bound="soft", w=w, w_min=-0.5, w_max=1.5, **KW)
    else:
        expected = stdp_omega_ref(pre, post, **KW)
    err = float((omega - expected).abs().max())
    print(f"{bound}: |Ω| max {float(expected.abs().max()):.4f}, error {err:.2e}")
    assert err <= 1e-6
    assert torch.allclose(grad, -omega, rtol=0, atol=1e-12)   # .grad = −Ω
    assert net[0].bias.grad is None


def test_same_step_pair_is_potentiation():
    """W(0) = A+: a pre spike that makes the post neuron fire in the same step is LTP."""
    fc, lif = nn.Linear(1, 1, bias=False).double(), snn.Leaky(beta=0.5).double()
    with torch.no_grad():
        fc.weight.fill_(2.0)
    x = torch.zeros(6, 1, 1, dtype=torch.float64)
    x[3] = 1.0
    with STDP(nn.Sequential(fc, lif), **KW) as rule:
        _, post = _run(nn.Sequential(fc, lif), x, rule)
        assert post[:, 0, 0].tolist() == [0, 0, 0, 1, 0, 0]
        assert rule.omegas[0].item() == pytest.approx(KW["A_plus"], abs=1e-15)


def test_stdp_rejects_a_loss():
    net = _net(0)
    with STDP(net) as rule, pytest.raises(ValueError, match="Hybrid"):
        rule.backward(torch.tensor(1.0))


def _loss(spk, mem, t):
    return ((mem - 0.3 * (t % 3)) ** 2).sum() + spk.sum()


def _grads(net):
    return {k: (None if p.grad is None else p.grad.clone()) for k, p in net.named_parameters()}


def _rtrl_and_omega(seed, sizes=(N, H)):
    net = _net(seed, sizes)
    with RTRL(net) as rule:
        _run(net, _spikes(3, sizes[0]), rule, _loss)
    g = _grads(net)
    net = _net(seed, sizes)
    with STDP(net, **KW) as rule:
        _run(net, _spikes(3, sizes[0]), rule)
        omegas = [o.clone() for o in rule.omegas]
    return g, omegas


@pytest.mark.parametrize("lam", [1.0, 0.0, 0.3])
def test_hybrid_mixes_gradient_and_stdp(lam):
    g, (omega,) = _rtrl_and_omega(5)
    net = _net(5)
    with Hybrid(net, lam=lam, stdp=STDP(**KW)) as rule:
        _run(net, _spikes(3), rule, _loss)
    h = _grads(net)
    assert torch.allclose(h["0.weight"], lam * g["0.weight"] - (1 - lam) * omega,
                          rtol=1e-6, atol=1e-10)
    assert torch.allclose(h["0.bias"], lam * g["0.bias"], rtol=1e-6, atol=1e-10)
    if lam == 1.0:
        assert torch.equal(h["0.weight"], g["0.weight"])


@pytest.mark.parametrize("lam", [0.3, 0.9])
def test_hybrid_balance_rescales_stdp_to_gradient_norm(lam):
    """balance=True: .grad = λG − (1 − λ)‖G‖Ω/‖Ω‖ after the sequence, per pair weight."""
    g, (omega,) = _rtrl_and_omega(5)
    net = _net(5)
    with Hybrid(net, lam=lam, stdp=STDP(**KW), balance=True) as rule:
        _run(net, _spikes(3), rule, _loss)
        assert torch.equal(rule.stdp.omegas[0], omega)            # Ω itself unchanged
    h = _grads(net)
    G = g["0.weight"]
    want = lam * G - (1 - lam) * G.norm() * omega / omega.norm()
    assert torch.allclose(h["0.weight"], want, rtol=1e-6, atol=1e-10)
    stdp_part = h["0.weight"] - lam * G
    assert torch.isclose(stdp_part.norm(), (1 - lam) * G.norm(), rtol=1e-6)
    assert torch.allclose(h["0.bias"], lam * g["0.bias"], rtol=1e-6, atol=1e-10)
    # The term does not depend on the STDP amplitude any more (only on Ω's direction).
    net = _net(5)
    with Hybrid(net, lam=lam, stdp=STDP(**{**KW, "A_plus": 20 * KW["A_plus"],
                                              "A_minus": 20 * KW["A_minus"]}),
                balance=True) as rule:
        _run(net, _spikes(3), rule, _loss)
    assert torch.allclose(net[0].weight.grad, h["0.weight"], rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("lam", [0.3, 0.9])
def test_hybrid_element_balance_bounds_each_weight_by_its_own_gradient(lam):
    """balance="element": .grad = λG − (1 − λ)|G| ⊙ Ω/max|Ω|: no weight's STDP term exceeds
    (1 − λ)/λ of its own gradient term, and a weight without gradient gets none."""
    g, (omega,) = _rtrl_and_omega(5)
    net = _net(5)
    with Hybrid(net, lam=lam, stdp=STDP(**KW), balance="element") as rule:
        _run(net, _spikes(3), rule, _loss)
    h = _grads(net)
    G = g["0.weight"]
    want = lam * G - (1 - lam) * G.abs() * omega / omega.abs().max()
    assert torch.allclose(h["0.weight"], want, rtol=1e-6, atol=1e-12)
    stdp_part = h["0.weight"] - lam * G
    assert (stdp_part.abs() <= (1 - lam) * G.abs() * (1 + 1e-5) + 1e-12).all()   # float32
    assert stdp_part.abs().max() > 0
    assert torch.allclose(h["0.bias"], lam * g["0.bias"], rtol=1e-6, atol=1e-10)


def test_hybrid_balance_resets_between_sequences():
    """Two sequences accumulate two independently balanced terms into .grad."""
    net = _net(5)
    with Hybrid(net, lam=0.5, stdp=STDP(**KW), balance=True) as rule:
        _run(net, _spikes(3), rule, _loss)
        once = net[0].weight.grad.clone()
        _run(net, _spikes(3), rule, _loss)
    assert torch.allclose(net[0].weight.grad, 2 * once, rtol=1e-6, atol=1e-10)


def test_hybrid_balance_needs_positive_lambda():
    with pytest.raises(ValueError, match="λ > 0"):
        Hybrid(_net(0), lam=0.0, balance=True)


def test_hybrid_per_layer_lambda():
    sizes = (N, 6, 3)
    g, omegas = _rtrl_and_omega(7, sizes)
    net = _net(7, sizes)
    with Hybrid(net, lam={net[0]: 0.2}, stdp=STDP(**KW)) as rule:    # net[2] → λ = 1
        _run(net, _spikes(3, N), rule, _loss)
    h = _grads(net)
    assert torch.allclose(h["0.weight"], 0.2 * g["0.weight"] - 0.8 * omegas[0], rtol=1e-6)
    assert torch.allclose(h["0.bias"], 0.2 * g["0.bias"], rtol=1e-6)
    assert torch.allclose(h["2.weight"], g["2.weight"], rtol=1e-6)
    net = _net(7, sizes)
    with Hybrid(net, lam=[0.2, 0.6], stdp=STDP(**KW)) as rule:
        _run(net, _spikes(3, N), rule, _loss)
    h = _grads(net)
    assert torch.allclose(h["2.weight"], 0.6 * g["2.weight"] - 0.4 * omegas[1], rtol=1e-6)


def test_hybrid_autograd_is_within_step_gradient():
    """grad="autograd": plain autograd with the carried membrane detached, no traces."""
    net = _net(9)
    fc, lif = net
    x, mem = _spikes(3), lif.init_leaky()
    for t in range(T):
        spk, mem = lif(fc(x[t]), mem.detach())
        _loss(spk.double(), mem, t).backward()
    ref = _grads(net)
    net = _net(9)
    with Hybrid(net, lam=1.0, grad="autograd") as rule:
        _run(net, x, rule, _loss)
    h = _grads(net)
    for k in ref:
        assert torch.allclose(h[k], ref[k], rtol=0, atol=1e-10)


def test_hybrid_takes_over_an_attached_stdp():
    net = _net(0)
    stdp = STDP(net, **KW)
    with Hybrid(net, lam=0.0, stdp=stdp) as rule:
        _run(net, _spikes(1), rule)
        assert len(stdp.taps) == 0 and len(rule.taps) == 1
        assert torch.allclose(net[0].weight.grad, -stdp.omegas[0], atol=1e-12)


def _train_unsupervised(bound, w_min, w_max):
    """Per-time-step SGD on −Ω with LTP-dominated STDP; returns the final weight."""
    net = _net(2)
    fc, lif = net
    opt = torch.optim.SGD([fc.weight], lr=1.0)
    kw = dict(KW, A_plus=0.05, A_minus=0.01)
    with STDP(net, bound=bound, w_min=w_min, w_max=w_max, **kw) as rule:
        for seed in range(3):
            x, mem = _spikes(seed), lif.init_leaky()
            rule.reset(B)
            for t in range(T):
                _, mem = lif(fc(x[t]), mem)
                opt.zero_grad()
                rule.backward(None)
                opt.step()
    return fc.weight.detach()


def test_soft_bounds_keep_weights_in_range():
    """Soft bounds, optimizer step per time step: w stays in [w_min, w_max]; additive leaves it."""
    w_soft = _train_unsupervised("soft", -0.3, 1.0)
    w_add = _train_unsupervised("additive", -0.3, 1.0)
    print(f"soft: w in [{float(w_soft.min()):.3f}, {float(w_soft.max()):.3f}]; "
          f"additive: max {float(w_add.max()):.3f}")
    assert float(w_add.max()) > 1.0                       # control: the drive exceeds w_max
    assert float(w_soft.min()) >= -0.3 and float(w_soft.max()) <= 1.0
    assert float(w_soft.max()) > 0.9                      # and soft bounds approach it


def test_normalize_rescales_rows():
    net = _net(0)
    with STDP(net, normalize=2.0) as rule:
        rule.normalize_()
    assert torch.allclose(net[0].weight.abs().sum(1), torch.full((H,), 2.0, dtype=torch.float64))
