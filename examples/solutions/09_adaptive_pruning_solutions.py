"""Solutions to the exercises of notebook 09 (adaptive pruning).

Each ``exercise_N()`` returns the answer that exercise N asks for; ``MISTAKES`` holds a
typical wrong answer per exercise (the tests check that the checks reject them).
Run ``python examples/solutions/09_adaptive_pruning_solutions.py`` to see every check pass.
"""

import torch

from bimsnn.course import EXERCISES


def exercise_1():
    """Eq. 9 with the sign that prunes *small* weights."""
    return lambda w, theta, beta: torch.sigmoid(beta * (theta - w.abs()))


def exercise_2():
    """The ρ-quantile of |w|: a fraction ρ of the weights lies below it."""
    return lambda w, rho: float(torch.quantile(w.abs().flatten(), rho))


def exercise_3():
    """Eq. 10, one Euler step: θ rises while the network is less sparse than ρ."""
    return lambda theta, gamma, rho, s: theta + gamma * (rho - s)


MISTAKES = {
    1: lambda w, theta, beta: torch.sigmoid(beta * (w.abs() - theta)),  # eq. 9 as printed
    2: lambda w, rho: float(rho * w.abs().max()),                        # a fraction of the max
    3: lambda theta, gamma, rho, s: theta + gamma * (s - rho),           # wrong sign: runs away
}

if __name__ == "__main__":
    for n, check in enumerate(EXERCISES["09"], 1):
        check(globals()[f"exercise_{n}"]())
