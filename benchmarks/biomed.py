"""Benchmark: seizure detection (Bonn EEG) and arrhythmia (MIT-BIH 208) on the shared real
data, through the recipes' own pipelines and default settings.

Symbols: T time steps, B batch, C spike afferents, K classes.

Not a CI test: ~10-20 min of CPU. Reads ``shared_data_dir()`` (``$BIMSNN_SHARED_DATA`` or
../shared/data) and exits with a message when it is absent.

What a user gets from the recipes with default flags, trained by every rule:
    Bonn       ``recipes/seizure_detection.py --dataset bonn --data-dir .../bonn``: the
               Bonn preprocessing of :data:`bimsnn.tasks.seizure.DATASET_DEFAULTS`
               (0.5-40 Hz, µV, six band envelopes coded by ADM), 4 s windows every 2 s,
               whole segments to train / val / test (50 / 25 / 25 %, seizure and
               seizure-free segments dealt separately), :func:`~bimsnn.tasks.seizure.default_train`;
               window-level AUC-ROC on the test segments, threshold-free.
    MIT-BIH    ``recipes/ecg_classification.py --dataset mitbih --data-dir .../ecg
               --records 208 --classes N V F``: both leads at 90 Hz, multi-ADM, the
               first 60 % of the record to train, the next 20 % to validate, the last 20 %
               to test (:func:`bimsnn.data.windows.time_split`), :func:`~bimsnn.tasks.ecg.default_train`;
               macro-F1 over N / V / F on the test beats.
Each task trains the spiking Mamba with BPTT (parallel scan), RTRL and Hybrid (chunked,
the recipe's default chunk), and the recipe's CNN (and, on Bonn, LSTM) baselines, one
after the other in this process, 1 torch thread, seed 0; the epoch kept is the best on the
validation split; the test split is scored once.

Ends with one line:
    RESULT bonn_auc_bptt=... bonn_auc_rtrl=... bonn_auc_hybrid=... bonn_auc_cnn=...
           mitbih_macro_f1=... mitbih_macro_f1_rtrl=... mitbih_macro_f1_hybrid=...
           mitbih_macro_f1_cnn=...
(``mitbih_macro_f1`` is the spiking Mamba trained by BPTT.) Figures: benchmarks/RESULTS.md.

Usage: python benchmarks/biomed.py [--tasks bonn mitbih] [--rules bptt rtrl hybrid]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

import torch

try:  # `python benchmarks/biomed.py` imports its neighbours directly; `-m` cannot.
    from benchutil import result_line
except ImportError:
    from benchmarks.benchutil import result_line

from bimsnn.paths import shared_data_dir
from bimsnn.tasks import ecg, seizure
from bimsnn.tasks.common import model_spec, train_model
from bimsnn.training import class_weighted_ce

RULES = ("bptt", "rtrl", "hybrid")
NAN = float("nan")


def _quiet(tc):
    return replace(tc, out_dir=None, progress=False, plots=False, device="cpu")


def bonn(root, rules) -> dict:
    pre = seizure.resolve_pre("bonn", window_s=4.0, stride_s=2.0, sfreq="auto",
                              l_freq="auto", h_freq="auto", encoder="auto",
                              spike_threshold="auto", normalize="auto", smooth_k=2)
    _, _, sets, _ = seizure.load_split(pre, root / "bonn")
    C = sets["train"].x.shape[-1]
    loss_fn = class_weighted_ce(sets["train"].labels, 2)
    tc, mc = _quiet(seizure.default_train("bonn")), seizure.DEFAULT_MODEL
    print(f"[bonn] windows {dict((k, len(v)) for k, v in sets.items())}, T = "
          f"{sets['train'].x.shape[1]}, C = {C}", flush=True)
    out = {}
    runs = [(r, "spiking_mamba", replace(tc, rule=r)) for r in rules]
    runs += [("cnn", "cnn", replace(tc, rule="bptt", lr=mc.compare_lr)),
             ("lstm", "lstm", replace(tc, rule="bptt", lr=mc.compare_lr))]
    for key, name, rtc in runs:
        spec = model_spec(mc, name, C, 2)
        model, hist, secs = train_model(spec, sets["train"], sets["val"], rtc, loss_fn)
        m, _ = seizure.score(model, spec, rtc, sets["val"], sets["test"], pre, {})
        out[key] = m["auc_roc"]
        print(f"[bonn] {key:7s} AUC-ROC {m['auc_roc']:.4f} AUC-PR {m['auc_pr']:.4f} "
              f"train {secs:.0f} s ({len(hist)} epochs)", flush=True)
    return out


def mitbih(root, rules) -> dict:
    pre = ecg.ECGPre(kind="mitbih", sfreq=90, **ecg.resolve_flags("mitbih", None, "auto",
                                                                   "auto"),
                     task="multiclass", classes=ecg.aami_subset(["N", "V", "F"]))
    sets, data = ecg.load_sets(pre, root / "ecg", split="time", records=["208"])
    C, K = sets["train"].x.shape[-1], len(data["classes"])
    pre = replace(pre, classes=tuple(data["classes"]),
                  prior=ecg.class_prior(sets["train"].labels, K))
    loss_fn = class_weighted_ce(sets["train"].labels, K)
    tc = _quiet(replace(ecg.default_train("mitbih"), metric="macro_f1"))
    mc = ecg.default_model("mitbih")
    print(f"[mitbih] beats {dict((k, len(v)) for k, v in sets.items())}, T = "
          f"{sets['train'].x.shape[1]}, C = {C}, classes {list(pre.classes)}", flush=True)
    out = {}
    runs = [(r, "spiking_mamba", replace(tc, rule=r)) for r in rules]
    runs += [("cnn", "cnn", replace(tc, rule="bptt", lr=mc.compare_lr,
                                    epochs=mc.compare_epochs or tc.epochs))]
    for key, name, rtc in runs:
        spec = model_spec(mc, name, C, K)
        model, hist, secs = train_model(spec, sets["train"], sets["val"], rtc, loss_fn)
        m, _ = ecg.score(model, spec, rtc, sets["test"], list(pre.classes), pre.prior)
        out[key] = m["macro_f1"]
        print(f"[mitbih] {key:7s} macro-F1 {m['macro_f1']:.4f} accuracy {m['acc']:.4f} "
              f"train {secs:.0f} s ({len(hist)} epochs); confusion {m['confusion']}",
              flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", nargs="+", default=["bonn", "mitbih"], choices=["bonn", "mitbih"])
    ap.add_argument("--rules", nargs="+", default=list(RULES), choices=RULES)
    args = ap.parse_args()
    root = shared_data_dir()
    if root is None or not (root / "bonn").is_dir() or not (root / "ecg" / "208.atr").is_file():
        sys.exit("biomed.py: the shared real data is missing (need bonn/{Z,O,N,F,S} and "
                 "ecg/208.*); set BIMSNN_SHARED_DATA or put it at ../shared/data")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    b = bonn(root, args.rules) if "bonn" in args.tasks else {}
    m = mitbih(root, args.rules) if "mitbih" in args.tasks else {}
    print(f"total {time.perf_counter() - t0:.0f} s")
    print(result_line(bonn_auc_bptt=b.get("bptt", NAN), bonn_auc_rtrl=b.get("rtrl", NAN),
                      bonn_auc_hybrid=b.get("hybrid", NAN), bonn_auc_cnn=b.get("cnn", NAN),
                      mitbih_macro_f1=m.get("bptt", NAN), mitbih_macro_f1_rtrl=m.get("rtrl", NAN),
                      mitbih_macro_f1_hybrid=m.get("hybrid", NAN),
                      mitbih_macro_f1_cnn=m.get("cnn", NAN)))


if __name__ == "__main__":
    main()
