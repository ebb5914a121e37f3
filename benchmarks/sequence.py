"""Sequence learning through the recipes (issue 13): connected digits (CTC) and the character LM.
A script, not CI.

    python benchmarks/sequence.py [--work DIR] [--fsdd DIR] [--skip-online]

Each row is one recipe run with its default flags except where stated, i.e. what a user
gets; metrics are the recipe's own ``metrics.json`` (test split, best validation epoch):

* connected spoken digits (``--dataset fsdd_strings``, held-out takes, greedy decoding):
  the spiking Mamba with BPTT, the LSTM baseline (``--model lstm --d-model 128``), and the
  spiking Mamba with ``--rule hybrid`` (chunked at the recipe's default K); WER and CER;
* the character LM on the default corpus: spiking model and parameter-matched LSTM trained
  in the same run (BPTT), then the spiking model with ``--rule hybrid`` (default chunk);
  test bits per character.

Ends with one ``RESULT`` line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# connected digits with the recipe's fsdd_strings defaults (bimsnn.tasks.asr.DATASET_DEFAULTS:
# word units, --stack 4, --beta 0.5, 15 epochs)
DIGITS = ["--dataset", "fsdd_strings", "--split", "takes"]
RUNS = {   # cheapest first: a run cut short keeps the rows before it (cached in --work)
    "lm_bptt": ("language_modeling", []),
    "digits_lstm": ("speech_recognition", [*DIGITS, "--model", "lstm", "--d-model", "128"]),
    "digits_spiking_bptt": ("speech_recognition", DIGITS),
    "lm_hybrid": ("language_modeling", ["--rule", "hybrid", "--compare", "none"]),
    "digits_spiking_hybrid": ("speech_recognition", [*DIGITS, "--rule", "hybrid"]),
}


def finished(out: Path) -> bool:
    """A completed run's metrics.json (fit writes one with the history after each epoch)."""
    f = out / "metrics.json"
    return f.is_file() and bool({"wer", "bpc"} & set(json.loads(f.read_text())))


def run(name: str, recipe: str, args: list[str], work: Path, fsdd: Path) -> dict:
    out = work / name
    if not finished(out):
        extra = ["--data-dir", str(fsdd)] if recipe == "speech_recognition" else []
        cmd = [sys.executable, f"recipes/{recipe}.py", *args, *extra, "--threads", "1",
               "--out", str(out)]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, cwd=REPO, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads((out / "metrics.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=str(REPO / "runs" / "bench_sequence"))
    ap.add_argument("--fsdd", default=None, help="FSDD recordings folder (default: the "
                    "shared data's fsdd/recordings)")
    ap.add_argument("--skip-online", action="store_true", help="BPTT rows only")
    ap.add_argument("--report-only", action="store_true", help="print the rows already "
                    "run (cached in --work), run nothing")
    a = ap.parse_args()
    from bimsnn.paths import shared_data_dir

    fsdd = Path(a.fsdd) if a.fsdd else (shared_data_dir() or Path("..")) / "fsdd" / "recordings"
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    m = {}
    for k, (r, args) in RUNS.items():
        if a.skip_online and "hybrid" in k:
            continue
        if a.report_only and not finished(work / k):
            print(f"{k}: not run")
            continue
        m[k] = run(k, r, args, work, fsdd)
    res = {}
    for k in ("digits_spiking_bptt", "digits_lstm", "digits_spiking_hybrid"):
        if k in m:
            res[f"{k.removeprefix('digits_')}_wer"] = m[k]["wer"]
            res[f"{k.removeprefix('digits_')}_cer"] = m[k]["cer"]
    if "lm_bptt" in m:
        res["lm_spiking_bpc"] = m["lm_bptt"]["bpc"]
        res["lm_lstm_bpc"] = m["lm_bptt"]["comparison"]["lstm"]["bpc"]
    if "lm_hybrid" in m:
        res["lm_spiking_hybrid_bpc"] = m["lm_hybrid"]["bpc"]
    for k, v in res.items():
        print(f"{k:28s} {v:.4f}")
    print("RESULT " + " ".join(f"{k}={v:.4f}" for k, v in res.items()))


if __name__ == "__main__":
    main()
