"""Benchmark: online learning against BPTT, per epoch, through the recipes' own pipelines.

Symbols: T time steps, K chunk, B batch, C afferents.

Two tasks, each with its recipe's default data, model and training settings (library
functions, so the figures are what a user of the recipe gets):
    seizure   ``recipes/seizure_detection.py`` defaults: the generated CHB-MIT-layout demo
              (:mod:`bimsnn.tasks.seizure`), spiking Mamba D=16, N=8, B=64, T=128;
    kws       ``recipes/keyword_spotting.py`` defaults on the shared FSDD (held-out takes,
              :mod:`bimsnn.tasks.speech`), spiking Mamba D=64, N=16, B=32, T=64; skipped
              with a message where ``../shared/data/fsdd`` is absent.
For each, one epoch of :func:`bimsnn.training.fit` (training only: no validation, no
checkpoint) with BPTT, RTRL and Hybrid at the recipe's default chunk. Runs are interleaved
(bptt, rtrl, hybrid, bptt, ...) and timed by this process's CPU time (the reference box
has 2 cores shared with other jobs; wall medians are printed too). Torch threads = 1.

Also: the chunk=1 gradient against the per-step rule and the chunk=T gradient against
BPTT (float64, the default seizure model, a batch of its demo windows, RTRL), and the net
peak memory of one RTRL pass at the default chunk for T = 1k and 20k steps
(``benchmarks/online_chunked.py``'s fresh-subprocess measurement).

Ends with:
    RESULT rtrl_over_bptt_time=... hybrid_over_bptt_time=... chunk1_grad_err=...
           chunkT_grad_err=... online_mem_ratio_20k_over_1k=... (+ kws_* keys)

Usage: python benchmarks/online_speed.py [--repeats 3] [--tasks seizure kws]
       [--chunk K] [--x-proj-traces default|on|off]   (time settings other than the defaults)
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch

try:  # `python benchmarks/online_speed.py` imports its neighbours directly; `-m` cannot.
    import online_chunked
    from benchutil import result_line
except ImportError:
    from benchmarks import online_chunked
    from benchmarks.benchutil import result_line

from bimsnn import models
from bimsnn.paths import repo_root, shared_data_dir
from bimsnn.tasks import seizure, speech
from bimsnn.tasks.common import model_spec
from bimsnn.training import TrainConfig, class_weighted_ce, fit
from bimsnn.training.online import WindowTarget, make_rule, online_pass

RULES = ("bptt", "rtrl", "hybrid")


def seizure_setup():
    """(train set, spec, TrainConfig, loss_fn) of the seizure recipe's default run."""
    pre = seizure.resolve_pre("demo", window_s=4.0, stride_s=2.0, sfreq="auto", l_freq="auto",
                              h_freq="auto", encoder="auto", spike_threshold="auto",
                              normalize="auto", smooth_k=2)
    root = seizure.demo_root(None, repo_root() / "datasets" / "demo_chbmit")
    _, _, sets, _ = seizure.load_split(pre, root)
    train = sets["train"]
    spec = model_spec(seizure.DEFAULT_MODEL, "spiking_mamba", train.x.shape[-1], 2)
    return (train, lambda rule: spec, seizure.default_train("demo"),
            class_weighted_ce(train.labels, 2))


def kws_setup():
    """The keyword-spotting recipe's default run on the shared FSDD (None if absent)."""
    shared = shared_data_dir()
    if shared is None or not (shared / "fsdd").is_dir():
        print("kws: ../shared/data/fsdd not found, skipped")
        return None
    pre = speech.KWSPre()
    parts, classes, _ = speech.load_data(pre, str(shared / "fsdd"), repo_root() / "runs",
                                         eval_only=False, split="takes", test_speakers=None,
                                         seed=0, val_frac=0.1, max_items=None, strict=False)
    train = speech.spike_sets({"train": parts["train"]}, pre)["train"]
    return (train, lambda rule: speech.kws_spec(pre.n_inputs, len(classes), rule=rule),
            speech.DEFAULT_TRAIN, None)


def one_epoch(spec: dict, train, tc: TrainConfig, loss_fn) -> tuple[float, float]:
    """(CPU s, wall s) of one training epoch of a freshly built model."""
    torch.manual_seed(0)
    model = models.build(spec)
    tc = replace(tc, epochs=1, out_dir=None, progress=False, plots=False, device="cpu")
    c0, w0 = time.process_time(), time.perf_counter()
    fit(model, train, None, tc, loss_fn=loss_fn)
    return time.process_time() - c0, time.perf_counter() - w0


