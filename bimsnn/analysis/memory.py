"""Peak training memory against sequence length: BPTT versus the online rules (§4.5).

Symbols: T time, B batch, C inputs, H hidden width, K classes, L layers.

One training pass over one sequence (x (T, B, C), one label per sample, per-step
cross-entropy on per-step logits, ``.grad`` written, no optimizer step)::

    bptt     ``model.forward_seq(x)`` then one backward through all T steps: the graph
             (activations saved for backward) grows as O(T).
    rtrl, hybrid, stdp
             ``model.step`` per step with the rule (:mod:`bimsnn.rules`) attached and
             ``rule.backward(loss_t)`` each step: the carried state is detached, each step's
             graph is freed at once, so memory is O(1) in T (stdp: no loss, ``backward(None)``).
    rtrl_chunk, hybrid_chunk
             the chunked rules (``RTRL(model, chunk=K)``, K = ``MemoryConfig.chunk``):
             ``model.forward_seq`` over K steps (fused kernels), ``rule.backward`` per chunk,
             state detached between chunks: O(K), whatever T.

Two measures, both per (method, T)::

    net_mb   in a *fresh subprocess* (as benchmarks/online_memory.py does): the peak
             resident set during the pass minus the resident set before it (interpreter,
             torch, model and input loaded). The peak is Linux's VmHWM, reset just before
             the pass (``/proc/self/clear_refs``; importing torch alone leaves a transient
             peak that would hide a small model's growth); ``ru_maxrss`` where that is
             unavailable. It is what the OS sees, allocator slack included: MB-level noise.
    graph_mb the bytes of distinct tensor storages saved for backward by the autograd graph
             alive at a backward (``torch.autograd.graph.saved_tensors_hooks``; parameters
             excluded, their storage exists anyway): exact and deterministic, it isolates
             the O(T) term. Measured in the same subprocess, or in-process
             (``subprocess=False``) for quick plots and tests.

Models: "mlp" (Linear + Leaky layers and a leaky-integrator readout; :class:`SpikingMLP`)
or "mamba" (:class:`bimsnn.ssm.mamba.SpikingMambaNet`).
``python -m bimsnn.analysis.memory --Ts 100 1000 --plot mem.png`` prints a table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bimsnn.analysis.rss import peak_rss_mib, proc_status_mib, reset_peak_rss
from bimsnn.models.spiking import SpikingMLP
from bimsnn.state import detach_tree

__all__ = ["MemoryConfig", "SpikingMLP", "make_model", "train_once", "GraphBytes", "measure",
           "memory_vs_T", "plot_memory", "METHODS"]

METHODS = ("bptt", "rtrl", "hybrid", "stdp", "rtrl_chunk", "hybrid_chunk")


@dataclass
class MemoryConfig:
    """Model and data of a memory measurement (everything a child process needs)."""

    model: str = "mlp"          # "mlp" or "mamba"
    n_inputs: int = 16
    width: int = 128            # mlp hidden width H / mamba d_model
    n_layers: int = 2
    n_classes: int = 4
    batch: int = 4
    rate: float = 0.3           # input spike probability per step
    seed: int = 0
    chunk: int = 64             # K of the *_chunk methods

    def __post_init__(self):
        if self.model not in ("mlp", "mamba"):
            raise ValueError(f"MemoryConfig.model must be 'mlp' or 'mamba', got {self.model!r}")
        if self.chunk < 1:
            raise ValueError(f"MemoryConfig.chunk must be ≥ 1, got {self.chunk}")


def make_model(cfg: MemoryConfig) -> nn.Module:
    """The model ``cfg.model`` names ("mlp" or "mamba"), seeded with ``cfg.seed``."""
    torch.manual_seed(cfg.seed)
    if cfg.model == "mlp":
        return SpikingMLP(cfg.n_inputs, cfg.n_classes, hidden=cfg.width, n_layers=cfg.n_layers,
                          beta=0.9, readout_beta=0.9, zero_readout_bias=False)
    from bimsnn.ssm.mamba import MambaConfig, SpikingMambaNet

    return SpikingMambaNet(MambaConfig(d_model=cfg.width, n_inputs=cfg.n_inputs,
                                       n_classes=cfg.n_classes, n_layers=cfg.n_layers))


def make_data(cfg: MemoryConfig, T: int) -> tuple[Tensor, Tensor]:
    """x (T, B, C) Bernoulli(rate) spikes and labels (B,), from a seeded generator."""
    g = torch.Generator().manual_seed(cfg.seed + 1)
    x = (torch.rand(T, cfg.batch, cfg.n_inputs, generator=g) < cfg.rate).float()
    return x, torch.randint(0, cfg.n_classes, (cfg.batch,), generator=g)


class GraphBytes:
    """Context manager: peak bytes of tensors saved for backward by the live graph.

    Each saved tensor counts its own extent (numel · itemsize, once however often it is
    saved); tensors whose storage belongs to a parameter or to one of ``exclude`` (the
    input: it exists whatever the method) are not counted. Call :meth:`freed` after each
    backward: the graph's saved tensors are released then.
    """

    def __init__(self, model: nn.Module, exclude: tuple[Tensor, ...] = ()):
        self._skip = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *exclude)}
        self._seen: set[tuple] = set()
        self.current = self.peak = 0
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t: Tensor) -> Tensor:
        key = (t.data_ptr(), t.numel(), t.dtype)
        if t.untyped_storage().data_ptr() not in self._skip and key not in self._seen:
            self._seen.add(key)
            self.current += t.numel() * t.element_size()
            self.peak = max(self.peak, self.current)
        return t

    def freed(self) -> None:
        self._seen.clear()
        self.current = 0

    def __enter__(self):
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


def train_once(method: str, net: nn.Module, x: Tensor, y: Tensor,
               meter: GraphBytes | None = None, chunk: int = 64) -> None:
    """One training pass over one sequence (see module docstring), writing ``.grad``.
    ``chunk``: K of the ``*_chunk`` methods."""
    T, B = x.shape[:2]
    net.zero_grad(set_to_none=True)
    freed = meter.freed if meter is not None else (lambda: None)
    if method == "bptt":
        if isinstance(net, SpikingMLP):  # the step loop, as the online rules run it
            state, outs = net.init_state(B), []
            for x_t in x:
                out, state = net.step(x_t, state)
                outs.append(out)
            logits = torch.stack(outs)                                  # (T, B, K)
        else:
            logits, _ = net.forward_seq(x)                              # parallel scan
        F.cross_entropy(logits.flatten(0, 1), y.repeat(T)).backward()
        freed()
        return
    from bimsnn.rules import RTRL, STDP, Hybrid

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method.endswith("_chunk"):
        rule = {"rtrl_chunk": RTRL, "hybrid_chunk": Hybrid}[method](net, chunk=chunk)
        try:
            rule.reset(B)
            state = net.init_state(B)
            for t0 in range(0, T, chunk):
                logits, state = net.forward_seq(x[t0:t0 + chunk], state)     # (k, B, K)
                state = detach_tree(state)
                k = logits.shape[0]
                rule.backward(F.cross_entropy(logits.flatten(0, 1), y.repeat(k)) * (k / T))
                freed()
        finally:
            rule.remove()
        return
    rule = {"rtrl": RTRL, "hybrid": Hybrid, "stdp": STDP}[method](net)
    try:
        rule.reset(B)
        state = net.init_state(B)
        for t in range(T):
            if method == "stdp":
                with torch.no_grad():
                    _, state = net.step(x[t], state)
                rule.backward(None)
            else:
                logits_t, state = net.step(x[t], state)
                rule.backward(F.cross_entropy(logits_t, y) / T)
            freed()
            # the rules detach the LIF membranes; SSM/readout state is detached here so that
            # no graph survives the step whatever the rule attaches to
            state = detach_tree(state)
    finally:
        rule.remove()


def _rss_mb(field: str) -> float:
    """VmRSS / VmHWM from /proc in MiB; NaN elsewhere."""
    v = proc_status_mib(field)
    return float("nan") if v is None else v


def _child(spec: dict) -> dict:
    torch.set_num_threads(1)
    cfg = MemoryConfig(**spec["cfg"])
    net = make_model(cfg)
    x, y = make_data(cfg, spec["T"])
    # Importing torch leaves a transient peak far above the pass's: reset the high-water
    # mark so that the peak read afterwards belongs to the pass (ru_maxrss cannot be reset).
    hwm = (reset_peak_rss() is not None)
    base = _rss_mb("VmRSS") if hwm else peak_rss_mib()
    t0 = time.perf_counter()
    with GraphBytes(net, (x,)) as meter:
        train_once(spec["method"], net, x, y, meter, chunk=cfg.chunk)
    dt = time.perf_counter() - t0
    peak = _rss_mb("VmHWM") if hwm else peak_rss_mib()
    return {"method": spec["method"], "T": spec["T"], "base_mb": base, "peak_mb": peak,
            "net_mb": peak - base, "graph_mb": meter.peak / 2**20,
            "ms_per_step": 1e3 * dt / spec["T"]}


def measure(method: str, T: int, cfg: MemoryConfig | None = None,
            subprocess_: bool = True) -> dict:
    """Memory of one (method, T). Fresh subprocess by default; ``subprocess_=False``
    measures only ``graph_mb`` (and time) in this process (net_mb is then NaN)."""
    cfg = cfg or MemoryConfig()
    spec = {"method": method, "T": int(T), "cfg": asdict(cfg)}
    if not subprocess_:
        net = make_model(cfg)
        x, y = make_data(cfg, int(T))
        t0 = time.perf_counter()
        with GraphBytes(net, (x,)) as meter:
            train_once(method, net, x, y, meter, chunk=cfg.chunk)
        return {"method": method, "T": int(T), "base_mb": float("nan"),
                "peak_mb": float("nan"), "net_mb": float("nan"),
                "graph_mb": meter.peak / 2**20,
                "ms_per_step": 1e3 * (time.perf_counter() - t0) / T}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "bimsnn.analysis.memory", "--child",
                        json.dumps(spec)], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"memory child {method} T={T} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def memory_vs_T(Ts, methods=("bptt", "rtrl", "hybrid"), cfg: MemoryConfig | None = None,
                subprocess_: bool = True, jobs: int = 1) -> pd.DataFrame:
    """:func:`measure` for every (method, T); ``jobs`` > 1 runs that many children at once.

    Returns:
        DataFrame with columns method, T, base_mb, peak_mb, net_mb, graph_mb, ms_per_step.
    """
    todo = [(m, T) for T in Ts for m in methods]
    if subprocess_ and jobs > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(jobs) as ex:
            rows = list(ex.map(lambda mt: measure(mt[0], mt[1], cfg), todo))
    else:
        rows = [measure(m, T, cfg, subprocess_) for m, T in todo]
    return pd.DataFrame(rows)


def plot_memory(df: pd.DataFrame, y: str = "net_mb", ax=None, logx: bool = True):
    """One line per method: ``y`` (net_mb or graph_mb) against T."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    for method, g in df.sort_values("T").groupby("method", sort=False):
        ax.plot(g["T"], g[y], "o-", label=method)
    if logx:
        from matplotlib.ticker import NullFormatter, ScalarFormatter

        ax.set_xscale("log")
        ax.set_xticks(sorted(df["T"].unique()))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("sequence length T (steps)")
    ax.set_ylabel({"net_mb": "peak RSS growth (MB)",
                   "graph_mb": "saved-for-backward (MB)"}.get(y, y))
    ax.legend()
    return ax


