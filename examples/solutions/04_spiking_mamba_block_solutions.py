"""Solutions to the exercises of notebook 04 (the spiking Mamba block).

Each ``exercise_N()`` returns the answer that exercise N asks for; ``MISTAKES`` holds a
typical wrong answer per exercise (the tests check that the checks reject them).
Run ``python examples/solutions/04_spiking_mamba_block_solutions.py`` to see every check pass.
"""

import math

import torch

from bimsnn.course import EXERCISES


def exercise_1():
    """Eq. 1–2 for one step, without a batch dimension."""
    def selective_step(h, u, delta, A, B, C, D):
        h_new = torch.exp(delta[:, None] * A) * h + (delta * u)[:, None] * B[None, :]
        y = h_new @ C + D * u
        return y, h_new
    return selective_step


def exercise_2():
    """exp(Δ·A) = β  ⇔  Δ = ln β / A (positive, since both logs are negative)."""
    return lambda beta, A: math.log(beta) / A


MISTAKES = {
    1: lambda h, u, delta, A, B, C, D: (h @ C + D * u, h),           # forgets the update
    2: lambda beta, A: -math.log(beta) / A,                           # sign: Δ < 0
}

if __name__ == "__main__":
    for n, check in enumerate(EXERCISES["04"], 1):
        check(globals()[f"exercise_{n}"]())
