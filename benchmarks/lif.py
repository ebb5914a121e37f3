"""Benchmark: Linear(128→256) + LIF, forward + backward, snnTorch loop vs fused lif_multi_step.

Symbols: T time steps, B batch, I input features, H hidden (LIF) neurons.

Baseline (snnTorch tutorial style, time-major)::

    mem = lif.init_leaky()
    for t in range(T):
        spk, mem = lif(fc(x[t]), mem)          # snn.Leaky, one autograd graph per step

Ours: one ``fc(x)`` over the whole (T, B, I) sequence, then ``lif_multi_step`` (one autograd
node, hand-written backward). Same weights, same spike-rate loss; the spikes must be identical
and the weight gradients equal (checked before timing).

Threads: both paths run with ``torch.set_num_threads(--threads)`` (default 1). One thread
keeps the comparison about per-op overhead and memory traffic rather than about how well each
path parallelises, and keeps the timing stable on a shared machine.

Usage: python benchmarks/lif.py [--T 500] [--B 32] [--repeats 9] [--threads 1]
Ends with: RESULT lif_speedup=<baseline median / ours median>
"""

from __future__ import annotations

import argparse

import snntorch as snn
import torch

try:  # `python benchmarks/lif.py` imports its neighbours directly; `-m` cannot.
    from benchutil import interleaved_medians, result_line
except ImportError:
    from benchmarks.benchutil import interleaved_medians, result_line

from bimsnn.neurons import lif_multi_step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--T", type=int, default=500)
    p.add_argument("--B", type=int, default=32)
    p.add_argument("--I", type=int, default=128)
    p.add_argument("--H", type=int, default=256)
    p.add_argument("--beta", type=float, default=0.9)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    T, B, I, H = args.T, args.B, args.I, args.H

    x = (torch.rand(T, B, I) < 0.2).float()  # (T, B, I) input spike trains, rate 0.2
    target = torch.rand(B, H) * 0.2           # (B, H) target firing rates
    fc_ref = torch.nn.Linear(I, H)
    fc = torch.nn.Linear(I, H)
    fc.load_state_dict(fc_ref.state_dict())
    lif_ref = snn.Leaky(beta=args.beta)

    def rate_loss(spk):  # (T, B, H) → scalar: MSE between firing rates and targets
        return ((spk.mean(0) - target) ** 2).mean()

    def baseline():
        mem = lif_ref.init_leaky()
        spk_rec = []
        for t in range(T):
            spk, mem = lif_ref(fc_ref(x[t]), mem)
            spk_rec.append(spk)
        spk_rec = torch.stack(spk_rec)  # (T, B, H)
        fc_ref.zero_grad(set_to_none=True)
        rate_loss(spk_rec).backward()
        return spk_rec

    def ours():
        spk, _ = lif_multi_step(fc(x), None, args.beta)  # (T, B, H) each
        fc.zero_grad(set_to_none=True)
        rate_loss(spk).backward()
        return spk

    s_ref, s = baseline(), ours()
    assert torch.equal(s_ref, s), "spikes differ"
    torch.testing.assert_close(fc.weight.grad, fc_ref.weight.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(fc.bias.grad, fc_ref.bias.grad, rtol=1e-4, atol=1e-6)
    print(f"T={T} B={B} {I}->{H} float32 threads={args.threads}: spikes identical "
          f"(rate {s.mean().item():.3f}), weight grads match")

    med = interleaved_medians({"snntorch_loop": baseline, "lif_multi_step": ours},
                              repeats=args.repeats)
    for name, sec in med.items():
        print(f"{name:>16}: {sec * 1e3:8.1f} ms (median of {args.repeats})")
    print(result_line(lif_speedup=med["snntorch_loop"] / med["lif_multi_step"]))


if __name__ == "__main__":
    main()
