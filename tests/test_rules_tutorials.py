"""snnTorch tutorial 7's CSNN and a recurrent RLeaky net run unmodified under the rules.

Symbols: T steps, B batch. Checks for CI (seconds): the tutorial's training step, with
``loss.backward()`` replaced by ``rule.backward(loss)``, gives gradients that follow BPTT's;
an RLeaky net's loss falls on a fixed batch. Accuracy against BPTT is measured by
benchmarks/rules_tutorials.py.
"""

import pytest
import snntorch as snn
import torch
from snntorch import functional as SF
from snntorch import surrogate, utils
from torch import nn

from bimsnn.rules import RTRL, STDP, Hybrid

T, B = 6, 8


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tutorial7_net():
    """snnTorch tutorial 7's network, verbatim."""
    spike_grad = surrogate.atan()
    beta = 0.5
    return nn.Sequential(nn.Conv2d(2, 12, 5), nn.MaxPool2d(2),
                         snn.Leaky(beta=beta, spike_grad=spike_grad, init_hidden=True),
                         nn.Conv2d(12, 32, 5), nn.MaxPool2d(2),
                         snn.Leaky(beta=beta, spike_grad=spike_grad, init_hidden=True),
                         nn.Flatten(), nn.Linear(32 * 5 * 5, 10),
                         snn.Leaky(beta=beta, spike_grad=spike_grad, init_hidden=True,
                                   output=True))


def forward_pass(net, data):
    """Tutorial 7's forward_pass, verbatim."""
    spk_rec = []
    utils.reset(net)
    for step in range(data.size(0)):
        spk_out, mem_out = net(data[step])
        spk_rec.append(spk_out)
    return torch.stack(spk_rec)


def _tutorial7_step(method):
    """One tutorial-7 training step's gradients; ``method`` None (BPTT) or a rule class."""
    g = torch.Generator().manual_seed(1)
    data = (torch.rand(T, B, 2, 34, 34, generator=g) < 0.3).float()
    targets = torch.arange(B) % 10
    torch.manual_seed(0)
    net = tutorial7_net()
    with torch.no_grad():                           # enough drive for spikes in 6 steps
        net[0].weight.mul_(3)
        net[3].weight.mul_(3)
    loss_fn = SF.mse_count_loss(correct_rate=0.8, incorrect_rate=0.2)
    rule = None if method is None else method(net)
    net.train()
    if rule is not None:
        rule.reset(B)
        assert [type(fc).__name__ for fc, _ in rule.pairs] == ["Conv2d", "Conv2d", "Linear"]
    spk_rec = forward_pass(net, data)
    loss_val = loss_fn(spk_rec, targets)
    if rule is None:
        loss_val.backward()
    else:
        rule.backward(loss_val)                     # instead of loss_val.backward()
        rule.remove()
    return {k: p.grad.clone() for k, p in net.named_parameters()}


def test_tutorial7_step_gradients_follow_bptt():
    """RTRL on tutorial 7's CSNN: the readout pair is exact, the conv layers (cross-layer,
    within-step credit) keep BPTT's direction (measured cosine 0.97 / 0.999) at a smaller
    norm (0.36 / 0.59 with β = 0.5). Hybrid runs on the same step."""
    g_bptt, g_rtrl = _tutorial7_step(None), _tutorial7_step(RTRL)
    for k in ("7.weight", "7.bias"):
        assert float((g_rtrl[k] - g_bptt[k]).norm() / g_bptt[k].norm()) <= 1e-5
    for k in ("0.weight", "3.weight"):
        cos = torch.nn.functional.cosine_similarity(g_rtrl[k].flatten(), g_bptt[k].flatten(),
                                                    dim=0)
        assert float(cos) > 0.9, (k, float(cos))
    g_h = _tutorial7_step(lambda m: Hybrid(m, lam=0.9, balance=True, stdp=STDP(A_plus=1e-3)))
    assert all(torch.isfinite(v).all() for v in g_h.values())


def test_rleaky_net_training_step_lowers_the_loss():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), snn.RLeaky(beta=0.9, linear_features=16),
                        nn.Linear(16, 2), snn.Leaky(beta=0.9, reset_mechanism="none"))
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(20, B, 6, generator=g) < 0.3).float()
    y = torch.arange(B) % 2
    x[:5, :, :3] += (y == 0).float()[None, :, None]
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    ce, losses = nn.CrossEntropyLoss(), []
    with RTRL(net) as rule:
        for _ in range(15):
            rule.reset(B)
            spk, mem = net[1].init_rleaky()
            mem2, loss = net[3].init_leaky(), 0.0
            for t in range(20):
                spk, mem = net[1](net[0](x[t].clamp(max=1)), spk, mem)
                _, mem2 = net[3](net[2](spk), mem2)
                if t >= 15:
                    loss = loss + ce(mem2, y)
            opt.zero_grad()
            rule.backward(loss)
            opt.step()
            losses.append(float(loss.detach()))
    assert net[1].recurrent.weight.grad is not None
    assert losses[-1] < 0.8 * losses[0]
