"""Benchmark: chunked online learning (ChunkedRTRL / ChunkedHybrid) against BPTT.

Symbols: T time, K chunk, B batch, C inputs, D model width, E = 2D SSM channels, N state
size, R dt rank.

Models (SpikingMambaNet, float32, random input spikes at rate 0.2, per-step cross-entropy
over all T steps, mean):
    seizure   the seizure recipe's default size: D=16, N=8, 1 layer, C=36, 2 classes,
              B=64, T=128
    kws       a keyword-spotting-like size: D=64, N=16, 1 layer, C=80, 10 classes,
              B=32, T=100
One *training pass* = forward + backward over the whole sequence, writing .grad:
    bptt      ``forward_seq(x)`` (parallel scan + fused LIF) and one backward
    rtrl@K    ``ChunkedRTRL(net, chunk=K).run(x, loss)``: chunks of K steps
    hybrid@K  ``ChunkedHybrid(net, lam=0.5, chunk=K)``, same loop, plus STDP
    ...-nx    the same with ``x_proj_traces=False`` (x_proj's Δ/B rows: within-chunk credit)
Time: interleaved (_util's scheme: bptt, rtrl, hybrid, ..., repeated), medians of the
*CPU time* of this process (``time.process_time``): the reference machine has 2 cores
shared with other jobs, so wall time mostly measures the neighbours; wall medians are
printed too. Torch threads = 1.
Exactness (float64, 2-layer SpikingMambaNet D=8, N=4, T=16, B=3): chunk=1 vs the per-step
``RTRL`` rule, chunk=T vs autograd BPTT (max relative error over parameter tensors).
Cosine of the chunked RTRL gradient to BPTT (all parameters flattened) on a 2-layer net,
T=128, for several K: what the dropped cross-layer paths cost.
Memory: fresh subprocess per T ∈ {1000, 20000}; peak RSS (VmHWM) after one online pass at
the default K minus the peak once model and data exist (net peak), ratio 20k / 1k. The
input is one ≤1000-step random block tiled, so both T allocate the same temporaries.

Ends with:
    RESULT rtrl_over_bptt_time=... hybrid_over_bptt_time=... chunk1_grad_err=...
           chunkT_grad_err=... online_mem_ratio_20k_over_1k=... (+ kws_* and *_nx keys)
(time ratios: seizure model at the default K, exact x_proj traces).

Measured (2-core shared AMD EPYC, load average 5-7, ~5-6 min per run, two full runs):
    seizure  rtrl 1.70 / 1.85x at K=64 (1.47 / 1.78 at K=T, 3.3-3.6 at K=8, 17-19 at K=1),
             hybrid 1.66 / 1.95, rtrl-nx 1.41 / 1.67
    kws      rtrl 2.53 / 2.22x at K=64, hybrid 2.89 / 2.43, rtrl-nx 1.60 / 1.51
    exactness 3.3e-16 (chunk=1) and 0 (chunk=T); cosine 0.165 / 0.268 / 0.783 / 0.998 / 1 at
    K = 1 / 4 / 16 / 64 / 128; memory 76 -> 80 MB net peak (ratio 1.05) for T = 1k -> 20k.
What limits the time: the SSM trace advance (about 0.35-0.45 of a BPTT pass at the seizure
size: batched matmuls for x_proj's O(B·N·E²) traces, ~30%, and ~11 eager elementwise passes
over (T, B, N, E), ~70%), then per-boundary costs (contraction, decay, one backward per
chunk) and, for Hybrid, STDP's filtered traces (~5-10%).

Usage: python benchmarks/online_chunked.py [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

try:  # `python benchmarks/online_chunked.py` can import its neighbours directly; `-m` cannot.
    from benchutil import result_line
except ImportError:
    from benchmarks.benchutil import result_line

from bimsnn.rules import RTRL
from bimsnn.rules.chunked import DEFAULT_CHUNK, ChunkedHybrid, ChunkedRTRL, detach_tree
from bimsnn.ssm.mamba import MambaConfig, SpikingMambaNet

CONFIGS = {
    "seizure": dict(d_model=16, d_state=8, n_inputs=36, n_classes=2, B=64, T=128),
    "kws": dict(d_model=64, d_state=16, n_inputs=80, n_classes=10, B=32, T=100),
}


def make(name: str, T: int | None = None, n_layers: int = 1, dtype=torch.float32, seed=0):
    c = dict(CONFIGS[name])
    B, T = c.pop("B"), T or c.pop("T")
    c.pop("T", None)
    torch.manual_seed(seed)
    net = SpikingMambaNet(MambaConfig(n_layers=n_layers, **c)).to(dtype)
    g = torch.Generator().manual_seed(seed + 1)
    # One random block of ≤ 1000 steps, tiled: every T then allocates the same temporaries
    # (a T-sized one would inflate the peak RSS that the memory test reads).
    block = torch.rand(min(T, 1000), B, c["n_inputs"], generator=g) < 0.2
    x = torch.empty(T, B, c["n_inputs"], dtype=dtype)
    for t0 in range(0, T, 1000):
        x[t0:t0 + 1000] = block[:min(1000, T - t0)]
    del block
    y = torch.randint(0, c["n_classes"], (B,), generator=g)
    return net, x, y


def loss_fn(y, T):
    def fn(out, t0):                          # mean per-step CE over all T steps
        return F.cross_entropy(out.flatten(0, 1), y.repeat(out.shape[0])) * out.shape[0] / T
    return fn


def make_rule(kind: str, net, K: int):
    """The online rule of ``kind`` ("rtrl", "hybrid", "rtrl-nx", "hybrid-nx") on ``net``."""
    cls = ChunkedRTRL if kind.startswith("rtrl") else ChunkedHybrid
    kw = {} if cls is ChunkedRTRL else {"lam": 0.5}
    return cls(net, chunk=K, x_proj_traces=not kind.endswith("nx"), **kw)


def train_pass(kind: str, net, x, y, rule=None) -> None:
    """One forward + backward over the sequence (no optimizer step). ``rule``: a rule made
    once by :func:`make_rule` (as a training loop would), None for BPTT."""
    net.zero_grad(set_to_none=True)
    lf = loss_fn(y, x.shape[0])
    if rule is None:
        out, _ = net.forward_seq(x)
        lf(out, 0).backward()
    else:
        rule.run(x, lf)


def interleaved(fns: dict, repeats: int) -> tuple[dict, dict]:
    """Medians of CPU and wall seconds per name; one warm-up round, then interleaved."""
    for f in fns.values():
        f()
    cpu = {k: [] for k in fns}
    wall = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            c0, w0 = time.process_time(), time.perf_counter()
            f()
            cpu[k].append(time.process_time() - c0)
            wall[k].append(time.perf_counter() - w0)
    med = statistics.median
    return {k: med(v) for k, v in cpu.items()}, {k: med(v) for k, v in wall.items()}


def measure_time(name: str, Ks, repeats: int, kinds=("rtrl", "hybrid", "rtrl-nx")) -> dict:
    """Each candidate trains its own copy of the same net with a rule made once."""
    net, x, y = make(name)
    T = x.shape[0]
    fns, rules = {"bptt": lambda: train_pass("bptt", net, x, y)}, []
    for K in Ks:
        for kind in kinds:
            n = copy.deepcopy(net)
            rules.append(make_rule(kind, n, T if K == "T" else K))
            fns[f"{kind}@{K}"] = lambda n=n, r=rules[-1]: train_pass("", n, x, y, r)
    cpu, wall = interleaved(fns, repeats)
    for r in rules:
        r.remove()
    print(f"{name}: T={T}, B={x.shape[1]}, one training pass, median of {repeats} "
          "(CPU s | wall s | CPU ratio to bptt)", flush=True)
    for k in fns:
        print(f"  {k:14s} {cpu[k]:8.3f} {wall[k]:8.3f}   x{cpu[k] / cpu['bptt']:.2f}", flush=True)
    return {k: cpu[k] / cpu["bptt"] for k in fns}


def _grads(net):
    return {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}


def _rel(a, b):
    return float((a - b).norm() / b.norm()) if b.norm() > 0 else float((a - b).norm())


def _small_net(seed=0):
    torch.manual_seed(seed)
    return SpikingMambaNet(MambaConfig(d_model=8, n_inputs=5, n_classes=3, n_layers=2,
                                       d_state=4, dt_min=0.05, dt_max=0.5)).double()


def measure_exactness() -> tuple[float, float]:
    """(chunk=1 vs per-step RTRL, chunk=T vs BPTT): max relative error over tensors."""
    T, B = 16, 3
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(T, B, 5, generator=g) < 0.5).double()
    y = torch.randint(0, 3, (B,), generator=g)
    lf = loss_fn(y, T)
    net = _small_net()
    with RTRL(net) as rule:
        rule.reset(B)
        st = net.init_state(B)
        for t in range(T):
            out, st = net.step(x[t], st)
            st = detach_tree(st)
            rule.backward(lf(out[None], t))
    step = _grads(net)
    net = _small_net()
    out, _ = net.forward_seq(x)
    lf(out, 0).backward()
    bptt = _grads(net)
    errs = []
    for K, ref in ((1, step), (T, bptt)):
        net = _small_net()
        with ChunkedRTRL(net, chunk=K) as rule:
            rule.run(x, lf)
        got = _grads(net)
        errs.append(max(_rel(got[k], ref[k]) for k in ref))
    return errs[0], errs[1]


def measure_cosine(Ks=(1, 4, 16, 64, 128), T=128, B=4) -> dict:
    """Cosine (all parameters flattened) of chunked RTRL to BPTT, 2-layer seizure-size net."""
    net, x, y = make("seizure", T=T, n_layers=2, dtype=torch.float64)
    x = x[:, :B]
    y = y[:B]
    train_pass("bptt", net, x, y)
    ref = _grads(net)
    keys = sorted(ref)
    flat_ref = torch.cat([ref[k].flatten() for k in keys])
    out = {}
    for K in Ks:
        with make_rule("rtrl", net, K) as rule:
            train_pass("rtrl", net, x, y, rule)
        got = _grads(net)
        flat = torch.cat([got[k].flatten() for k in keys])
        out[K] = float(flat @ flat_ref / flat.norm() / flat_ref.norm())
    return out


def _peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM of /proc/self/status (ru_maxrss can carry the parent's
    peak into a subprocess started with vfork + exec, as Python's subprocess may do)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(T: int, K: int) -> None:
    """Fresh subprocess: net peak RSS (MB) of one online pass."""
    torch.set_num_threads(1)
    net, x, y = make("seizure", T=T)
    base = _peak_rss_mb()
    t0 = time.perf_counter()
    with make_rule("rtrl", net, K) as rule:
        train_pass("rtrl", net, x, y, rule)
    dt = time.perf_counter() - t0
    peak = _peak_rss_mb()
    print(json.dumps({"T": T, "base_mb": base, "net_mb": peak - base, "s": dt}))


def measure_memory(K: int, Ts=(1000, 20000)) -> float:
    nets = {}
    for T in Ts:
        r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(T),
                            str(K)], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"child T={T} failed:\n{r.stderr[-3000:]}")
        rec = json.loads(r.stdout.strip().splitlines()[-1])
        nets[T] = rec["net_mb"]
        print(f"  rtrl@{K} T={T:6d}: baseline {rec['base_mb']:.0f} MB, net peak "
              f"{rec['net_mb']:.1f} MB, {rec['s']:.1f} s", flush=True)
    return nets[Ts[-1]] / nets[Ts[0]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="no K=1 timing, no memory run")
    ap.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.child:
        child(*args.child)
        return
    t_start = time.perf_counter()
    K0 = DEFAULT_CHUNK
    ratios = {}
    for name in CONFIGS:
        ratios[name] = measure_time(name, (8, 16, 32, 64, "T"), args.repeats)
        if not args.quick:                    # K = 1: T chunks, slow; fewer repeats
            ratios[name].update(measure_time(name, (1,), max(3, args.repeats // 2),
                                             ("rtrl", "hybrid")))
    e1, eT = measure_exactness()
    print(f"exactness: chunk=1 vs per-step RTRL {e1:.2e}, chunk=T vs BPTT {eT:.2e}")
    cos = measure_cosine()
    print("cosine to BPTT, 2 layers, T=128, B=4: "
          + ", ".join(f"K={k}: {v:.4f}" for k, v in cos.items()), flush=True)
    mem = float("nan")
    if not args.quick:
        print(f"memory (seizure model, B=64, K={K0}, fresh subprocess each):")
        mem = measure_memory(K0)
        print(f"  ratio 20k/1k: {mem:.3f}")
    print(f"total {time.perf_counter() - t_start:.0f} s")
    s, k = ratios["seizure"], ratios["kws"]
    print(result_line(rtrl_over_bptt_time=s[f"rtrl@{K0}"], hybrid_over_bptt_time=s[f"hybrid@{K0}"],
                      chunk1_grad_err=e1, chunkT_grad_err=eT,
                      online_mem_ratio_20k_over_1k=mem,
                      rtrl_nx_over_bptt_time=s[f"rtrl-nx@{K0}"],
                      kws_rtrl_over_bptt_time=k[f"rtrl@{K0}"],
                      kws_hybrid_over_bptt_time=k[f"hybrid@{K0}"],
                      kws_rtrl_nx_over_bptt_time=k[f"rtrl-nx@{K0}"]))


if __name__ == "__main__":
    main()
