"""Benchmark: snnTorch's tutorial networks trained, unmodified, by BPTT, RTRL and Hybrid.

Symbols: T steps, B batch, K classes, H hidden width.

Three nets, each trained three times from the same initialisation on the same batches
(same seed), the only difference being how ``.grad`` is filled: ``loss.backward()``
(BPTT) or ``rule.reset(B)`` before the forward and ``rule.backward(loss)`` after it
(``bimsnn.rules.RTRL``; ``Hybrid(λ = 0.9, balance="element")``: 0.9·gradient + STDP at most 1/9 of
each weight's gradient term). The networks and their forward passes are the tutorials' own code:

* tutorial5: snnTorch tutorial 5, fc1 → Leaky → fc2 → Leaky (β = 0.95, H = 1000, 25 steps,
  the same input every step, cross-entropy on the output membrane at every step, Adam 5e-4),
  on scikit-learn's 8×8 digits (64 inputs; MNIST is not available offline).
* tutorial7: snnTorch tutorial 7's CSNN, Conv2d(2, 12, 5) → MaxPool2d(2) → Leaky →
  Conv2d(12, 32, 5) → MaxPool2d(2) → Leaky → Flatten → Linear(800, 10) → Leaky
  (β = 0.5, init_hidden, atan surrogate, ``mse_count_loss(0.8, 0.2)``, Adam 2e-2), on an
  N-MNIST-like event set made here: each 8×8 digit, upscaled to 24×24 on a 34×34 sensor,
  moves along N-MNIST's three-saccade triangle; ON / OFF events are the positive /
  negative brightness changes between steps, plus background noise events.
* rleaky: Linear → RLeaky(all_to_all, β = 0.95) → Linear → Leaky readout (reset "none") on a
  delayed-cue task: one of two cue populations fires (rate +0.3) for 5 steps, 40 steps of
  background noise (rate 0.05) follow, then a "go" population fires for 5 steps, during
  which the readout membrane must classify the cue (cross-entropy at those steps; Adam 5e-3).

RTRL is exact per layer (conv layers with max pooling before the neuron use per-unit
traces, ``pool_traces="exact"``); across layers and through RLeaky's spike recurrence it
is approximate (e-prop). Accuracy is on held-out samples after the last epoch.

Ends with one line:
    RESULT t5_bptt=... t5_rtrl=... t5_hybrid=... t7_bptt=... ... rleaky_hybrid=...

``--methods`` may add ``rtrl_input``: RTRL with ``pool_traces="input"`` (presynaptic traces
through max pooling: cheaper, approximate), and ``hybrid_hidden``: Hybrid with λ = 0.9 on
the hidden pairs and λ = 1 (plain gradient, no STDP) on the readout pair.

Usage: PYTHONPATH=. python benchmarks/rules_tutorials.py [--nets tutorial5 tutorial7 rleaky]
       [--methods bptt rtrl hybrid] [--epochs5 8 --epochs7 2 --epochsr 20 --delay 40 --quick]
Torch threads = 1.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import snntorch as snn
import torch
from sklearn.datasets import load_digits
from snntorch import functional as SF
from snntorch import surrogate, utils
from torch import nn
from torch.nn import functional as F

from bimsnn.rules import RTRL, STDP, Hybrid, find_pairs

METHODS = ("bptt", "rtrl", "hybrid", "rtrl_input", "hybrid_hidden")


def attach(method: str, net: nn.Module):
    if method == "rtrl":
        return RTRL(net)
    if method == "rtrl_input":
        return RTRL(net, pool_traces="input")
    if method in ("hybrid", "hybrid_hidden"):
        lam = 0.9
        if method == "hybrid_hidden":               # readout pair: plain gradient, no STDP
            n = len(find_pairs(net)[0])
            lam = [0.9] * (n - 1) + [1.0]
        return Hybrid(net, lam=lam, stdp=STDP(A_plus=1e-3, A_minus=1.05e-3), balance="element")
    return None


def fill_grad(rule, loss: torch.Tensor) -> None:
    """The one line that differs between BPTT and a rule."""
    if rule is None:
        loss.backward()
    else:
        rule.backward(loss)


# --------------------------------------------------------------------------- tutorial 5
class Tutorial5(nn.Module):
    """snnTorch tutorial 5's Net, verbatim apart from the sizes passed in."""

    def __init__(self, num_inputs, num_hidden, num_outputs, beta=0.95, num_steps=25):
        super().__init__()
        self.num_steps = num_steps
        self.fc1 = nn.Linear(num_inputs, num_hidden)
        self.lif1 = snn.Leaky(beta=beta)
        self.fc2 = nn.Linear(num_hidden, num_outputs)
        self.lif2 = snn.Leaky(beta=beta)

    def forward(self, x):
        mem1 = self.lif1.init_leaky()
        mem2 = self.lif2.init_leaky()
        spk2_rec = []
        mem2_rec = []
        for _step in range(self.num_steps):
            cur1 = self.fc1(x)
            spk1, mem1 = self.lif1(cur1, mem1)
            cur2 = self.fc2(spk1)
            spk2, mem2 = self.lif2(cur2, mem2)
            spk2_rec.append(spk2)
            mem2_rec.append(mem2)
        return torch.stack(spk2_rec, dim=0), torch.stack(mem2_rec, dim=0)


