"""Solutions to the exercises of notebook 01 (the LIF neuron and surrogate gradients).

Each ``exercise_N()`` returns the answer that exercise N asks for; ``MISTAKES`` holds a
typical wrong answer per exercise (the tests check that the checks reject them).
Run ``python examples/solutions/01_lif_neuron_solutions.py`` to see every check pass.
"""

from bimsnn.course import EXERCISES


def exercise_1():
    """One LIF step, eq. 3: leak, integrate, subtract θ where the previous step spiked."""
    def lif_step(u_prev, s_prev, i_t, beta, theta):
        u = beta * u_prev + i_t - s_prev * theta
        s = (u > theta).to(u.dtype)
        return s, u
    return lif_step


def exercise_2():
    """d/dx [x / (1 + k|x|)] = 1 / (1 + k|x|)²."""
    def fast_sigmoid_derivative(x, slope):
        return 1.0 / (1.0 + slope * x.abs()) ** 2
    return fast_sigmoid_derivative


def exercise_3():
    """Without a threshold U → I/(1 − β); it crosses θ only if I > θ(1 − β)."""
    def rheobase(beta, theta):
        return theta * (1 - beta)
    return rheobase


MISTAKES = {
    1: lambda u, s, i, beta, theta: ((beta * u + i > theta).to(u.dtype), beta * u + i),  # no reset
    2: lambda x, slope: 1.0 / (1.0 + slope * x.abs()),                                   # not squared
    3: lambda beta, theta: theta,                                                        # ignores the leak
}

if __name__ == "__main__":
    for n, check in enumerate(EXERCISES["01"], 1):
        check(globals()[f"exercise_{n}"]())
