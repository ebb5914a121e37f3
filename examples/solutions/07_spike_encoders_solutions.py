"""Solutions to the exercises of notebook 07 (spike encoders on real EEG and ECG).

Each ``exercise_N()`` returns the answer that exercise N asks for; ``MISTAKES`` holds a
typical wrong answer per exercise (the tests check that the checks reject them).
Run ``python examples/solutions/07_spike_encoders_solutions.py`` to see every check pass.
"""

import numpy as np
import torch

from bimsnn.course import EXERCISES


def exercise_1():
    """Replay the ADM reference: init + θ·cumsum(ON − OFF)."""
    def adm_decode(spikes, theta, init):
        return init + theta * torch.cumsum(spikes[:, 0] - spikes[:, 1], dim=0)
    return adm_decode


def exercise_2():
    """RMS(x − x̂) / std(x)."""
    def reconstruction_error(x, x_hat):
        x, x_hat = np.asarray(x, float), np.asarray(x_hat, float)
        return float(np.sqrt(np.mean((x - x_hat) ** 2)) / np.std(x))
    return reconstruction_error


def exercise_3():
    """ADM sends at most TV(x)/θ spikes: θ = TV(x)/budget meets the budget."""
    def theta_for_budget(x, budget):
        return float(np.abs(np.diff(np.asarray(x, float))).sum() / budget)
    return theta_for_budget


MISTAKES = {
    1: lambda s, theta, init: init + theta * torch.cumsum(s[:, 0], dim=0),      # ON only
    2: lambda x, xh: float(np.sqrt(np.mean((np.asarray(x) - np.asarray(xh)) ** 2))),  # not normalised
    3: lambda x, budget: float(np.ptp(x) / budget),                               # range, not TV
}

if __name__ == "__main__":
    for n, check in enumerate(EXERCISES["07"], 1):
        check(globals()[f"exercise_{n}"]())
