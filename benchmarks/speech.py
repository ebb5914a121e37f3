"""FSDD spoken digits: held-out takes and unseen speakers, BPTT vs the online rule.

Symbols: N recordings (2000 in the shared copy: 4 speakers × 10 digits × 50 takes).

    python benchmarks/speech.py                          # every cell (~60 min on 1 core)
    python benchmarks/speech.py --rules bptt --splits speaker --folds nicolas
    python benchmarks/speech.py --report-only            # the cells already run

Script, not CI: needs the real FSDD in ``bimsnn.paths.shared_data_dir()/fsdd`` (or
``--data-dir``). Every cell is one run of ``python recipes/keyword_spotting.py [--rule R]
[--split speaker --test-speakers S]`` with the recipe's default flags otherwise, i.e. what
a user gets; its figures are the recipe's own ``metrics.json`` (test split scored once,
the epoch kept is the best on the recipe's validation share). Cells are cached in
``--work``, so separate invocations (e.g. one per core, ``--folds``) fill one table.

    takes      takes 0-4 of every speaker and digit are test (200), the rest train;
    speaker    train on 3 speakers, test on the 4th (500), rotating over the 4 (mean),
               with the recipe's unseen-speaker defaults
               (:data:`bimsnn.tasks.speech.SPLIT_DEFAULTS`).

The online rule runs in the recipe's default chunks. The last line is ``RESULT
fsdd_takes_bptt=… fsdd_takes_hybrid=… fsdd_speaker_bptt=… fsdd_speaker_hybrid=…``.
Measured results and the ablations: ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SPEAKERS = ("george", "jackson", "nicolas", "theo")   # the shared copy's speakers


def cell(work: Path, split: str, held: str | None, rule: str, root: Path,
         report_only: bool) -> dict | None:
    out = work / f"{split}_{held or 'takes0-4'}_{rule}"
    f = out / "metrics.json"
    if not (f.is_file() and "accuracy" in json.loads(f.read_text())):
        if report_only:
            return None
        cmd = [sys.executable, "recipes/keyword_spotting.py", "--data-dir", str(root),
               "--rule", rule, "--threads", "1", "--out", str(out), "--no-progress"]
        if split == "speaker":
            cmd += ["--split", "speaker", "--test-speakers", held]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, cwd=REPO, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                       stdout=subprocess.DEVNULL)
    return json.loads(f.read_text())


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="FSDD folder (default: shared data)")
    p.add_argument("--work", default=str(REPO / "runs" / "bench_speech"))
    p.add_argument("--rules", nargs="+", default=["bptt", "hybrid"],
                   choices=("bptt", "hybrid", "rtrl"))
    p.add_argument("--splits", nargs="+", default=["takes", "speaker"],
                   choices=("takes", "speaker"))
    p.add_argument("--folds", nargs="+", default=list(SPEAKERS), help="held-out speakers")
    p.add_argument("--report-only", action="store_true", help="run nothing; report the "
                   "cells cached in --work")
    a = p.parse_args(argv)
    from bimsnn.paths import shared_data_dir

    root = Path(a.data_dir) if a.data_dir else (shared_data_dir() or Path("absent")) / "fsdd"
    if not root.is_dir():
        raise SystemExit(f"FSDD not found at {root}: pass --data-dir")
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    cells = ([("takes", None)] if "takes" in a.splits else []) + (
        [("speaker", s) for s in a.folds] if "speaker" in a.splits else [])
    acc: dict[str, list[float]] = {}
    print(f"{'split':8} {'test':8} {'rule':7} {'acc':>6} {'train s':>8}", flush=True)
    for split, held in cells:
        for rule in a.rules:
            m = cell(work, split, held, rule, root, a.report_only)
            if m is None:
                print(f"{split:8} {held or 'takes0-4':8} {rule:7} not run")
                continue
            acc.setdefault(f"fsdd_{split}_{rule}", []).append(m["accuracy"])
            print(f"{split:8} {held or 'takes0-4':8} {rule:7} {m['accuracy']:6.3f} "
                  f"{m['train_seconds']:8.0f}", flush=True)
    summary = {k: float(np.mean(v)) for k, v in acc.items()}
    print("RESULT " + " ".join(f"{k}={v:.4f}" for k, v in summary.items()))
    return summary


if __name__ == "__main__":
    main()
