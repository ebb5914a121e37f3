"""Benchmark: seizure detection (Bonn EEG) and arrhythmia (MIT-BIH 208) on the shared real data.

Symbols: T time steps (frames), B batch, C spike channels, K classes, D model width,
N SSM state size, W readout window steps.

Not a CI test: a few minutes to ~half an hour of CPU. Reads ``shared_data_dir()``
(``$BIMSNN_SHARED_DATA`` or ../shared/data) and exits with a message when it is absent.

Bonn (80 segments per set here, 23.6 s at 173.61 Hz): seizure (set S) against the rest
(Z, O, N, F). Band-pass 0.5–40 Hz (the loader's mne filter), µV kept (no z-scoring), 4 s
windows with 50 % overlap (10 per segment). Encoder (``bimsnn.encoding.FilterbankADMEncoder``):
6 bands (δ θ α β1 β2 γ, 0.5–40 Hz), log10 RMS envelope every 22 samples (0.127 s; T = 31),
ADM with θ = 0.15 decades from a fixed floor 10^0.5 µV → C = 12 on/off channels. Split:
20 % of segments to test, 20 % of the rest to validation (best epoch by validation AUC),
stratified by set S, never one segment on two sides (``recording_split``). Headline:
window-level AUC-ROC; segment-level AUC (mean window score per segment) also printed.

MIT-BIH 208 (first 20 min shared): both leads (MLII, V1) resampled to 90 Hz, beat windows
0.25 s before / 0.45 s after the R peak (T = 62), ``MultiADM`` θ = 0.03, 0.1, 0.3 mV →
C = 12. AAMI N / V / F; the 2 S beats are dropped (and 2 F beats at the record edge by the
loader). Train on beats whose window ends before 15:00, test on those starting after it
(1 beat in the gap). No validation set (20 min hold too few F beats): fixed epochs, cosine
schedule, and the epoch kept is the one with the best macro-F1 on the training beats
(the online rules' loss is not monotone; the test period is never looked at).
Headline ``mitbih_macro_f1`` = SpikingMambaNet trained by BPTT (not a test-set pick of
the best rule); the other models' F1 are in the table.

Models: ``SpikingMambaNet`` (1 block; logits = mean of the per-step leaky-integrator
readout over the last half of the window, for BPTT and online alike) trained by BPTT
(parallel scan), RTRL and Hybrid through :func:`bimsnn.training.fit` (online rules: per-step
loss on the last half of the window, state detached between steps). Hybrid: λ·RTRL gradient
− (1 − λ)·STDP with λ = 0.9 on the hidden spiking pairs (in_fc→in_lif, out_proj→lif), the
readout and the SSM on the plain online gradient, STDP A+ = 1e-4 (A− = 1.05e-4), 1 % of
bimsnn's default: with AdamW the STDP term does not shrink as the loss gradient does, and at
A+ = 1e-2 it took over (MIT-BIH macro-F1 0.73–0.83, loss rising after a few epochs).
CNN1d and LSTM baselines (BPTT) on the same spikes. All: AdamW (wd 1e-4), gradient clip 1,
cosine learning-rate decay, class-balanced cross-entropy (inverse frequency), seed 0.

Known limits (seen while tuning, one seed each): the online rules learn more slowly per
epoch than BPTT (in_proj / conv / in_fc get within-step gradients only, so features that
matter later in the window are learned through the SSM traces alone), and on MIT-BIH their
training loss is not monotone: with batch 64, or with longer schedules, RTRL and Hybrid
alike sometimes jump to a worse plateau mid-training and do not recover; the train-set
selection above limits, but does not remove, the damage. Hybrid's STDP term is kept small
for the same reason. Test-set figures moved by ±0.05 macro-F1 between such settings.

Measurement: each (task, model, rule) trains in a fresh subprocess (sequentially, one torch
thread by default: the reference machine has 2 cores shared with other jobs). Wall and CPU
seconds cover ``fit`` (training + per-epoch validation). Memory: just before ``fit`` the
worker resets the kernel's peak-RSS mark (``/proc/self/clear_refs`` ← 5) and reads the RSS;
just after, it reads the peak (``VmHWM``). "peak MiB" is that peak (the whole process:
interpreter, torch ≈ 0.5 GiB, data, model, training), "Δ MiB" its rise over the RSS at the
start of ``fit``: training's own footprint (activations, traces, optimizer state, allocator
growth). Where ``clear_refs`` is unavailable, ``ru_maxrss`` (the whole run) is shown and Δ
is nan. One run per configuration, not interleaved medians: each is a minutes-long
training, and wall times on a shared machine vary several-fold; CPU seconds vary less.

Ends with one line:
    RESULT bonn_auc_bptt=... bonn_auc_hybrid=... bonn_auc_rtrl=... mitbih_macro_f1=...

Usage: python benchmarks/biomed.py [--quick] [--tasks bonn mitbih] [--runs mamba:bptt ...]
       [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

try:  # `python benchmarks/biomed.py` imports its neighbours directly; `-m` cannot.
    from benchutil import result_line
except ImportError:
    from benchmarks.benchutil import result_line
try:
    import biomed_worker as bm
except ImportError:
    from benchmarks import biomed_worker as bm

from bimsnn.paths import repo_root, shared_data_dir

RUNS = ("mamba:bptt", "mamba:rtrl", "mamba:hybrid", "cnn:bptt", "lstm:bptt")
# Per task and run kind: epochs, lr, batch size (quick: epochs).
BONN = dict(window_s=4.0, stride_s=2.0)
MITBIH = dict(fs=90, window=(0.25, 0.45), train_end_s=900.0, thetas=(0.03, 0.1, 0.3))
HYPER = {
    "bonn": {"mamba:bptt": (8, 3e-3, 64), "mamba:rtrl": (4, 3e-3, 32),
             "mamba:hybrid": (4, 3e-3, 32), "cnn:bptt": (8, 3e-3, 64),
             "lstm:bptt": (8, 3e-3, 64)},
    "mitbih": {"mamba:bptt": (30, 3e-3, 32), "mamba:rtrl": (12, 3e-3, 32),
               "mamba:hybrid": (12, 3e-3, 32), "cnn:bptt": (30, 3e-3, 32),
               "lstm:bptt": (30, 3e-3, 32)},
}
QUICK_EPOCHS = {"bptt": 3, "online": 1}


def run_one(spec: bm.Spec, timeout: float) -> dict:
    """Train ``spec`` in a fresh subprocess; its JSON result (or an ``error`` entry)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(asdict(spec)),
           str(out)]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            return dict(spec=asdict(spec), error=p.stderr.strip().splitlines()[-1:] or ["?"])
        return json.loads(out.read_text()) | dict(proc_s=time.perf_counter() - t0)
    except subprocess.TimeoutExpired:
        return dict(spec=asdict(spec), error=[f"timeout after {timeout:.0f} s"])
    finally:
        out.unlink(missing_ok=True)


