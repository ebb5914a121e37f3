"""Hooks: pairing, structural check, remove(), and "online means online" (graph probe).

Symbols: T steps, B batch, N inputs, H hidden, K outputs.
"""

import pytest
import snntorch as snn
import torch
from torch import nn

from bimsnn.rules import RTRL, STDP, Hybrid, find_pairs

T, B, N, H, K = 12, 4, 8, 10, 3


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Tutorial5(nn.Module):
    """snnTorch tutorial 5 structure: fc1, lif1, fc2, lif2, the time loop in forward."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(N, H)
        self.lif1 = snn.Leaky(beta=0.9)
        self.fc2 = nn.Linear(H, K)
        self.lif2 = snn.Leaky(beta=0.9)

    def forward(self, x):
        mem1 = self.lif1.init_leaky()
        mem2 = self.lif2.init_leaky()
        spk2_rec, mem2_rec = [], []
        for step in range(x.shape[0]):
            cur1 = self.fc1(x[step])
            spk1, mem1 = self.lif1(cur1, mem1)
            cur2 = self.fc2(spk1)
            spk2, mem2 = self.lif2(cur2, mem2)
            spk2_rec.append(spk2)
            mem2_rec.append(mem2)
        return torch.stack(spk2_rec, dim=0), torch.stack(mem2_rec, dim=0)


def _x(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(T, B, N, generator=g) * 2


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("make", [RTRL, STDP, lambda m: Hybrid(m, lam=0.5)],
                         ids=["rtrl", "stdp", "hybrid"])
def test_outputs_unchanged_while_attached_and_after_remove(make):
    torch.manual_seed(0)
    net = Tutorial5()
    spk0, mem0 = net(_x())
    params0 = [p.detach().clone() for p in net.parameters()]
    rule = make(net)
    assert _hooks(net) > 0
    rule.reset(B)
    spk1, mem1 = net(_x())
    rule.backward(None if isinstance(rule, STDP) else mem1.pow(2).sum())
    rule.remove()
    spk2, mem2 = net(_x())
    assert _hooks(net) == 0
    for a, b in ((spk0, spk1), (mem0, mem1), (spk0, spk2), (mem0, mem2)):
        assert torch.equal(a, b)
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), params0))
    RTRL(net).remove()                              # the Leakies are free for a new rule


def _reachable(t: torch.Tensor) -> set:
    """Every autograd node reachable from t.grad_fn."""
    seen, stack = set(), [t.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(n for n, _ in node.next_functions)
    return seen


@pytest.mark.parametrize("with_rule", [True, False])
def test_online_graph_does_not_reach_previous_steps(with_rule):
    """Structural probe: with a rule, step t's graph holds no node of step t−1 and its size
    is constant in t; without one (control) the graph reaches back to t = 0 and grows."""
    torch.manual_seed(0)
    net = Tutorial5()
    rule = Hybrid(net, lam=0.5) if with_rule else None
    if rule:
        rule.reset(B)
    x = _x()
    mem1, mem2 = net.lif1.init_leaky(), net.lif2.init_leaky()
    sizes, prev_nodes = [], set()
    for t in range(T):
        spk1, mem1 = net.lif1(net.fc1(x[t]), mem1)
        spk2, mem2 = net.lif2(net.fc2(spk1), mem2)
        loss = mem2.pow(2).sum() + spk2.sum()
        nodes = _reachable(loss) | _reachable(mem1)
        sizes.append(len(nodes))
        step_nodes = {n for n in nodes if "AccumulateGrad" not in n.name()}
        shared = step_nodes & prev_nodes
        if with_rule:
            assert not shared, f"step {t} reaches nodes of step {t - 1}"
        prev_nodes = step_nodes
        if rule:
            rule.backward(loss)
    if with_rule:
        rule.remove()
        assert len(set(sizes[2:])) == 1, sizes
    else:
        assert sizes[-1] > 3 * sizes[1], sizes


def test_no_pairs_is_a_clear_error():
    with pytest.raises(ValueError, match="no nn.Linear"):
        RTRL(nn.Sequential(snn.Leaky(beta=0.9), nn.Linear(3, 3)))


class Scaled(nn.Module):
    """The Leaky's input is 2·fc(x): not fc's output plus a residual."""

    def __init__(self):
        super().__init__()
        self.fc, self.lif = nn.Linear(N, H), snn.Leaky(beta=0.9)

    def forward(self, x, mem):
        return self.lif(2.0 * self.fc(x), mem)


def test_structural_check_rejects_a_non_additive_input():
    net = Scaled()
    with RTRL(net) as rule, pytest.raises(RuntimeError, match="not its paired Linear"):
        rule.reset(B)
        net(_x()[0], net.lif.init_leaky())
    with RTRL(net, check=False) as rule:             # explicit opt-out
        rule.reset(B)
        net(_x()[0], net.lif.init_leaky())


class Residual(nn.Module):
    """fc_skip registered last, so order pairing gives (fc_skip, lif): the check must catch it.
    The Leaky's input is fc(x) + a residual (input-driven), as in a SpikingMamba block."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(N, H)
        self.skip = nn.Linear(N, H)
        self.lif = snn.Leaky(beta=0.9)
        self.skip_mode = "detach"

    def forward(self, x, mem):
        if self.skip_mode == "no_grad":
            with torch.no_grad():
                r = self.skip(x)
        else:
            r = self.skip(x).detach()
        return self.lif(self.fc(x) + r, mem)


