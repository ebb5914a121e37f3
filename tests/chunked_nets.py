"""Shared nets and drivers for the chunked-rule tests (test_rules_chunked*.py).

Symbols: T time, B batch, C inputs, H hidden, D model width. Every helper builds fresh,
seeded modules (no shared mutable state between tests).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from bimsnn.neurons import Leaky
from bimsnn.ssm.mamba import MambaConfig, SpikingMambaNet
from bimsnn.state import detach_tree

F64 = torch.float64
T, B = 16, 3


def rel(a, b):
    """‖a − b‖ / ‖b‖ (‖a − b‖ when b = 0)."""
    return float((a - b).norm() / b.norm()) if b.norm() > 0 else float((a - b).norm())


# ------------------------------------------------------------------------ models
class TwoState(NamedTuple):
    m1: torch.Tensor
    m2: torch.Tensor


class TwoLayer(nn.Module):
    """Linear → Leaky → Linear → Leaky; ``forward_seq`` (fused) and ``step`` (per step)."""

    def __init__(self, sizes=(5, 7, 4), **kw):
        super().__init__()
        self.fc1, self.lif1 = nn.Linear(sizes[0], sizes[1]), Leaky(**kw)
        self.fc2, self.lif2 = nn.Linear(sizes[1], sizes[2]), Leaky(**kw)

    def init_state(self, b):
        p = self.fc1.weight
        return TwoState(p.new_zeros(b, self.fc1.out_features),
                        p.new_zeros(b, self.fc2.out_features))

    def forward_seq(self, x, state):
        s1, m1 = self.lif1.multi_step(self.fc1(x), state.m1)
        s2, m2 = self.lif2.multi_step(self.fc2(s1), state.m2)
        return (s2, m2), TwoState(m1[-1], m2[-1])

    def step(self, x_t, state):
        s1, m1 = self.lif1(self.fc1(x_t), state.m1)
        s2, m2 = self.lif2(self.fc2(s1), state.m2)
        return (s2, m2), TwoState(m1, m2)


def leaky_net(cfg="subtract_learn", seed=0):
    """TwoLayer (float64): "subtract_learn" (scalar β, learnable β and ϑ) or
    "zero_per_neuron" (reset "zero", learnable per-neuron β)."""
    torch.manual_seed(seed)
    if cfg == "zero_per_neuron":        # per-neuron β needs equal widths in both layers
        net = TwoLayer((5, 7, 7), beta=torch.linspace(0.5, 0.95, 7), reset_mechanism="zero",
                       learn_beta=True)
    else:
        net = TwoLayer(beta=0.85, learn_beta=True, learn_threshold=True)
    with torch.no_grad():
        net.fc1.weight.mul_(2.5)
        net.fc2.weight.mul_(2.5)
    return net.double()


def mamba_net(seed=0, n_layers=2):
    torch.manual_seed(seed)
    cfg = MambaConfig(d_model=8, n_inputs=5, n_classes=3, n_layers=n_layers, d_state=4,
                      dt_min=0.05, dt_max=0.5)
    net = SpikingMambaNet(cfg).double()
    with torch.no_grad():                     # more spikes: every path carries credit
        net.in_fc.weight.mul_(3.0)
        for blk in net.blocks:
            blk.out_proj.weight.mul_(3.0)
    return net


def make_data(net, seed=1, Tn=T):
    g = torch.Generator().manual_seed(seed)
    C = net.fc1.in_features if isinstance(net, TwoLayer) else net.cfg.n_inputs
    x = (torch.rand(Tn, B, C, generator=g) < 0.5).to(F64) * 1.5
    tgt = torch.rand(Tn, B, 7 if isinstance(net, TwoLayer) else 3, generator=g, dtype=F64)
    return x, tgt


def loss_fn(tgt):
    """Per-chunk loss on out (k, B, ...): spikes + membrane (TwoLayer) or logits (Mamba)."""
    def fn(out, t0):
        if isinstance(out, tuple):
            s, m = out
            tg = tgt[t0:t0 + s.shape[0], :, :s.shape[-1]]
            return ((s - tg) ** 2).sum() + 0.3 * ((m - 0.5) ** 2).sum()
        return (out * tgt[t0:t0 + out.shape[0]]).sum() + 0.1 * (out ** 2).sum()
    return fn


def grads(net):
    return {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}


def per_step(net, rule, x, loss_fn, with_loss=True):
    """The per-step rules' loop: ``net.step``, detached state, ``rule.backward`` each step."""
    rule.reset(x.shape[1])
    state = net.init_state(x.shape[1])
    for t in range(x.shape[0]):
        out, state = net.step(x[t], state)
        state = detach_tree(state)
        seq = tuple(o[None] for o in out) if isinstance(out, tuple) else out[None]
        rule.backward(loss_fn(seq, t) if with_loss else None)
    return grads(net)


def chunked(net, rule, x, loss_fn, with_loss=True):
    rule.run(x, loss_fn if with_loss else (lambda out, t0: None))
    return grads(net)


def bptt(net, x, loss_fn):
    out, _ = net.forward_seq(x, net.init_state(x.shape[1]))
    loss_fn(out, 0).backward()
    return grads(net)


def assert_close(got, ref, tol=1e-6):
    assert set(got) == set(ref), set(got) ^ set(ref)
    errs = {k: rel(got[k], ref[k]) for k in ref}
    assert max(errs.values()) <= tol, sorted(errs.items(), key=lambda kv: -kv[1])[:4]
    return max(errs.values())


NETS = {"mamba2": lambda: mamba_net(), "leaky_subtract": lambda: leaky_net("subtract_learn"),
        "leaky_zero": lambda: leaky_net("zero_per_neuron")}