def main(argv=None) -> None:
    """``python -m bimsnn.analysis.memory``: measure, print the table, optionally plot."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--Ts", type=int, nargs="+", default=[100, 1000, 5000])
    ap.add_argument("--methods", nargs="+", default=["bptt", "rtrl", "hybrid"],
                    choices=METHODS)
    ap.add_argument("--chunk", type=int, default=64, help="K of the *_chunk methods")
    ap.add_argument("--model", default="mlp", choices=("mlp", "mamba"))
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--plot", default=None, help="write the net_mb plot to this path")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return
    cfg = MemoryConfig(model=args.model, width=args.width, batch=args.batch, chunk=args.chunk)
    df = memory_vs_T(args.Ts, args.methods, cfg, jobs=args.jobs)
    print(df.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if args.plot:
        import matplotlib.pyplot as plt

        plot_memory(df)
        plt.tight_layout()
        plt.savefig(args.plot, dpi=120)
    lo, hi = min(args.Ts), max(args.Ts)
    g = df.set_index(["method", "T"])["graph_mb"]
    parts = [f"{m}_graph_ratio={g[(m, hi)] / g[(m, lo)]:.3g}" for m in args.methods
             if g[(m, lo)] > 0]
    print(f"RESULT T={lo}->{hi} " + " ".join(parts))


if __name__ == "__main__":
    main()
