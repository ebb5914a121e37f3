"""FSDD spoken digits: held-out takes and unseen speakers, BPTT vs the online rule.

Symbols: N recordings (2000: 4 speakers × 10 digits × 50 takes), T frames, F mel bands.

    python benchmarks/speech.py                          # every cell (~40 min on 1 busy core)
    python benchmarks/speech.py --rules bptt --splits speaker --folds nicolas

Script, not CI: needs the real FSDD in ``bimsnn.paths.shared_data_dir()/fsdd`` (or
``--data-dir``). Every cell is what ``python recipes/keyword_spotting.py [--rule R]
[--split speaker --test-speakers S]`` does with its default flags: the same library calls
(:func:`bimsnn.tasks.speech.load_data`, :func:`~bimsnn.tasks.speech.spike_sets`,
:func:`~bimsnn.tasks.speech.kws_spec`, :func:`~bimsnn.tasks.speech.train_kws`,
:func:`~bimsnn.tasks.speech.score`) with the recipe's defaults (:class:`KWSPre`,
``DEFAULT_TRAIN``, ``DEFAULT_AUGMENT``); each fold's features are made once and shared by
the rules. Splits:

    takes      takes 0-4 of every speaker and digit are test (200), the rest train (1800);
    speaker    train on 3 speakers, test on the 4th (500), rotating over the 4 (mean).

The online rule runs in the recipe's default chunks (``DEFAULT_TRAIN.chunk`` steps, traces
across chunks). The last line is ``RESULT fsdd_takes_bptt=… fsdd_takes_hybrid=…
fsdd_speaker_bptt=… fsdd_speaker_hybrid=…``. Measured results and the ablations:
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bimsnn.data import FSDD
from bimsnn.paths import shared_data_dir
from bimsnn.tasks import speech as kws


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="FSDD folder (default: shared data)")
    p.add_argument("--rules", nargs="+", default=["bptt", "hybrid"],
                   choices=("bptt", "hybrid", "rtrl"))
    p.add_argument("--splits", nargs="+", default=["takes", "speaker"],
                   choices=("takes", "speaker"))
    p.add_argument("--folds", nargs="+", default=None, help="held-out speakers (default all)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the recipe's default)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    root = Path(a.data_dir) if a.data_dir else (shared_data_dir() or Path("absent")) / "fsdd"
    if not root.is_dir():
        raise SystemExit(f"FSDD not found at {root}: pass --data-dir")

    pre = kws.KWSPre()                                    # the recipe's default features
    speakers = sorted({m["speaker"] for _, _, m, _ in FSDD(root, pipeline=pre.pipeline()).items})
    cells = ([("takes", None)] if "takes" in a.splits else []) + (
        [("speaker", s) for s in a.folds or speakers] if "speaker" in a.splits else [])
    acc: dict[tuple[str, str], list[float]] = {}
    t0 = time.perf_counter()
    print(f"FSDD {root}: speakers {speakers}; features {pre}; augment {kws.DEFAULT_AUGMENT}")
    print(f"{'split':8} {'test':8} {'rule':7} {'acc':>6} {'train s':>8}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for split, held in cells:
            parts, _, _ = kws.load_data(pre, str(root), Path(tmp), eval_only=False, split=split,
                                        test_speakers=[held] if held else None, seed=a.seed,
                                        val_frac=0.1, max_items=None, strict=False)
            sets = kws.spike_sets(parts, pre)
            for rule in a.rules:
                tc = replace(kws.DEFAULT_TRAIN, rule=rule, seed=a.seed, progress=False,
                             plots=False)
                spec = kws.kws_spec(pre.n_inputs, 10, rule=rule)
                model, _, secs = kws.train_kws(spec, sets, tc)
                m = kws.score(model, sets["test"], tc)
                acc.setdefault((split, rule), []).append(m["accuracy"])
                print(f"{split:8} {held or 'takes0-4':8} {rule:7} {m['accuracy']:6.3f} "
                      f"{secs:8.0f}", flush=True)
    summary = {f"fsdd_{split}_{rule}": float(np.mean(v)) for (split, rule), v in acc.items()}
    print(f"total {time.perf_counter() - t0:.0f} s")
    print("RESULT " + " ".join(f"{k}={v:.4f}" for k, v in summary.items()))
    return summary


if __name__ == "__main__":
    main()