def digits(seed: int = 0):
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32) / 16.0           # (1797, 8, 8) in [0, 1]
    y = torch.tensor(d.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    return x[perm], y[perm]


def run_tutorial5(method: str, epochs: int, quick: bool) -> float:
    x, y = digits()
    x = x.flatten(1)
    n_train = 300 if quick else 1200
    xtr, ytr, xte, yte = x[:n_train], y[:n_train], x[1200:], y[1200:]
    torch.manual_seed(0)
    net = Tutorial5(64, 1000, 10)
    rule = attach(method, net)
    loss = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(net.parameters(), lr=5e-4, betas=(0.9, 0.999))
    g = torch.Generator().manual_seed(1)
    for _epoch in range(epochs):
        for idx in torch.randperm(len(ytr), generator=g).split(128):
            data, targets = xtr[idx], ytr[idx]
            if rule is not None:
                rule.reset(len(idx))
            spk_rec, mem_rec = net(data)
            loss_val = torch.zeros(1)
            for step in range(net.num_steps):
                loss_val += loss(mem_rec[step], targets)
            optimizer.zero_grad()
            fill_grad(rule, loss_val)
            optimizer.step()
    if rule is not None:
        rule.remove()
    with torch.no_grad():
        spk, _ = net(xte)
    return float((spk.sum(0).argmax(1) == yte).float().mean())


# --------------------------------------------------------------------------- tutorial 7
def tutorial7_net():
    """snnTorch tutorial 7's network, verbatim."""
    spike_grad = surrogate.atan()
    beta = 0.5
    return nn.Sequential(nn.Conv2d(2, 12, 5),
                         nn.MaxPool2d(2),
                         snn.Leaky(beta=beta, spike_grad=spike_grad, init_hidden=True),
                         nn.Conv2d(12, 32, 5),
                         nn.MaxPool2d(2),
                         snn.Leaky(beta=beta, spike_grad=spike_grad, init_hidden=True),
                         nn.Flatten(),
                         nn.Linear(32 * 5 * 5, 10),
                         snn.Leaky(beta=beta, spike_grad=spike_grad, init_hidden=True,
                                   output=True))


def forward_pass(net, data):
    """Tutorial 7's forward_pass, verbatim."""
    spk_rec = []
    utils.reset(net)  # resets hidden states for all LIF neurons in net
    for step in range(data.size(0)):  # data.size(0) = number of time steps
        spk_out, mem_out = net(data[step])
        spk_rec.append(spk_out)
    return torch.stack(spk_rec)


def nmnist_like(images: torch.Tensor, steps_per_saccade: int = 6, seed: int = 0,
                noise: float = 0.002) -> torch.Tensor:
    """Events (T, n, 2, 34, 34) of digit images (n, 8, 8) seen by a saccading sensor.

    Each image is upscaled ×3 (bilinear) to 24×24 and placed on a 34×34 sensor with a random
    offset; the sensor follows N-MNIST's triangle (→ ↖ ↙, 4 px legs), one position per step;
    channel 0 (ON) fires where brightness rose by > 0.15 since the previous step, channel 1
    (OFF) where it fell, plus Bernoulli(noise) background events.
    """
    g = torch.Generator().manual_seed(seed)
    n = images.shape[0]
    big = F.interpolate(images[:, None], scale_factor=3, mode="bilinear",
                        align_corners=False)[:, 0].clamp(0, 1)                 # (n, 24, 24)
    corners = [(0.0, 0.0), (4.0, 2.0), (0.0, 4.0), (0.0, 0.0)]
    path = []
    for (a0, b0), (a1, b1) in zip(corners[:-1], corners[1:]):
        for k in range(steps_per_saccade):
            f = k / steps_per_saccade
            path.append((round(a0 + f * (a1 - a0)), round(b0 + f * (b1 - b0))))
    path.append(path[0])
    off = torch.randint(0, 3, (n, 2), generator=g)
    frames = torch.zeros(len(path), n, 34, 34)
    for t, (dy, dx) in enumerate(path):
        for i in range(n):
            r, c = int(off[i, 0]) + dy, int(off[i, 1]) + dx
            frames[t, i, r:r + 24, c:c + 24] = big[i]
    diff = frames[1:] - frames[:-1]                                            # (T, n, 34, 34)
    ev = torch.stack([(diff > 0.15), (diff < -0.15)], 2).float()
    ev = torch.maximum(ev, (torch.rand(ev.shape, generator=g) < noise).float())
    return ev


def run_tutorial7(method: str, epochs: int, quick: bool) -> float:
    x, y = digits()
    n_train = 256 if quick else 1200
    ev_tr, ev_te = nmnist_like(x[:n_train], seed=1), nmnist_like(x[1200:], seed=2)
    ytr, yte = y[:n_train], y[1200:]
    torch.manual_seed(0)
    net = tutorial7_net()
    rule = attach(method, net)
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-2, betas=(0.9, 0.999))
    loss_fn = SF.mse_count_loss(correct_rate=0.8, incorrect_rate=0.2)
    g = torch.Generator().manual_seed(1)
    for _epoch in range(epochs):
        for idx in torch.randperm(len(ytr), generator=g).split(16):
            data, targets = ev_tr[:, idx], ytr[idx]
            net.train()
            if rule is not None:
                rule.reset(len(idx))
            spk_rec = forward_pass(net, data)
            loss_val = loss_fn(spk_rec, targets)
            optimizer.zero_grad()
            fill_grad(rule, loss_val)
            optimizer.step()
    if rule is not None:
        rule.remove()
    accs = []
    with torch.no_grad():
        for idx in torch.arange(len(yte)).split(128):
            accs.append(SF.accuracy_rate(forward_pass(net, ev_te[:, idx]), yte[idx]) * len(idx))
    return float(sum(accs) / len(yte))


