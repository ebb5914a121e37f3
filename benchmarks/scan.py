"""Benchmark: selective_scan (chunked, custom backward) vs a per-step loop and mambapy's pscan.

Symbols: T (= L) time, B batch, E (= ED) expanded width, N state size.

Each candidate runs forward + backward of the full selective scan (eq. 1-2, with D),
y = scan(u, Δ, A, B, C, D), then ∂⟨y, gy⟩/∂(u, Δ, A, B, C, D) for a fixed random gy:
    ours     selective_scan        time-major (T, B, E)
    loop     selective_scan_ref    per-step loop over ``unbind`` under autograd
    mambapy  mamba.py's MambaBlock.selective_scan with ``pscan``, in its own (B, L, ED, N)
             layout: deltaA = exp(Δ A), BX = Δ B x, hs = pscan(deltaA, BX), y = hs @ C + D x
All run interleaved in this process with the same torch thread count, ``--threads``
(default 1): the reference machine has 2 cores shared with other jobs, and 2 intra-op
threads there oversubscribe them, which slowed every candidate 3-15x and made timings
erratic. Ends with one line:
    RESULT scan_vs_loop=<loop/ours> scan_vs_mambapy=<mambapy/ours or na>

Usage: python benchmarks/scan.py [--T 1024 --B 8 --E 64 --N 16 --threads 2 --repeats 7]
"""

from __future__ import annotations

import argparse

import torch

try:  # `python benchmarks/scan.py` imports its neighbours directly; `-m` cannot.
    from benchutil import interleaved_medians, result_line
except ImportError:
    from benchmarks.benchutil import interleaved_medians, result_line

from bimsnn.ssm.scan import selective_scan, selective_scan_ref

try:  # benchmark-only dependency (`pip install mambapy`); the script runs without it.
    from mambapy.pscan import pscan
except ImportError:
    pscan = None


def mambapy_selective_scan(x, delta, A, B, C, D):
    """mamba.py's ``MambaBlock.selective_scan``, verbatim. x, Δ: (B, L, ED). B, C: (B, L, N)."""
    deltaA = torch.exp(delta.unsqueeze(-1) * A)                   # (B, L, ED, N)
    deltaB = delta.unsqueeze(-1) * B.unsqueeze(2)                 # (B, L, ED, N)
    BX = deltaB * (x.unsqueeze(-1))                               # (B, L, ED, N)
    hs = pscan(deltaA, BX)
    y = (hs @ C.unsqueeze(-1)).squeeze(3)                         # (B, L, ED)
    return y + D * x


def make_inputs(T: int, Bt: int, E: int, N: int, seed: int = 0):
    """Mamba-like inputs: Δ = softplus(·) in ~(0.001, 0.1)·e, A = −(1..N) (S4D-real init)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(T, Bt, E, generator=g)
    delta = torch.nn.functional.softplus(torch.randn(T, Bt, E, generator=g) - 3.0)
    A = -torch.arange(1, N + 1, dtype=torch.float32).repeat(E, 1)
    B = torch.randn(T, Bt, N, generator=g)
    C = torch.randn(T, Bt, N, generator=g)
    D = torch.ones(E)
    gy = torch.randn(T, Bt, E, generator=g)
    return (u, delta, A, B, C, D), gy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for k, v in dict(T=1024, B=8, E=64, N=16, threads=1,
                     repeats=7).items():
        p.add_argument(f"--{k}", type=int, default=v)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    tm_inputs, gy = make_inputs(args.T, args.B, args.E, args.N)
    tm_inputs = [t.requires_grad_() for t in tm_inputs]
    # mambapy's batch-major layout, laid out densely before timing (as its model produces it).
    u, delta, A, B, C, D = tm_inputs
    bm_inputs = [t.detach().transpose(0, 1).contiguous().requires_grad_() for t in (u, delta, B, C)]
    bm_inputs = [bm_inputs[0], bm_inputs[1], A.detach().clone().requires_grad_(),
                 bm_inputs[2], bm_inputs[3], D.detach().clone().requires_grad_()]
    gy_bm = gy.transpose(0, 1).contiguous()

    def fwd_bwd(fn, inputs, g):
        y = fn(*inputs)
        return y, torch.autograd.grad(y, inputs, g)

    fns = {
        "ours": lambda: fwd_bwd(selective_scan, tm_inputs, gy),
        "loop": lambda: fwd_bwd(selective_scan_ref, tm_inputs, gy),
    }
    if pscan is not None:
        fns["mambapy"] = lambda: fwd_bwd(mambapy_selective_scan, bm_inputs, gy_bm)

    # Sanity: all candidates compute the same thing (float32 tolerances).
    y0, g0 = fns["ours"]()
    for name in fns:
        y1, g1 = fns[name]()
        if name == "mambapy":
            y1 = y1.transpose(0, 1)
            g1 = [g1[0].transpose(0, 1), g1[1].transpose(0, 1), g1[2],
                  g1[3].transpose(0, 1), g1[4].transpose(0, 1), g1[5]]
        err = max([(y1 - y0).abs().max().item()] +
                  [((a - b).abs().max() / b.abs().max()).item() for a, b in zip(g1, g0)])
        print(f"check {name:8s} max |Δy|, max rel |Δgrad| = {err:.2e}")

    print(f"shape T={args.T} B={args.B} E={args.E} N={args.N} float32, "
          f"torch {torch.__version__}, threads={torch.get_num_threads()}, forward+backward")
    med = interleaved_medians(fns, repeats=args.repeats, warmup=1)
    for name, s in med.items():
        print(f"{name:8s} median {s * 1e3:8.1f} ms")
    vs_loop = med["loop"] / med["ours"]
    vs_mambapy = med["mambapy"] / med["ours"] if "mambapy" in med else "na"
    print(result_line(scan_vs_loop=vs_loop, scan_vs_mambapy=vs_mambapy))


if __name__ == "__main__":
    main()
