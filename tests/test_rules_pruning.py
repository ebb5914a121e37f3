"""Adaptive stochastic pruning (paper eq. 9-10) during a short training run.

Symbols: ρ target sparsity, s sparsity, θ threshold. Tolerance: |s − ρ| ≤ 0.02 (2 points),
both at the last step and averaged over the last 50 of 300 steps (measured ≤ 0.006).
"""

import pytest
import torch
from torch import nn

from bimsnn.rules import AdaptivePruning


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _train(rho: float, steps: int = 300):
    torch.manual_seed(0)
    teacher = nn.Linear(20, 5)
    net = nn.Sequential(nn.Linear(20, 64), nn.Tanh(), nn.Linear(64, 5))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    pruner = AdaptivePruning(net, target_sparsity=rho, beta=200.0, gamma=0.02, seed=1)
    hist, losses = [], []
    for _ in range(steps):
        x = torch.randn(64, 20)
        loss = (net(x) - teacher(x)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        hist.append(pruner.step())            # after opt.step()
        losses.append(loss.item())
    return net, pruner, hist, losses


@pytest.mark.parametrize("rho", [0.5, 0.9])
def test_pruning_reaches_target_sparsity(rho):
    net, pruner, hist, losses = _train(rho)
    tail = sum(hist[-50:]) / 50
    print(f"ρ={rho}: final s={hist[-1]:.4f}, mean(last 50)={tail:.4f}, θ={pruner.theta}, "
          f"loss {losses[0]:.3f} -> {losses[-1]:.4f}")
    assert abs(hist[-1] - rho) <= 0.02 and abs(tail - rho) <= 0.02
    assert losses[-1] < 0.2 * losses[0]                 # training still works
    pruner.remove()


def test_masks_zero_small_weights_and_their_gradients():
    net, pruner, _, _ = _train(0.5, steps=60)
    for p, m, lat in zip(pruner.params, pruner.masks, pruner.latent):
        assert torch.all(p[~m] == 0)
        assert lat[~m].abs().mean() < lat[m].abs().mean()     # small ones are pruned
    x = torch.randn(8, 20)
    net.zero_grad()
    net(x).pow(2).sum().backward()
    for p, m in zip(pruner.params, pruner.masks):
        assert torch.all(p.grad[~m] == 0) and p.grad[m].abs().sum() > 0
    pruner.remove()
    net.zero_grad()
    net(x).pow(2).sum().backward()                  # hook gone: pruned entries get gradient
    assert all(p.grad[~m].abs().sum() > 0 for p, m in zip(pruner.params, pruner.masks))
