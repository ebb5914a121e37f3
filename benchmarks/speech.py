"""FSDD spoken digits: held-out takes and speaker-disjoint accuracy, BPTT vs Hybrid.

Symbols: N recordings (2000: 4 speakers × 10 digits × 50 takes), T frames, F mel bands.

    python benchmarks/speech.py                        # ~25 min on 1 core
    python benchmarks/speech.py --rules bptt           # ~10 min: the RESULT targets
    python benchmarks/speech.py --splits speaker --folds nicolas --rules bptt

Script, not CI: needs the real FSDD in ``bimsnn.paths.shared_data_dir()/fsdd`` (or
``--data-dir``). Pipeline and model are those of ``recipes/keyword_spotting.py``
(:mod:`bimsnn.tasks.speech`, :mod:`bimsnn.data.speech_features` → thermometer spikes → SpikingMambaNet); features
are computed once. Splits and their features:
    takes      takes 0-4 of every speaker and digit are test (200), the rest train (1800);
               per-utterance ``global`` norm, centre crop, D = 64, 20 epochs.
    speaker    train on 3 speakers (1500), test on the 4th (500), rotating over the 4;
               speaker-level CMVN (each test speaker's stats from his own unlabelled test
               audio: transductive, no labels), utterances stretched to T = 64, 4 extra
               speed-perturbed training copies (0.8, 0.9, 1.1, 1.2), D = 128, 6 epochs.
               ``tta``: class probabilities also averaged over the test audio at 0.9/1.1.
BPTT trains a fixed number of epochs and the test set is scored once. Hybrid (λ = 0.5,
``balance=True``, one-step "autograd" gradient, li readout, AdamW 1e-3) keeps the epoch
with the best accuracy on 10% of the training items. The last line is
``RESULT fsdd_takes_acc=... fsdd_speaker_acc=... fsdd_speaker_acc_tta=...`` (BPTT) plus
``..._hybrid`` keys.

Measured results and the feature ablations: ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch

from bimsnn import models
from bimsnn.data import FSDD
from bimsnn.data.speech_features import SpikeSet, load_features
from bimsnn.metrics import classification_metrics as compute_metrics
from bimsnn.paths import shared_data_dir
from bimsnn.tasks import speech as kws
from bimsnn.training import TrainConfig, evaluate


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="FSDD folder (default: shared data)")
    p.add_argument("--epochs", type=int, default=20, help="BPTT epochs")
    p.add_argument("--epochs-speaker", type=int, default=6, help="BPTT epochs on the speaker "
                   "split (each holds 1 + len(--speed-speaker) copies of the data)")
    p.add_argument("--hybrid-epochs", type=int, default=8,
                   help="Hybrid epochs on takes (each costs ~3 BPTT epochs: step by step)")
    p.add_argument("--hybrid-epochs-speaker", type=int, default=3,
                   help="Hybrid epochs on the speaker split (1 + len(--speed-speaker) copies)")
    p.add_argument("--rules", nargs="+", default=["bptt", "hybrid"], choices=("bptt", "hybrid"))
    p.add_argument("--splits", nargs="+", default=["takes", "speaker"])
    p.add_argument("--folds", nargs="+", default=None, help="held-out speakers (default all)")
    p.add_argument("--hybrid-grad", default="autograd", choices=("rtrl", "autograd"))
    p.add_argument("--lam", type=float, default=0.5, help="Hybrid λ")
    p.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate (BPTT)")
    p.add_argument("--loss-window", type=float, default=1.0,
                   help="Hybrid: fraction of final steps given a loss (TrainConfig.loss_window)")
    p.add_argument("--hybrid-val-frac", type=float, default=0.1,
                   help="Hybrid: share of the training items (seeded, unperturbed) held out to "
                   "pick the best epoch: the one-step online gradient is biased and its loss "
                   "turns back up after a few epochs (0: last epoch)")
    p.add_argument("--grad-clip", type=float, default=None, help="gradient norm clip (Hybrid)")
    p.add_argument("--hybrid-lr", type=float, default=1e-3, help="AdamW learning rate (Hybrid; "
                   "3e-3 makes the one-step online gradient unstable)")
    p.add_argument("--d-model", type=int, default=64, help="D on takes")
    p.add_argument("--d-model-speaker", type=int, default=128, help="D on the speaker split")
    p.add_argument("--hybrid-readout", default="li", choices=("li", "mean_mem"),
                   help="Hybrid's readout (li: per-step membrane, a target at every step)")
    p.add_argument("--norm-takes", default="global", choices=("global", "cmn"))
    p.add_argument("--norm-speaker", default="speaker", choices=("global", "cmn", "speaker"),
                   help="speaker: speaker-level CMVN (each test speaker's own, unlabelled stats)")
    p.add_argument("--fit-speaker", default="stretch", choices=("crop", "stretch"))
    p.add_argument("--speed-speaker", type=float, nargs="*", default=[0.8, 0.9, 1.1, 1.2],
                   help="speed-perturbed training copies on the speaker split")
    p.add_argument("--tta", type=float, nargs="*", default=[0.9, 1.1],
                   help="speaker split: also score the mean class probabilities over the test "
                   "audio at these speeds (+ 1.0), test-time augmentation (must be among "
                   "--speed-speaker); none: off")
    p.add_argument("--hybrid-balance", action=argparse.BooleanOptionalAction, default=True,
                   help="Hybrid's STDP term scaled to (1-λ)·‖grad‖ (bimsnn.rules.hybrid)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids "
                   "oversubscription on a shared 2-core machine)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", action="store_true", help="log every epoch's train loss")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING,
                        format="%(message)s")
    root = Path(a.data_dir) if a.data_dir else (shared_data_dir() or Path("absent")) / "fsdd"
    if not root.is_dir():
        raise SystemExit(f"FSDD not found at {root}: pass --data-dir")

    pre = kws.KWSPre()                                  # the recipe's default features
    t0 = time.perf_counter()
    ds = FSDD(root, pipeline=pre.pipeline())
    frames = pre.frames
    setups = {"takes": (a.norm_takes, "crop", ()),
              "speaker": (a.norm_speaker, a.fit_speaker, tuple(a.speed_speaker))}
    setups = {k: v for k, v in setups.items() if k in a.splits}
    if "speaker" in setups and not set(a.tta or ()) <= set(a.speed_speaker):
        raise SystemExit("--tta speeds must be among --speed-speaker (features are made once)")
    feats = {(n, f, sp): load_features(ds, np.arange(len(ds)), frames, n, f, sp)
             for n, f, speeds in set(setups.values()) for sp in (1.0, *speeds)}  # (N, T, F)
    labels = [int(it[1]) for it in ds.items]
    metas = [dict(it[2]) for it in ds.items]
    speakers = np.array([m["speaker"] for m in metas])
    takes = np.array([m["take"] for m in metas])
    print(f"FSDD: {len(ds)} recordings, speakers {sorted(map(str, set(speakers)))}, features "
          f"{setups} in {time.perf_counter() - t0:.0f} s", flush=True)
    code, n_in = pre.code, pre.n_inputs

    def subset(mask: np.ndarray, split: str, train: bool, speed: float = 1.0):
        idx = np.flatnonzero(mask)
        n, f, speeds = setups[split]
        sets = [SpikeSet(feats[(n, f, sp)][idx], [labels[i] for i in idx],
                         [metas[i] for i in idx], code, augment=train)
                for sp in ((1.0, *speeds) if train else (speed,))]
        return sets[0] if len(sets) == 1 else torch.utils.data.ConcatDataset(sets)

    folds = []
    if "takes" in a.splits:
        folds.append(("takes", "takes 0-4", takes <= 4))
    if "speaker" in a.splits:
        for s in a.folds or sorted(set(speakers)):
            folds.append(("speaker", s, speakers == s))
    acc: dict[tuple[str, str], list[float]] = {}
    print(f"{'split':8} {'test':10} {'rule':7} {'epochs':>6} {'acc':>6} {'train s':>8}")
    for split, name, test in folds:
        sets = {"train": subset(~test, split, True), "test": subset(test, split, False)}
        train_idx = np.flatnonzero(~test)
        n_val = round(a.hybrid_val_frac * len(train_idx))
        val = np.zeros(len(test), bool)
        val[np.random.default_rng(a.seed).permutation(train_idx)[:n_val]] = True
        held = {"train": subset(~test & ~val, split, True), "val": subset(val, split, False),
                "test": sets["test"]} if n_val else sets
        for rule in a.rules:
            epochs = {("bptt", "takes"): a.epochs, ("bptt", "speaker"): a.epochs_speaker,
                      ("hybrid", "takes"): a.hybrid_epochs,
                      ("hybrid", "speaker"): a.hybrid_epochs_speaker}[rule, split]
            tc = TrainConfig(epochs=epochs, batch_size=a.batch_size,
                             lr=a.lr if rule == "bptt" else a.hybrid_lr,
                             weight_decay=0.01, rule=rule, lam=a.lam, seed=a.seed,
                             hybrid_grad=a.hybrid_grad,
                             balance=a.hybrid_balance, loss_window=a.loss_window,
                             grad_clip=None if rule == "bptt" else a.grad_clip,
                             progress=False, plots=False)
            t1 = time.perf_counter()
            spec = kws.kws_spec(n_in, 10, rule=rule,
                                d_model=a.d_model if split == "takes" else a.d_model_speaker,
                                readout="mean_mem" if rule == "bptt" else a.hybrid_readout)
            # the figures above were measured with the readout bias left at its random init
            spec = models.spec(spec["name"], **spec["kwargs"], zero_readout_bias=False)
            model, hist, _ = kws.train_kws(spec, sets if rule == "bptt" else held, tc)
            if rule != "bptt" and n_val:
                best = max(hist, key=lambda h: h["val_acc"])
                print(f"  hybrid val acc by epoch {[round(h['val_acc'], 3) for h in hist]}, "
                      f"kept epoch {best['epoch']}", flush=True)
            res = evaluate(model, sets["test"], tc)
            m = compute_metrics(res["scores"], res["labels"], "multiclass")
            acc.setdefault((split, rule), []).append(m["acc"])
            tta = ""
            if split == "speaker" and a.tta:
                probs = [res["scores"]] + [evaluate(model, subset(test, split, False, sp), tc)
                                           ["scores"] for sp in a.tta]
                m_tta = compute_metrics(np.mean(probs, 0), res["labels"], "multiclass")
                acc.setdefault((split, rule + "_tta"), []).append(m_tta["acc"])
                tta = f"  (tta {m_tta['acc']:.3f})"
            print(f"{split:8} {name:10} {rule:7} {epochs:6d} {m['acc']:6.3f} "
                  f"{time.perf_counter() - t1:8.0f}{tta}", flush=True)
    summary = {f"fsdd_{split}_acc{'' if rule == 'bptt' else '_' + rule.replace('bptt_', '')}":
               float(np.mean(v)) for (split, rule), v in acc.items()}
    print(f"total {time.perf_counter() - t0:.0f} s")
    print("RESULT " + " ".join(f"{k}={v:.4f}" for k, v in summary.items()))
    return summary


if __name__ == "__main__":
    main()