def measure_task(name: str, setup, repeats: int, chunk: int | None = None,
                 x_proj: str = "default") -> dict:
    train, spec_for, tc, loss_fn = setup
    if chunk is not None:
        tc = replace(tc, chunk=chunk)
    if x_proj != "default":
        tc = replace(tc, x_proj_traces=x_proj == "on")
    cpu: dict = {r: [] for r in RULES}
    wall: dict = {r: [] for r in RULES}
    for _ in range(repeats):
        for r in RULES:
            c, w = one_epoch(spec_for(r), train, replace(tc, rule=r), loss_fn)
            cpu[r].append(c)
            wall[r].append(w)
    med = {r: statistics.median(v) for r, v in cpu.items()}
    print(f"{name}: one epoch ({len(train)} items, chunk {tc.chunk}, x_proj traces "
          f"{'on' if tc.x_proj_traces else 'off'}), median of {repeats} "
          f"(CPU s | wall s | CPU ratio to bptt)")
    for r in RULES:
        print(f"  {r:8s} {med[r]:8.2f} {statistics.median(wall[r]):8.2f}   "
              f"x{med[r] / med['bptt']:.2f}")
    return {r: med[r] / med["bptt"] for r in ("rtrl", "hybrid")}


def _rel(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).norm() / b[k].norm().clamp_min(1e-300)) for k in b)


def grad_errors(train, spec_for, tc: TrainConfig, _loss_fn=None) -> tuple[float, float]:
    """(chunk=1 vs the per-step rule, chunk=T vs BPTT), max relative error over parameter
    tensors of one RTRL pass on 8 demo windows, float64, per-step cross-entropy, with every
    trace kept (``x_proj_traces=True``, the exact rule)."""
    loss_fn = torch.nn.functional.cross_entropy
    x = torch.stack([train[i][0] for i in range(8)], 1).double()             # (T, 8, C)
    y = torch.stack([torch.as_tensor(train[i][1]) for i in range(8)])

    def grads(chunk: int | None, bptt: bool = False) -> dict:
        torch.manual_seed(0)
        model = models.build(spec_for("rtrl")).double()
        if bptt:     # the objective WindowTarget trains: mean per-step loss over T
            logits = model.forward_seq(x)[0]
            sum(loss_fn(z, y) for z in logits).div(len(logits)).backward()
        else:
            # x_proj traces on: the recipe may drop them (an approximation) for speed.
            with make_rule(model, replace(tc, rule="rtrl", chunk=chunk,
                                          x_proj_traces=True)) as rule:
                online_pass(model, rule, x, WindowTarget(y, loss_fn, 1.0))
        return {n: p.grad.detach().clone() for n, p in model.named_parameters()
                if p.grad is not None}

    return _rel(grads(1), grads(None)), _rel(grads(x.shape[0]), grads(None, bptt=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tasks", nargs="*", default=["seizure", "kws"], choices=["seizure", "kws"],
                    help="timed tasks (none: only the gradient and memory checks)")
    ap.add_argument("--chunk", type=int, default=None,
                    help="override the recipes' default chunk K (to time other K)")
    ap.add_argument("--x-proj-traces", choices=["default", "on", "off"], default="default",
                    help="override the recipes' x_proj-traces setting")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    res: dict = {}
    sz = seizure_setup()
    if "seizure" in args.tasks:
        res.update(measure_task("seizure", sz, args.repeats, args.chunk, args.x_proj_traces))
    if "kws" in args.tasks and (kws := kws_setup()) is not None:
        res.update({f"kws_{k}": v for k, v in measure_task(
            "kws", kws, args.repeats, args.chunk, args.x_proj_traces).items()})
    e1, eT = grad_errors(*sz)
    print(f"gradients: chunk=1 vs per-step RTRL {e1:.2e}, chunk=T vs BPTT {eT:.2e}")
    mem = online_chunked.measure_memory(sz[2].chunk)
    print(f"memory: net peak ratio T=20k / T=1k at chunk {sz[2].chunk}: {mem:.3f}")
    print(f"total {time.perf_counter() - t0:.0f} s")
    print(result_line(rtrl_over_bptt_time=res.get("rtrl", float("nan")),
                      hybrid_over_bptt_time=res.get("hybrid", float("nan")),
                      chunk1_grad_err=e1, chunkT_grad_err=eT,
                      online_mem_ratio_20k_over_1k=mem,
                      kws_rtrl_over_bptt_time=res.get("kws_rtrl", float("nan")),
                      kws_hybrid_over_bptt_time=res.get("kws_hybrid", float("nan"))))


if __name__ == "__main__":
    main()
