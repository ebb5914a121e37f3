"""Shared benchmark helpers: interleaved timing, medians, and the RESULT line.

Every benchmark runs the baseline and ours in the same process, interleaved
(ours, baseline, ours, baseline, ...) so that machine noise hits both alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int = 7,
                        warmup: int = 1) -> dict[str, float]:
    """Time each callable ``repeats`` times, interleaved; return median seconds per name."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def result_line(**kv: float | str) -> str:
    """Format the one-line summary every benchmark ends with."""
    parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in kv.items()]
    return "RESULT " + " ".join(parts)