def _fmt(v, nd=4) -> str:
    return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"


def print_table(task: str, results: list[dict], classes: list[str]) -> None:
    head = (f"{'model':<6} {'rule':<7} {'AUC-ROC':>8} {'AUC-PR':>8} {'macroF1':>8} "
            + ("  seg-AUC " if task == "bonn" else f" {'F1 ' + '/'.join(classes):>20} ")
            + f"{'train s':>8} {'cpu s':>8} {'peak MiB':>9} {'Δ MiB':>7} {'params':>7} ep")
    print(f"\n== {task} ==\n{head}\n{'-' * len(head)}")
    for r in results:
        s = r["spec"]
        if "error" in r:
            print(f"{s['model']:<6} {s['rule']:<7} ERROR {r['error']}")
            continue
        m = r["metrics"]
        extra = (f"  {_fmt(m.get('seg_auc')):>7} " if task == "bonn" else
                 f" {'/'.join(f'{v:.3f}' for v in m['f1_per_class']):>20} ")
        print(f"{s['model']:<6} {s['rule']:<7} {_fmt(m['auc']):>8} {_fmt(m['ap']):>8} "
              f"{_fmt(m['macro_f1']):>8} {extra}{r['train_s']:>8.1f} {r['train_cpu_s']:>8.1f} "
              f"{_fmt(r['fit_peak_rss_mib'] or r['maxrss_mib'], 0):>9} "
              f"{_fmt(r['fit_delta_rss_mib'], 1):>7} "
              f"{r['params']:>7} {r['epochs_run']}")
        if task == "mitbih":
            print(f"{'':<15} confusion (rows true {'/'.join(classes)}): {m['confusion']}")


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        bm.main_worker(sys.argv[2], sys.argv[3])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", nargs="+", default=["bonn", "mitbih"], choices=["bonn", "mitbih"])
    ap.add_argument("--runs", nargs="+", default=list(RUNS), choices=RUNS,
                    help="model:rule pairs to train (default: all)")
    ap.add_argument("--quick", action="store_true",
                    help=f"epochs {QUICK_EPOCHS} (bptt / online): a smoke run, not the targets")
    ap.add_argument("--epochs-scale", type=float, default=1.0, help="multiply every epoch count")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=3600.0, help="per run, seconds")
    ap.add_argument("--json", type=Path, default=None, help="write all results here")
    args = ap.parse_args()

    root = shared_data_dir()
    looked = root or os.environ.get("BIMSNN_SHARED_DATA") or repo_root().parent / "shared" / "data"
    if root is None or not (root / "bonn").is_dir() or not (root / "ecg" / "208.atr").is_file():
        sys.exit("biomed.py: the shared real data is missing (need bonn/{Z,O,N,F,S} and "
                 "ecg/208.*); set BIMSNN_SHARED_DATA or put it at ../shared/data "
                 f"(looked in {looked})")
    t_all = time.perf_counter()
    torch.manual_seed(args.seed)
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            t0 = time.perf_counter()
            if task == "bonn":
                data = bm.prepare_bonn(root / "bonn", seed=args.seed, **BONN)
            else:
                data = bm.prepare_mitbih(root / "ecg", **MITBIH)
            path = Path(tmp) / f"{task}.pt"
            torch.save(bm.to_payload(data), path)
            print(f"[{task}] data ready in {time.perf_counter() - t0:.1f} s: "
                  f"{json.dumps(data['info'], default=str)}", flush=True)
            results[task] = []
            for run in args.runs:
                model, rule = run.split(":")
                epochs, lr, bs = HYPER[task][run]
                if args.quick:
                    epochs = QUICK_EPOCHS["bptt" if rule == "bptt" else "online"]
                epochs = max(1, round(epochs * args.epochs_scale))
                spec = bm.Spec(task=task, model=model, rule=rule, data=str(path), epochs=epochs,
                               lr=lr, batch_size=bs, seed=args.seed, threads=args.threads)
                if task == "mitbih":
                    spec = replace(spec, select_on_train=True)
                r = run_one(spec, args.timeout)
                results[task].append(r)
                msg = (f"auc={_fmt(r['metrics']['auc'])} macro_f1={_fmt(r['metrics']['macro_f1'])}"
                       f" train {r['train_s']:.0f} s" if "error" not in r else r["error"])
                print(f"[{task}] {run} epochs={epochs}: {msg}", flush=True)
            print_table(task, results[task], data["classes"])
    wall = time.perf_counter() - t_all
    print(f"\ntotal wall time {wall:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps(dict(results=results, wall_s=wall), indent=1))

    def pick(task, model, rule, key):
        for r in results.get(task, []):
            s = r["spec"]
            if s["model"] == model and s["rule"] == rule and "error" not in r:
                return float(r["metrics"][key])
        return float("nan")

    print(result_line(bonn_auc_bptt=pick("bonn", "mamba", "bptt", "auc"),
                      bonn_auc_hybrid=pick("bonn", "mamba", "hybrid", "auc"),
                      bonn_auc_rtrl=pick("bonn", "mamba", "rtrl", "auc"),
                      mitbih_macro_f1=pick("mitbih", "mamba", "bptt", "macro_f1")))


if __name__ == "__main__":
    main()
