"""Online patient-specific adaptation and streaming speed (issue 14). A script, not CI.

    python benchmarks/adaptation.py [--work DIR] [--shared ../shared/data]

1. General beat model: ``recipes/ecg_classification.py --dataset mitbih --records 100 800
   --classes N V F`` with its defaults (Hybrid, chunked), i.e. what a user trains. Record 208
   is never in its training set (inter-patient).
2. Record 208 streamed by ``python -m bimsnn.monitor`` (:func:`bimsnn.monitor.main`): the
   first 5 minutes, with their beat labels, adapt a copy online (Hybrid, then RTRL, chunked),
   minutes 5–20 are scored; the general model's scores on the same beats come from the same
   run. Metric: N/V/F macro-F1 (AAMI EC57's patient-specific protocol).
3. Real-time factor: the default seizure model (``recipes/seizure_detection.py`` defaults)
   monitoring a generated 1-hour demo recording (CHB-MIT format), 1 thread, no adaptation;
   recording seconds per wall second of streaming, median of 3.
4. Memory: the monitor's peak traced memory (numpy buffers, Python objects) over 2 h against
   10 min of generated samples, in fresh subprocesses.

Ends with ``RESULT mitbih208_f1_general=… mitbih208_f1_adapted=… rtf_eeg=…`` (adapted: the
monitor's default rule, RTRL; the Hybrid run and the memory ratio follow on the same line).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def sh(*args: str) -> None:
    print("$", " ".join(args), flush=True)
    subprocess.run([PY, *args], cwd=REPO, check=True,
                   env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})


def general_ecg(work: Path, shared: Path) -> Path:
    out = work / "ecg_general"
    if not (out / "model.pt").is_file():
        sh("recipes/ecg_classification.py", "--dataset", "mitbih", "--data-dir",
           str(shared / "ecg"), "--records", "100", "800", "--classes", "N", "V", "F",
           "--compare", "none", "--threads", "1", "--out", str(out))
    return out / "model.pt"


def adapted_208(model: Path, work: Path, shared: Path, rule: str) -> dict:
    out = work / f"monitor_208_{rule}"
    if not (out / "208" / "metrics.json").is_file():     # cached in --work
        sh("-m", "bimsnn.monitor", str(model), str(shared / "ecg" / "208"), "--adapt-minutes",
           "5", "--adapt-rule", rule, "--stop-minutes", "20", "--out", str(out))
    return json.loads((out / "208" / "metrics.json").read_text())


def seizure_model(work: Path) -> Path:
    out = work / "seizure_default"
    if not (out / "model.pt").is_file():
        sh("recipes/seizure_detection.py", "--threads", "1", "--out", str(out))
    return out / "model.pt"


def eeg_hour(work: Path) -> Path:
    root = work / "demo_1h"
    sh("-m", "bimsnn.data.demo", "chbmit", str(root), "--patients", "1", "--files", "1",
       "--minutes", "60")
    return root / "chb01" / "chb01_01.edf"


def rtf(model: Path, rec: Path, work: Path) -> tuple[float, float]:
    """Median of 3 real-time factors: per wall second and per CPU second of the process
    (the second does not move with the box's load)."""
    vals, cpu = [], []
    for i in range(3):
        out = work / f"monitor_eeg_{i}"
        sh("-m", "bimsnn.monitor", str(model), str(rec), "--adapt-minutes", "0", "--out", str(out))
        m = json.loads((out / rec.stem / "metrics.json").read_text())
        vals.append(m["real_time_factor"])
        cpu.append(m["real_time_factor_cpu"])
    print(f"real-time factors: wall {[round(v) for v in vals]}, CPU {[round(v) for v in cpu]}")
    return statistics.median(vals), statistics.median(cpu)


_MEM = r"""
import sys, tracemalloc, numpy as np, torch
from bimsnn.monitor import Monitor
torch.set_num_threads(1)
mon = Monitor(sys.argv[1], 256.0)
c = len(mon.pre.channels)
block = 1e-5 * np.random.default_rng(0).standard_normal((c, 256 * 60))
tracemalloc.start()
for _ in range(int(sys.argv[2])):
    mon.feed(block)
mon.flush()
print(tracemalloc.get_traced_memory()[1])
"""


def memory_ratio(model: Path) -> float:
    peak = {}
    for minutes in (10, 120):
        r = subprocess.run([PY, "-c", _MEM, str(model), str(minutes)], cwd=REPO, check=True,
                           capture_output=True, text=True)
        peak[minutes] = int(r.stdout.split()[-1])
    print(f"monitor peak traced memory: 10 min {peak[10] / 2**20:.2f} MiB, "
          f"2 h {peak[120] / 2**20:.2f} MiB")
    return peak[120] / peak[10]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=str(REPO / "runs" / "bench_adaptation"))
    ap.add_argument("--shared", default=None, help="shared data folder (default: "
                    "$BIMSNN_SHARED_DATA or ../shared/data)")
    a = ap.parse_args()
    from bimsnn.paths import shared_data_dir

    shared = Path(a.shared) if a.shared else shared_data_dir()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)

    ecg_model = general_ecg(work, shared)
    res = {rule: adapted_208(ecg_model, work, shared, rule) for rule in ("rtrl", "hybrid")}
    gen = res["rtrl"]["general"]["macro_f1"]
    for rule, r in res.items():
        print(f"208 minutes 5-20, {r['general']['n_beats']} beats: general macro-F1 "
              f"{r['general']['macro_f1']:.3f}, adapted ({rule}, "
              f"{r['adaptation']['n']} beats, {r['adaptation']['seconds']:.1f} s) "
              f"{r['adapted']['macro_f1']:.3f}")
    sz = seizure_model(work)
    speed, speed_cpu = rtf(sz, eeg_hour(work), work)
    mem = memory_ratio(sz)
    print(f"RESULT mitbih208_f1_general={gen:.4f} "
          f"mitbih208_f1_adapted={res['rtrl']['adapted']['macro_f1']:.4f} "
          f"rtf_eeg={speed:.0f} mitbih208_f1_adapted_hybrid={res['hybrid']['adapted']['macro_f1']:.4f} "
          f"rtf_eeg_cpu={speed_cpu:.0f} monitor_mem_ratio_2h_over_10min={mem:.3f}")


if __name__ == "__main__":
    main()
