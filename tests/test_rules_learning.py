"""An unmodified snnTorch tutorial-5 net learns with bimsnn.rules.Hybrid (online gradient + STDP).

Symbols: T steps, B batch, C input features, K classes.
"""

import pytest
import snntorch as snn
import torch
from torch import nn

from bimsnn.rules import STDP, Hybrid

NUM_INPUTS, NUM_HIDDEN, NUM_OUTPUTS, NUM_STEPS, BETA = 20, 32, 3, 25, 0.95


class Net(nn.Module):
    """snnTorch tutorial 5, verbatim structure: fc1, lif1, fc2, lif2, time loop in forward."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(NUM_INPUTS, NUM_HIDDEN)
        self.lif1 = snn.Leaky(beta=BETA)
        self.fc2 = nn.Linear(NUM_HIDDEN, NUM_OUTPUTS)
        self.lif2 = snn.Leaky(beta=BETA)

    def forward(self, x):
        mem1 = self.lif1.init_leaky()
        mem2 = self.lif2.init_leaky()
        spk2_rec = []
        mem2_rec = []
        for _step in range(NUM_STEPS):
            cur1 = self.fc1(x)
            spk1, mem1 = self.lif1(cur1, mem1)
            cur2 = self.fc2(spk1)
            spk2, mem2 = self.lif2(cur2, mem2)
            spk2_rec.append(spk2)
            mem2_rec.append(mem2)
        return torch.stack(spk2_rec, dim=0), torch.stack(mem2_rec, dim=0)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny nets: extra threads only contend on the shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _blobs(n: int, gen: torch.Generator):
    """K Gaussian clusters in C dims (static input, as tutorial 5's flattened images)."""
    centers = torch.randn(NUM_OUTPUTS, NUM_INPUTS, generator=torch.Generator().manual_seed(7))
    y = torch.randint(0, NUM_OUTPUTS, (n,), generator=gen)
    x = centers[y] + 1.0 * torch.randn(n, NUM_INPUTS, generator=gen)
    return x, y


def test_tutorial5_net_learns_with_hybrid():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    x_train, y_train = _blobs(512, gen)
    x_test, y_test = _blobs(256, gen)
    net = Net()
    rule = Hybrid(net, lam=0.9, stdp=STDP(A_plus=1e-3, A_minus=1.05e-3), grad="rtrl")
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    ce = nn.CrossEntropyLoss()

    def evaluate(x, y):
        with torch.no_grad():
            spk, mem = net(x)
            loss = sum(ce(mem[t], y) for t in range(NUM_STEPS)) / NUM_STEPS
            acc = (spk.sum(0).argmax(1) == y).float().mean()
        return float(loss), float(acc)

    loss0, _ = evaluate(x_train, y_train)
    for _epoch in range(2):
        for i in range(0, len(x_train), 32):
            xb, yb = x_train[i:i + 32], y_train[i:i + 32]
            rule.reset(len(xb))
            spk_rec, mem_rec = net(xb)
            loss_val = torch.zeros(1)
            for step in range(NUM_STEPS):
                loss_val += ce(mem_rec[step], yb)
            opt.zero_grad()
            rule.backward(loss_val)          # instead of loss_val.backward()
            opt.step()
    loss1, _ = evaluate(x_train, y_train)
    _, acc = evaluate(x_test, y_test)
    rule.remove()
    print(f"train loss {loss0:.3f} -> {loss1:.3f}; held-out accuracy {acc:.3f} (chance 0.333)")
    assert loss1 < 0.6 * loss0
    assert acc > 0.7
