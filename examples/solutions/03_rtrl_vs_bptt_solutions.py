"""Solutions to the exercises of notebook 03 (RTRL versus BPTT).

Each ``exercise_N()`` returns the answer that exercise N asks for; ``MISTAKES`` holds a
typical wrong answer per exercise (the tests check that the checks reject them).
Run ``python examples/solutions/03_rtrl_vs_bptt_solutions.py`` to see every check pass.
"""

import torch

from bimsnn.course import EXERCISES


def exercise_1():
    """Eq. 7–8 for one leaky integrator: carry e forward, multiply by each step's error."""
    def rtrl_gradient(x, delta, beta):
        e = torch.zeros(x.shape[1], dtype=x.dtype)
        grad = torch.zeros_like(e)
        for t in range(x.shape[0]):
            e = beta * e + x[t]
            grad = grad + delta[t] * e
        return grad
    return rtrl_gradient


def exercise_2():
    """e_ij(t) is the pre-trace of input j, whatever i: B·N numbers."""
    return lambda B, N, H: B * N


MISTAKES = {
    1: lambda x, delta, beta: (delta[:, None] * x).sum(0),     # no trace: truncated to one step
    2: lambda B, N, H: B * N * H,                              # one trace per weight
}

if __name__ == "__main__":
    for n, check in enumerate(EXERCISES["03"], 1):
        check(globals()[f"exercise_{n}"]())
