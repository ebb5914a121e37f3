"""Solutions to the exercises of notebook 08 (the selective SSM, from LTI to input-dependent Δ).

Each ``exercise_N()`` returns the answer that exercise N asks for; ``MISTAKES`` holds a
typical wrong answer per exercise (the tests check that the checks reject them).
Run ``python examples/solutions/08_selective_ssm_solutions.py`` to see every check pass.
"""

import numpy as np
import torch

from bimsnn.course import EXERCISES


def exercise_1():
    """Eq. 1–2 for one channel: zero-order-hold A, Euler B, read out with C."""
    def scan_loop(u, delta, A, B, C, D):
        h, ys = torch.zeros_like(A), []
        for t in range(u.shape[0]):
            h = torch.exp(delta[t] * A) * h + delta[t] * u[t] * B[t]
            ys.append((h * C[t]).sum() + D * u[t])
        return torch.stack(ys)
    return scan_loop


def exercise_2():
    """An impulse reaches step k through a_bar^k: K_k = Σ_n c_n a_n^k b_n."""
    def lti_kernel(a_bar, b_bar, c, T):
        k = np.arange(T)[:, None]
        return (c * a_bar ** k * b_bar).sum(1)
    return lti_kernel


def exercise_3():
    """exp(Δ·A·k) = 1/e  ⇔  k = 1/(Δ·|A|)."""
    return lambda delta, A: 1.0 / (delta * abs(A))


MISTAKES = {
    1: lambda u, delta, A, B, C, D: torch.stack([(torch.exp(delta[t] * A) * u[t] * B[t] * C[t]).sum()
                                                 for t in range(u.shape[0])]),   # no memory
    2: lambda a, b, c, T: (c * a ** (np.arange(T)[:, None] + 1) * b).sum(1),      # off by one
    3: lambda delta, A: delta * abs(A),                                           # a rate, not a time
}

if __name__ == "__main__":
    for n, check in enumerate(EXERCISES["08"], 1):
        check(globals()[f"exercise_{n}"]())