# ------------------------------------------------------------------ RLeaky, delayed cue
class DelayedCueNet(nn.Module):
    """Linear → RLeaky (all-to-all recurrence) → Linear → Leaky readout; tutorial-5 style."""

    def __init__(self, n_in=16, n_hidden=64, beta=0.95):
        super().__init__()
        self.fc1 = nn.Linear(n_in, n_hidden)
        self.lif1 = snn.RLeaky(beta=beta, linear_features=n_hidden)
        self.fc2 = nn.Linear(n_hidden, 2)
        self.lif2 = snn.Leaky(beta=0.9, reset_mechanism="none")

    def forward(self, x):
        spk1, mem1 = self.lif1.init_rleaky()
        mem2 = self.lif2.init_leaky()
        mem2_rec = []
        for step in range(x.shape[0]):
            spk1, mem1 = self.lif1(self.fc1(x[step]), spk1, mem1)
            _, mem2 = self.lif2(self.fc2(spk1), mem2)
            mem2_rec.append(mem2)
        return torch.stack(mem2_rec)


CUE, RECALL = 5, 5


def delayed_cue(n: int, seed: int, delay: int = 40, cue_rate: float = 0.3):
    """x (T, n, 16) spikes, y (n,): channels 0-3 cue A, 4-7 cue B, 8-11 go, 12-15 noise."""
    g = torch.Generator().manual_seed(seed)
    T = CUE + delay + RECALL
    y = torch.randint(0, 2, (n,), generator=g)
    rate = torch.full((T, n, 16), 0.05)
    rate[:CUE, :, 0:4] += cue_rate * (y == 0).float()[None, :, None]
    rate[:CUE, :, 4:8] += cue_rate * (y == 1).float()[None, :, None]
    rate[CUE + delay:, :, 8:12] = 0.6
    return (torch.rand(rate.shape, generator=g) < rate).float(), y


