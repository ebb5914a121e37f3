"""Solutions to the exercises of notebook 11 (streaming detection on a long recording).

Each ``exercise_N()`` returns the answer that exercise N asks for; ``MISTAKES`` holds a
typical wrong answer per exercise (the tests check that the checks reject them).
Run ``python examples/solutions/11_streaming_detection_solutions.py`` to see every check pass.
"""

import numpy as np
from scipy.signal import lfilter

from bimsnn.course import EXERCISES


def exercise_1():
    """An alarm starts where the run of windows ≥ threshold reaches k (not after it)."""
    def alarm_onsets(scores, threshold, k):
        run, onsets = 0, []
        for i, s in enumerate(scores):
            run = run + 1 if s >= threshold else 0
            if run == k:
                onsets.append(i)
        return onsets
    return alarm_onsets


def exercise_2():
    """Window starts 0, stride, 2·stride, ... while start + window ≤ duration."""
    def n_windows(duration_s, window_s, stride_s):
        return int((duration_s - window_s) // stride_s) + 1 if duration_s >= window_s else 0
    return n_windows


def exercise_3():
    """lfilter with its state carried from block to block (``zi`` in, ``zf`` out)."""
    def filter_blocks(blocks, b, a):
        zi = np.zeros(max(len(a), len(b)) - 1)
        out = []
        for x in blocks:
            y, zi = lfilter(b, a, x, zi=zi)
            out.append(y)
        return np.concatenate(out)
    return filter_blocks


def _every_window_on(scores, threshold, k):
    """An alarm at every window whose last k scores are ≥ threshold (re-triggers)."""
    run, onsets = 0, []
    for i, s in enumerate(scores):
        run = run + 1 if s >= threshold else 0
        if run >= k:
            onsets.append(i)
    return onsets


MISTAKES = {
    1: _every_window_on,
    2: lambda duration_s, window_s, stride_s: int(duration_s // stride_s),   # ignores the window
    3: lambda blocks, b, a: np.concatenate([lfilter(b, a, x) for x in blocks]),  # state reset
}

if __name__ == "__main__":
    for n, check in enumerate(EXERCISES["11"], 1):
        check(globals()[f"exercise_{n}"]())
