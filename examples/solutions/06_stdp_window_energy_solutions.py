"""Solutions to the exercises of notebook 06 (the STDP window of BPTT, and energy).

Each ``exercise_N()`` returns the answer that exercise N asks for; ``MISTAKES`` holds a
typical wrong answer per exercise (the tests check that the checks reject them).
Run ``python examples/solutions/06_stdp_window_energy_solutions.py`` to see every check pass.
"""

import numpy as np

from bimsnn.course import EXERCISES


def exercise_1():
    """ANN: 4.6 pJ per input per output per step; SNN: 0.9 pJ per input spike per output."""
    return lambda rate: 4.6 / (0.9 * rate)


def exercise_2():
    """A straight line through log Δw on the LTP side: slope −1/τ+."""
    def fit_tau(dt, dw):
        dt, dw = np.asarray(dt, float), np.asarray(dw, float)
        keep = (dt >= 0) & (dw > 0)
        slope, _ = np.polyfit(dt[keep], np.log(dw[keep]), 1)
        return -1.0 / slope
    return fit_tau


MISTAKES = {
    1: lambda rate: 4.6 / 0.9,                                         # ignores sparsity
    2: lambda dt, dw: float(np.polyfit(np.asarray(dt)[np.asarray(dt) >= 0],
                                       np.log(np.abs(np.asarray(dw)[np.asarray(dt) >= 0])),
                                       1)[0]),                         # slope, not τ
}

if __name__ == "__main__":
    for n, check in enumerate(EXERCISES["06"], 1):
        check(globals()[f"exercise_{n}"]())
