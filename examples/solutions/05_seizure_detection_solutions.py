"""Solutions to the exercises of notebook 05 (seizure detection end to end).

Each ``exercise_N()`` returns the answer that exercise N asks for; ``MISTAKES`` holds a
typical wrong answer per exercise (the tests check that the checks reject them).
Run ``python examples/solutions/05_seizure_detection_solutions.py`` to see every check pass.
"""

import numpy as np

from bimsnn.course import EXERCISES


def exercise_1():
    """Ictal when the seizures cover at least half the window."""
    def window_label(start_s, window_s, seizures):
        end = start_s + window_s
        overlap = sum(max(0.0, min(end, off) - max(start_s, on)) for on, off in seizures)
        return int(overlap >= 0.5 * window_s)
    return window_label


def exercise_2():
    """Sensitivity among ictal windows, specificity among the others."""
    def sensitivity_specificity(scores, labels, threshold):
        pred, labels = np.asarray(scores) >= threshold, np.asarray(labels)
        sens = (pred & (labels == 1)).sum() / max((labels == 1).sum(), 1)
        spec = (~pred & (labels == 0)).sum() / max((labels == 0).sum(), 1)
        return float(sens), float(spec)
    return sensitivity_specificity


def _any_overlap(start_s, window_s, seizures):
    return int(any(start_s < off and start_s + window_s > on for on, off in seizures))


MISTAKES = {
    1: _any_overlap,                                                   # any overlap at all
    2: lambda s, y, th: (float(((s >= th) & (y == 1)).sum() / (s >= th).sum()),   # precision
                         float(((s < th) & (y == 0)).sum() / (y == 0).sum())),
}

if __name__ == "__main__":
    for n, check in enumerate(EXERCISES["05"], 1):
        check(globals()[f"exercise_{n}"]())
