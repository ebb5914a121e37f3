"""Solutions to the exercises of notebook 02 (STDP: the window and its online traces).

Each ``exercise_N()`` returns the answer that exercise N asks for; ``MISTAKES`` holds a
typical wrong answer per exercise (the tests check that the checks reject them).
Run ``python examples/solutions/02_stdp_window_traces_solutions.py`` to see every check pass.
"""

import numpy as np

from bimsnn.course import EXERCISES


def exercise_1():
    """Eq. 6: LTP for Δt ≥ 0 (pre first, or the same step), LTD for Δt < 0."""
    def window(dt, A_plus, tau_plus, A_minus, tau_minus):
        dt = np.asarray(dt, dtype=float)
        return np.where(dt >= 0, A_plus * np.exp(-dt / tau_plus), -A_minus * np.exp(dt / tau_minus))
    return window


def exercise_2():
    """x̄(t) = d·x̄(t−1) + x(t), d = exp(−1/τ)."""
    def pre_trace(spikes, tau):
        d, acc, out = np.exp(-1.0 / tau), 0.0, []
        for s in spikes:
            acc = d * acc + s
            out.append(acc)
        return np.array(out)
    return pre_trace


def exercise_3():
    """Eq. 5: every (post, pre) pair contributes W(t_post − t_pre)."""
    window = exercise_1()

    def pair_omega(t_pre, t_post, A_plus, tau_plus, A_minus, tau_minus):
        dts = np.array([tp - tq for tp in t_post for tq in t_pre], dtype=float)
        return float(window(dts, A_plus, tau_plus, A_minus, tau_minus).sum())
    return pair_omega


def _nearest_only(t_pre, t_post, A_plus, tau_plus, A_minus, tau_minus):
    """A common mistake: only the nearest pre spike of each post spike."""
    total = 0.0
    for tp in t_post:
        if t_pre:
            tq = min(t_pre, key=lambda q: abs(tp - q))
            total += float(exercise_1()(np.array([tp - tq]), A_plus, tau_plus, A_minus,
                                        tau_minus)[0])
    return total


MISTAKES = {
    1: lambda dt, Ap, tp, Am, tm: np.where(dt > 0, Ap * np.exp(-dt / tp), -Am * np.exp(dt / tm)),
    2: lambda s, tau: np.cumsum(s) * np.exp(-1.0 / tau),
    3: _nearest_only,
}

if __name__ == "__main__":
    for n, check in enumerate(EXERCISES["02"], 1):
        check(globals()[f"exercise_{n}"]())
