"""Solutions to the exercises of notebook 10 (Hybrid λ, STDP, and online memory).

Each ``exercise_N()`` returns the answer that exercise N asks for; ``MISTAKES`` holds a
typical wrong answer per exercise (the tests check that the checks reject them).
Run ``python examples/solutions/10_hybrid_and_memory_solutions.py`` to see every check pass.
"""

import math

import numpy as np

from bimsnn.course import EXERCISES


def exercise_1():
    """Eq. 4 in .grad form: λ·∂L/∂w − (1 − λ)·Ω (SGD subtracts .grad)."""
    return lambda g, omega, lam: lam * g - (1 - lam) * omega


def exercise_2():
    """Least-squares slope of MB against T."""
    return lambda Ts, mbs: float(np.polyfit(np.asarray(Ts, float), np.asarray(mbs, float), 1)[0])


def exercise_3():
    """fixed + K·per_step ≤ budget, K a whole number of steps."""
    def max_chunk(budget_mb, per_step_mb, fixed_mb):
        return max(0, math.floor((budget_mb - fixed_mb) / per_step_mb))
    return max_chunk


MISTAKES = {
    1: lambda g, omega, lam: lam * g + (1 - lam) * omega,                      # sign of Ω
    2: lambda Ts, mbs: float(np.asarray(mbs)[-1] / np.asarray(Ts)[-1]),        # through the origin
    3: lambda budget, per_step, fixed: round(budget / per_step),               # forgets the traces
}

if __name__ == "__main__":
    for n, check in enumerate(EXERCISES["10"], 1):
        check(globals()[f"exercise_{n}"]())
