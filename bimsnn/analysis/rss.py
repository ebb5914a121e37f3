"""Process memory readings (Linux ``/proc`` where present, ``getrusage`` otherwise).

Used by the benchmarks, the memory analysis and the recipes' ``peak_rss_mb`` so that every
figure comes from the same reading. MiB throughout.
"""

from __future__ import annotations

import resource


def proc_status_mib(field: str) -> float | None:
    """``VmRSS`` (current) or ``VmHWM`` (peak) resident set from ``/proc/self/status``,
    MiB; None where there is no such file (not Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0                   # kB
    except OSError:
        pass
    return None


def peak_rss_mib() -> float:
    """This process's high-water resident set since it started (``ru_maxrss``: KiB on
    Linux), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def reset_peak_rss() -> float | None:
    """Reset the kernel's peak mark (``VmHWM``; Linux ≥ 4.0, ``clear_refs`` ← 5) to the
    current RSS and return that (MiB); None where it cannot be reset. ``ru_maxrss`` is not
    reset: read :func:`proc_status_mib` ("VmHWM") afterwards."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return proc_status_mib("VmRSS")