def run_rleaky(method: str, epochs: int, quick: bool, delay: int = 40) -> float:
    xtr, ytr = delayed_cue(256 if quick else 1024, seed=1, delay=delay)
    xte, yte = delayed_cue(512, seed=2, delay=delay)
    torch.manual_seed(0)
    net = DelayedCueNet()
    rule = attach(method, net)
    optimizer = torch.optim.Adam(net.parameters(), lr=5e-3)
    ce = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(3)
    for _epoch in range(epochs):
        for idx in torch.randperm(len(ytr), generator=g).split(64):
            if rule is not None:
                rule.reset(len(idx))
            mem_rec = net(xtr[:, idx])
            loss_val = sum(ce(mem_rec[t], ytr[idx]) for t in range(CUE + delay, len(mem_rec)))
            optimizer.zero_grad()
            fill_grad(rule, loss_val)
            optimizer.step()
    if rule is not None:
        rule.remove()
    with torch.no_grad():
        mem = net(xte)[CUE + delay:].mean(0)
    return float((mem.argmax(1) == yte).float().mean())


NETS = {"tutorial5": ("t5", run_tutorial5), "tutorial7": ("t7", run_tutorial7),
        "rleaky": ("rleaky", run_rleaky)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    p.add_argument("--methods", nargs="+", default=list(METHODS[:3]), choices=list(METHODS))
    p.add_argument("--epochs5", type=int, default=8)
    p.add_argument("--epochs7", type=int, default=2)
    p.add_argument("--epochsr", type=int, default=20)
    p.add_argument("--delay", type=int, default=40, help="rleaky: steps between cue and go")
    p.add_argument("--quick", action="store_true", help="small training sets (smoke run)")
    a = p.parse_args()
    torch.set_num_threads(1)
    epochs = {"tutorial5": a.epochs5, "tutorial7": a.epochs7, "rleaky": a.epochsr}
    results: dict[str, float] = {}
    print(f"{'net':10s} {'method':7s} {'accuracy':>8s} {'seconds':>8s}")
    for name in a.nets:
        short, fn = NETS[name]
        for method in a.methods:
            t0 = time.perf_counter()
            extra = {"delay": a.delay} if name == "rleaky" else {}
            acc = fn(method, epochs[name], a.quick, **extra)
            results[f"{short}_{method}"] = acc
            print(f"{name:10s} {method:7s} {acc:8.3f} {time.perf_counter() - t0:8.1f}",
                  flush=True)
    if "bptt" in a.methods and len(a.methods) > 1:
        gaps = {k: results[f"{k}_bptt"] - min(results[f"{k}_{m}"] for m in a.methods
                                              if m != "bptt")
                for k in (NETS[n][0] for n in a.nets)}
        print("largest drop vs BPTT:", {k: round(v, 3) for k, v in gaps.items()})
    print("RESULT " + " ".join(f"{k}={v:.3f}" for k, v in results.items()))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
