"""Benchmark: peak memory and step time of online learning (RTRL, Hybrid) vs BPTT.

Symbols: T time, B batch, C inputs, D model width, E = 2D expanded width, N state size,
K classes, L layers.

Model: SpikingMambaNet(D=64, N=16, C=4, K=3, L=2), float32, B=1, random input spikes
(rate 0.3), per-step cross-entropy on the per-step logits. Candidates:
    bptt     ``net.forward_seq(x)`` (parallel scan + LIF multi-step), one backward at the end:
             the ordinary BPTT training path, memory O(T).
    rtrl     ``bimsnn.rules.RTRL``: ``net.step`` + ``rule.backward(loss_t)`` every step.
    hybrid   ``bimsnn.rules.Hybrid(λ=0.5)`` (RTRL gradient + STDP), same loop.

Memory: each (candidate, T) runs in a fresh subprocess; it reads ``ru_maxrss`` once the model
and input exist (baseline: interpreter + torch + model) and again after one training pass on
the sequence. Reported: the *net* peak = peak − baseline, and ratios of net peaks
20k / 1k. (Ratios of raw peaks would be ~1 for anything small, hiding growth.)
Time: in this process, interleaved (``_util.interleaved_medians``), T = 200 steps each:
per-step time of rtrl and hybrid over that of BPTT run through the *same* streaming
``net.step`` loop with a single backward at the end (``bptt_stream``): the like-for-like cost
of the learning rule. The ratio against the parallel-scan ``bptt`` is printed too; it adds
the (large) gain of parallel over step-by-step evaluation. Torch threads = 1 everywhere
(the reference machine has 2 cores shared with other jobs).
Cosine: RTRL vs BPTT gradient of the same 2-layer net (T = 200, B = 2, float64), over all
parameters flattened, and the median of the per-tensor cosines.

Ends with one line:
    RESULT online_mem_ratio_20k_over_1k=<max(rtrl, hybrid)> bptt_mem_ratio_20k_over_1k=...
           rtrl_time_ratio=<rtrl / bptt_stream per step> rtrl_cosine_2layer=<all params>

Runtime is dominated by the 2 x 26,000 online steps (~3 ms each on an idle core): about
6 min on the shared 2-core reference machine at moderate load, 14 min at load average 9.
``--Ts 1000 5000`` halves it.

Usage: python benchmarks/online_memory.py [--Ts 1000 5000 20000 --repeats 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

try:  # `python benchmarks/online_memory.py` imports its neighbours directly; `-m` cannot.
    from benchutil import interleaved_medians, result_line
except ImportError:
    from benchmarks.benchutil import interleaved_medians, result_line

from bimsnn.ssm.mamba import MambaConfig, SpikingMambaNet

METHODS = ("bptt", "rtrl", "hybrid")


def make_net(n_layers: int = 2, seed: int = 0, dtype=torch.float32) -> SpikingMambaNet:
    cfg = MambaConfig(d_model=64, n_inputs=4, n_classes=3, n_layers=n_layers, d_state=16)
    torch.manual_seed(seed)
    return SpikingMambaNet(cfg).to(dtype)


def make_data(T: int, B: int, seed: int = 1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(T, B, 4, generator=g) < 0.3).to(dtype)                   # (T, B, C)
    label = torch.randint(0, 3, (B,), generator=g)
    return x, label


def make_rule(method: str, net):
    """The online rule for ``method`` (imported lazily: written by the rules module)."""
    from bimsnn.rules import RTRL, Hybrid

    return RTRL(net) if method == "rtrl" else Hybrid(net, lam=0.5)


def train_once(method: str, net, x, label) -> None:
    """One training pass over one sequence, writing .grad (no optimizer step)."""
    T, B = x.shape[:2]
    net.zero_grad(set_to_none=True)
    if method == "bptt":
        logits, _ = net.forward_seq(x)                                     # (T, B, K)
        F.cross_entropy(logits.flatten(0, 1), label.repeat(T)).backward()
        return
    if method == "bptt_stream":
        st, loss = net.init_state(B), 0.0
        for t in range(T):
            logits_t, st = net.step(x[t], st)
            loss = loss + F.cross_entropy(logits_t, label) / T
        loss.backward()
        return
    rule = make_rule(method, net)
    rule.reset(B)
    st = net.init_state(B)
    for t in range(T):
        logits_t, st = net.step(x[t], st)
        rule.backward(F.cross_entropy(logits_t, label) / T)
    rule.remove()


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0      # Linux: KiB


def child(method: str, T: int, B: int) -> None:
    """Runs in a fresh subprocess: prints one JSON line with the peak memory."""
    torch.set_num_threads(1)
    net = make_net()
    x, label = make_data(T, B)
    base = _maxrss_mb()
    t0 = time.perf_counter()
    train_once(method, net, x, label)
    dt = time.perf_counter() - t0
    peak = _maxrss_mb()
    print(json.dumps({"method": method, "T": T, "base_mb": base, "peak_mb": peak,
                      "net_mb": peak - base, "s_per_step": dt / T}))


def measure_memory(Ts, B: int) -> dict:
    out = {}
    for T in Ts:
        for m in METHODS:
            r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", m,
                                str(T), str(B)], capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"child {m} T={T} failed:\n{r.stderr[-3000:]}")
            rec = json.loads(r.stdout.strip().splitlines()[-1])
            out[(m, T)] = rec
            print(f"  {m:7s} T={T:6d}  baseline {rec['base_mb']:7.1f} MB  peak {rec['peak_mb']:7.1f}"
                  f" MB  net {rec['net_mb']:7.1f} MB  ({rec['s_per_step'] * 1e3:.2f} ms/step)",
                  flush=True)
    return out


def measure_time(T: int, B: int, repeats: int) -> dict:
    torch.set_num_threads(1)
    net = make_net()
    x, label = make_data(T, B)
    names = ("bptt_stream", "rtrl", "hybrid", "bptt")
    med = interleaved_medians({n: (lambda n=n: train_once(n, net, x, label)) for n in names},
                              repeats=repeats)
    return {n: v / T for n, v in med.items()}


def _cos(a, b) -> float:
    return F.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


def measure_cosine(T: int = 200, B: int = 2) -> tuple[float, float]:
    net = make_net(dtype=torch.float64)
    x, label = make_data(T, B, dtype=torch.float64)
    grads = {}
    for m in ("bptt", "rtrl"):
        train_once(m, net, x, label)
        grads[m] = {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}
    keys = sorted(grads["bptt"])
    flat = [torch.cat([grads[m][k].flatten() for k in keys]) for m in ("rtrl", "bptt")]
    per = [_cos(grads["rtrl"][k], grads["bptt"][k]) for k in keys]
    return _cos(*flat), statistics.median(per)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--Ts", type=int, nargs="+", default=[1000, 5000, 20000])
    ap.add_argument("--B", type=int, default=1)
    ap.add_argument("--time_T", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--child", nargs=3, metavar=("METHOD", "T", "B"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]))
        return
    t_start = time.perf_counter()
    print(f"SpikingMambaNet D=64 N=16 C=4 K=3 L=2, B={args.B}, float32, 1 thread")
    print("peak memory (fresh subprocess each; net = peak - baseline):", flush=True)
    mem = measure_memory(args.Ts, args.B)
    lo, hi = min(args.Ts), max(args.Ts)
    ratio = {m: mem[(m, hi)]["net_mb"] / mem[(m, lo)]["net_mb"] for m in METHODS}
    for m in METHODS:
        print(f"  net-peak ratio {m} T={hi}/T={lo}: {ratio[m]:.3f}")
    print(f"time per step (T={args.time_T}, B={args.B}, interleaved, median of {args.repeats}):",
          flush=True)
    tps = measure_time(args.time_T, args.B, args.repeats)
    for n, v in tps.items():
        print(f"  {n:11s} {v * 1e3:7.3f} ms/step")
    for m in ("rtrl", "hybrid"):
        print(f"  {m} / bptt_stream = {tps[m] / tps['bptt_stream']:.2f}   "
              f"{m} / bptt (parallel scan) = {tps[m] / tps['bptt']:.2f}")
    cos_all, cos_med = measure_cosine()
    print(f"RTRL vs BPTT gradient cosine, 2 layers, T=200, B=2, float64: all params {cos_all:.3f},"
          f" median per tensor {cos_med:.3f}")
    print(f"total {time.perf_counter() - t_start:.0f} s")
    print(result_line(online_mem_ratio_20k_over_1k=max(ratio["rtrl"], ratio["hybrid"]),
                      bptt_mem_ratio_20k_over_1k=ratio["bptt"],
                      rtrl_time_ratio=tps["rtrl"] / tps["bptt_stream"],
                      rtrl_cosine_2layer=cos_all))


if __name__ == "__main__":
    main()