def _run_residual(net, x, rule):
    mem, total = net.lif.init_leaky(), 0.0
    if rule:
        rule.reset(B)
    for t in range(T):
        spk, mem = net(x[t], mem)
        loss = (mem - 0.5).pow(2).sum() + spk.sum()
        if rule:
            rule.backward(loss)
        else:
            total = total + loss
    if not rule:
        total.backward()
    return net.fc.weight.grad.clone()


def test_layers_override_and_additive_residual_is_exact():
    torch.manual_seed(0)
    net = Residual().double()
    x = _x().double()
    assert find_pairs(net)[0] == [(net.skip, net.lif)]
    for mode in ("no_grad", "detach"):              # skip's output does not drive lif
        net.skip_mode = mode
        with RTRL(net) as rule, pytest.raises(RuntimeError, match="not its paired Linear"):
            rule.reset(B)
            net(x[0], net.lif.init_leaky())
    g_bptt = _run_residual(net, x, None)
    net.fc.weight.grad = None
    with RTRL(net, layers=[(net.fc, net.lif)]) as rule:
        g_rtrl = _run_residual(net, x, rule)
    assert float((g_rtrl - g_bptt).norm() / g_bptt.norm()) <= 1e-5


def test_two_rules_on_one_model_are_refused():
    net = Tutorial5()
    with RTRL(net), pytest.raises(RuntimeError, match="already has a rule"):
        STDP(net)


def test_eval_mode_and_no_grad_freeze_plasticity():
    torch.manual_seed(0)
    net = Tutorial5()
    with STDP(net) as rule:
        rule.reset(B)
        net.eval()
        net(_x())
        assert all(float(o.abs().sum()) == 0 for o in rule.omegas)
        net.train()
        with torch.no_grad():                       # pure STDP still learns under no_grad
            net(_x())
        assert any(float(o.abs().sum()) > 0 for o in rule.omegas)
    with Hybrid(net, lam=0.5) as rule:              # gradient rules do not
        rule.reset(B)
        with torch.no_grad():
            net(_x())
        assert all(float(o.abs().sum()) == 0 for o in rule.stdp.omegas)


def test_unpaired_leaky_and_hidden_mem_are_detached():
    """A Leaky with no Linear before it is detached (with a warning); a Leaky called without
    ``mem`` (its own ``mem`` buffer carries the state) is detached too."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.lif, self.lif_out = nn.Linear(N, H), snn.Leaky(0.9), snn.Leaky(0.9)

    net = Net()
    with pytest.warns(UserWarning, match="no paired connection"), RTRL(net) as rule:
        rule.reset(B)
        mem, prev = net.lif_out.init_leaky(), set()
        for t in range(4):
            spk, mem1 = net.lif(net.fc(_x()[t]))          # state in net.lif.mem
            _, mem = net.lif_out(spk, mem)
            nodes = {n for n in _reachable(mem) | _reachable(mem1)
                     if "AccumulateGrad" not in n.name()}
            assert not nodes & prev
            prev = nodes
            rule.backward(mem.sum() + mem1.sum())


class OwnDynamics(snn.Leaky):
    """A Leaky subclass with its own forward (as snn.DeltaLeaky): other dynamics."""

    def forward(self, input_, mem=None):
        return super().forward(2 * input_, mem)


@pytest.mark.parametrize("make_neuron", [lambda: snn.Lapicque(beta=0.9),
                                         lambda: OwnDynamics(beta=0.9),
                                         lambda: snn.SLSTM(H, H)],
                         ids=["Lapicque", "Leaky-subclass", "SLSTM"])
def test_unsupported_neuron_fails_at_attach(make_neuron):
    """No warning-then-PyTorch-error any more: a TypeError naming the module, at attach,
    and no hook is left behind (the supported part can take a rule afterwards)."""
    n_inst = len(snn.SpikingNeuron.instances)
    try:
        net = nn.Sequential(nn.Linear(N, H), snn.Leaky(beta=0.9), nn.Linear(H, H),
                            make_neuron())
        for make in (RTRL, STDP, lambda m: Hybrid(m, lam=0.5)):
            with pytest.raises(TypeError, match=r"3 \(\w+\) is not supported"):
                make(net)
        assert _hooks(net) == 0
        RTRL(nn.Sequential(net[0], net[1])).remove()
    finally:       # snnTorch's class-level registry: keep other tests' utils.reset working
        del snn.SpikingNeuron.instances[n_inst:]
