"""Automatic checks for the exercises of the teaching notebooks (``examples/01``–``11``).

Symbols: T time steps, N inputs (or SSM states), H neurons, B batch, E SSM channels,
β membrane decay, θ threshold, λ Hybrid mixing weight, ρ target sparsity.

Every exercise asks for a small function (or a number) and is followed by a call to one
check here. A check

* prints one line and returns ``True`` (right), ``False`` (wrong, with a hint) or ``None``
  (not answered yet: the answer is still the placeholder ``None`` or ``...``);
* never raises: an answer that raises, or returns the wrong shape, is reported and counts
  as wrong, so a notebook runs top to bottom with its exercise cells unfilled;
* tests the answer on its own inputs against a reference implementation (mostly the
  library's), so it checks the idea, not one memorised number.

:data:`EXERCISES` lists the checks of each notebook in exercise order; the worked
solutions are in ``examples/solutions/NN_<name>_solutions.py`` and ``tests/test_course.py``
runs each of them (and a typical mistake) through its check.

    >>> check_rheobase(None)
    Exercise (rheobase): not answered yet.
    >>> check_rheobase(lambda beta, theta: theta * (1 - beta))
    Exercise (rheobase): correct.
    True
    >>> check_rheobase(lambda beta, theta: theta)
    Exercise (rheobase): not quite. rheobase(beta=0.9, theta=1.0) returned 1, expected 0.1. Hint: without a threshold the membrane settles at I/(1 − β).
    False
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

__all__ = [
    "EXERCISES",
    "check_adm_decode",
    "check_alarm_onsets",
    "check_ann_over_snn",
    "check_delta_for_beta",
    "check_fast_sigmoid_derivative",
    "check_fit_tau",
    "check_hard_threshold",
    "check_hybrid_grad",
    "check_lif_step",
    "check_lti_kernel",
    "check_max_chunk",
    "check_memory_slope",
    "check_memory_steps",
    "check_pair_omega",
    "check_pre_trace",
    "check_prune_prob",
    "check_reconstruction_error",
    "check_rheobase",
    "check_rtrl_gradient",
    "check_scan_loop",
    "check_selective_step",
    "check_sensitivity_specificity",
    "check_stateful_filter",
    "check_stdp_window",
    "check_theta_for_budget",
    "check_theta_update",
    "check_trace_count",
    "check_window_count",
    "check_window_label",
    "is_answered",
]


# --------------------------------------------------------------------------- machinery
class _Wrong(Exception):
    """Raised inside a check body: the answer is wrong (the message says how)."""


def is_answered(answer) -> bool:
    """False for the placeholders an unfilled exercise cell leaves (``None``, ``...``)."""
    return answer is not None and answer is not Ellipsis


def _run(name: str, answer, body: Callable[[object], None]) -> bool | None:
    """Print one verdict line for ``answer`` and return True / False / None."""
    label = f"Exercise ({name})"
    if not is_answered(answer):
        print(f"{label}: not answered yet.")
        return None
    try:
        body(answer)
    except _Wrong as e:
        print(f"{label}: not quite. {e}")
        return False
    except Exception as e:              # the student's code raised: report, never propagate
        print(f"{label}: your answer raised {type(e).__name__}: {e}")
        return False
    print(f"{label}: correct.")
    return True


def _call(fn, *args, **kw):
    if not callable(fn):
        raise _Wrong(f"expected a function, got {type(fn).__name__}.")
    return fn(*args, **kw)


def _array(x, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise _Wrong(f"{what} is not an array of numbers ({e}).") from None


def _expect_close(got, want, what: str, rtol: float = 1e-5, atol: float = 1e-8,
                  hint: str = "") -> None:
    g, w = _array(got, what), np.asarray(want, dtype=np.float64)
    if g.shape != w.shape:
        if g.size == w.size:
            g = g.reshape(w.shape)
        else:
            raise _Wrong(f"{what} has shape {g.shape}, expected {w.shape}.")
    if not np.allclose(g, w, rtol=rtol, atol=atol):
        if w.size == 1:
            msg = f"{what} returned {_fmt(g)}, expected {_fmt(w)}."
        else:
            i = np.unravel_index(np.argmax(np.abs(g - w)), w.shape)
            msg = (f"{what}: largest difference at index {tuple(int(k) for k in i)}: "
                   f"got {g[i]:.6g}, expected {w[i]:.6g}.")
        raise _Wrong(msg + (f" Hint: {hint}" if hint else ""))


def _fmt(a: np.ndarray) -> str:
    v = float(np.asarray(a).reshape(-1)[0])
    return f"{v:.6g}"


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- 01 LIF
def check_lif_step(answer) -> bool | None:
    """Notebook 01, exercise 1: one step of the discrete LIF neuron (eq. 3).

    ``answer(u_prev, s_prev, i_t, beta, theta) -> (s_t, u_t)`` on tensors of one shape:
    U[t] = β·U[t−1] + I[t] − S[t−1]·θ, S[t] = H(U[t] − θ) (1 where U[t] > θ, else 0).
    """
    def body(fn):
        g = torch.Generator().manual_seed(0)
        u_prev = 2 * torch.rand(64, generator=g, dtype=torch.float64)
        s_prev = (torch.rand(64, generator=g) < 0.3).double()
        i_t = torch.rand(64, generator=g, dtype=torch.float64) - 0.2
        for beta, theta in ((0.9, 1.0), (0.5, 0.7)):
            out = _call(fn, u_prev, s_prev, i_t, beta, theta)
            if not (isinstance(out, tuple | list) and len(out) == 2):
                raise _Wrong("return a pair (s_t, u_t).")
            u = beta * u_prev + i_t - s_prev * theta
            s = (u > theta).double()
            _expect_close(out[1], u, f"u_t (β={beta}, θ={theta})",
                          hint="the reset subtracts θ where the *previous* step spiked.")
            _expect_close(out[0], s, f"s_t (β={beta}, θ={theta})",
                          hint="the spike compares the *new* membrane with θ.")
    return _run("lif step", answer, body)


def check_fast_sigmoid_derivative(answer) -> bool | None:
    """Notebook 01, exercise 2: the fast-sigmoid surrogate derivative.

    ``answer(x, slope) -> σ'(x) = 1 / (1 + slope·|x|)²`` (snnTorch's ``fast_sigmoid``,
    :class:`bimsnn.surrogate.FastSigmoid`), elementwise on a tensor.
    """
    from bimsnn.surrogate import FastSigmoid

    def body(fn):
        x = torch.linspace(-2, 2, 81, dtype=torch.float64)
        for slope in (25.0, 5.0):
            _expect_close(_call(fn, x.clone(), slope), FastSigmoid(slope).derivative(x),
                          f"σ'(x) with slope {slope:g}",
                          hint="differentiate x / (1 + slope·|x|); it is even in x.")
    return _run("fast sigmoid derivative", answer, body)


def check_rheobase(answer) -> bool | None:
    """Notebook 01, exercise 3: the rheobase of the discrete LIF neuron.

    ``answer(beta, theta) ->`` the constant input current above which the neuron (started
    at rest) eventually fires: θ(1 − β), since without a threshold U settles at I/(1 − β).
    """
    def body(fn):
        for beta, theta in ((0.9, 1.0), (0.5, 2.0), (0.99, 0.5)):
            _expect_close(_call(fn, beta, theta), theta * (1 - beta),
                          f"rheobase(beta={beta}, theta={theta})",
                          hint="without a threshold the membrane settles at I/(1 − β).")
    return _run("rheobase", answer, body)


# --------------------------------------------------------------------------- 02 STDP
def check_stdp_window(answer) -> bool | None:
    """Notebook 02, exercise 1: the STDP window W(Δt) of eq. 6.

    ``answer(dt, A_plus, tau_plus, A_minus, tau_minus) -> W`` on a numpy array of Δt =
    t_post − t_pre: A+·exp(−Δt/τ+) for Δt ≥ 0, −A−·exp(Δt/τ−) for Δt < 0.
    """
    from bimsnn.rules import stdp_window

    def body(fn):
        dt = np.arange(-50, 51, dtype=float)
        for p in ((1e-2, 20.0, 1.05e-2, 20.0), (0.5, 5.0, 0.2, 15.0)):
            _expect_close(_call(fn, dt.copy(), *p), stdp_window(dt, *p), f"W(Δt) for {p}",
                          hint="Δt = 0 counts as potentiation (pre and post in one step).")
    return _run("STDP window", answer, body)


def check_pre_trace(answer) -> bool | None:
    """Notebook 02, exercise 2: the online pre-synaptic trace.

    ``answer(spikes, tau) -> trace`` for a 1-D spike train: x̄(t) = d·x̄(t−1) + x(t) with
    d = exp(−1/τ) and x̄(−1) = 0 (the trace includes step t's spike).
    """
    def body(fn):
        s = (_rng(1).random(200) < 0.1).astype(float)
        for tau in (20.0, 3.0):
            d, acc, ref = math.exp(-1 / tau), 0.0, []
            for v in s:
                acc = d * acc + v
                ref.append(acc)
            _expect_close(_call(fn, s.copy(), tau), ref, f"trace (τ={tau:g})",
                          hint="decay first, then add this step's spike; d = exp(−1/τ).")
    return _run("pre-trace", answer, body)


def check_pair_omega(answer) -> bool | None:
    """Notebook 02, exercise 3: Ω of one synapse from spike times (eq. 5).

    ``answer(t_pre, t_post, A_plus, tau_plus, A_minus, tau_minus) -> Ω``, the sum of
    W(t_post − t_pre) over every (post, pre) pair of the two lists of spike times.
    """
    from bimsnn.rules import stdp_window

    def body(fn):
        p = (1e-2, 20.0, 1.05e-2, 20.0)
        cases = [([10, 30], [20]), ([5, 6, 40], [3, 12, 41, 60]), ([], [4]), ([7], [7])]
        for t_pre, t_post in cases:
            want = sum(float(stdp_window(np.array([tp - tq], float), *p)[0])
                       for tp in t_post for tq in t_pre)
            _expect_close(_call(fn, list(t_pre), list(t_post), *p), want,
                          f"Ω(pre={t_pre}, post={t_post})",
                          hint="sum W(t_post − t_pre) over *every* pair, not only neighbours.")
    return _run("pair Ω", answer, body)


# --------------------------------------------------------------------------- 03 RTRL
def check_rtrl_gradient(answer) -> bool | None:
    """Notebook 03, exercise 1: the RTRL gradient of one leaky integrator (eq. 7–8).

    ``answer(x, delta, beta) -> grad`` with x (T, N) inputs, delta (T,) the errors
    ∂L/∂U[t], for U[t] = β·U[t−1] + Σ_j w_j x_j[t]: grad_j = Σ_t delta[t]·e_j(t), with the
    eligibility e_j(t) = β·e_j(t−1) + x_j(t). Compared with BPTT (autograd).
    """
    def body(fn):
        g = torch.Generator().manual_seed(3)
        x = torch.rand(40, 5, generator=g, dtype=torch.float64)
        delta = torch.randn(40, generator=g, dtype=torch.float64)
        for beta in (0.9, 0.6):
            w = torch.zeros(5, dtype=torch.float64, requires_grad=True)
            u, loss = torch.zeros((), dtype=torch.float64), 0.0
            for t in range(40):
                u = beta * u + x[t] @ w
                loss = loss + delta[t] * u
            (bptt,) = torch.autograd.grad(loss, w)
            _expect_close(_call(fn, x.clone(), delta.clone(), beta), bptt,
                          f"∂L/∂w (β={beta})",
                          hint="carry e forward through time; multiply by delta[t] at every step.")
    return _run("RTRL gradient", answer, body)


def check_trace_count(answer) -> bool | None:
    """Notebook 03, exercise 2: how many trace numbers RTRL keeps for Linear(N→H)→Leaky.

    ``answer(B, N, H) -> int``: B·N. The eligibility of w_ij is the pre-trace of input j,
    the same for every post neuron i, so one trace per (sample, input) suffices.
    """
    def body(fn):
        for B, N, H in ((4, 12, 6), (32, 100, 256), (1, 3, 7)):
            got = _call(fn, B, N, H)
            if got == B * N * H:
                raise _Wrong(f"{got} is one trace per weight and sample, general RTRL's count. "
                             "Look at e_ij(t): does it depend on i?")
            _expect_close(got, B * N, f"trace_count(B={B}, N={N}, H={H})",
                          hint="each sample carries its own traces.")
    return _run("trace count", answer, body)


# --------------------------------------------------------------------------- 04 Mamba
def check_selective_step(answer) -> bool | None:
    """Notebook 04, exercise 1: one step of the selective SSM (eq. 1–2).

    ``answer(h, u, delta, A, B, C, D) -> (y, h_new)`` without a batch dimension: h (E, N),
    u and delta (E,), A (E, N), B and C (N,), D (E,); h_new = exp(Δ⊙A)⊙h + (Δ⊙u)⊗B,
    y = h_new·C + D⊙u. Compared with :func:`bimsnn.ssm.selective_step`.
    """
    from bimsnn.ssm import selective_step

    def body(fn):
        g = torch.Generator().manual_seed(4)
        E, N = 3, 4
        h = torch.randn(E, N, generator=g, dtype=torch.float64)
        u = torch.randn(E, generator=g, dtype=torch.float64)
        delta = torch.rand(E, generator=g, dtype=torch.float64) + 0.05
        A = -torch.rand(E, N, generator=g, dtype=torch.float64) * 3 - 0.1
        B, C = (torch.randn(N, generator=g, dtype=torch.float64) for _ in range(2))
        D = torch.randn(E, generator=g, dtype=torch.float64)
        out = _call(fn, h.clone(), u.clone(), delta.clone(), A.clone(), B.clone(), C.clone(),
                    D.clone())
        if not (isinstance(out, tuple | list) and len(out) == 2):
            raise _Wrong("return a pair (y, h_new).")
        y, hn = selective_step(u[None], delta[None], A, B[None], C[None], D, h[None])
        _expect_close(out[1], hn[0], "h_new",
                      hint="the input term is (Δ⊙u) outer B: shape (E, N).")
        _expect_close(out[0], y[0], "y", hint="y = Σ_n h_new[:, n]·C[n] + D⊙u.")
    return _run("selective step", answer, body)


def check_delta_for_beta(answer) -> bool | None:
    """Notebook 04, exercise 2: the Δ that makes one SSM state leak like a LIF neuron.

    ``answer(beta, A) -> Δ`` with exp(Δ·A) = β (A < 0): Δ = ln(β)/A.
    """
    def body(fn):
        for beta, A in ((0.9, -1.0), (0.5, -4.0), (0.99, -0.25)):
            _expect_close(_call(fn, beta, A), math.log(beta) / A, f"Δ(β={beta}, A={A})",
                          hint="solve exp(Δ·A) = β for Δ; Δ must come out positive.")
    return _run("Δ for β", answer, body)


# --------------------------------------------------------------------------- 05 seizures
def check_window_label(answer) -> bool | None:
    """Notebook 05, exercise 1: the label of one EEG window.

    ``answer(start_s, window_s, seizures) -> 0 or 1``: 1 when the window
    [start_s, start_s + window_s) overlaps the seizures (a list of (onset, offset) in s)
    for at least half its length (:class:`bimsnn.data.CHBMIT`'s ``ictal_overlap=0.5``).
    """
    def body(fn):
        sz = [(100.0, 130.0), (300.0, 301.5)]
        for start, want in ((90.0, 0), (97.0, 0), (98.0, 1), (110.0, 1), (128.5, 0),
                            (126.0, 1), (299.0, 0), (200.0, 0)):
            got = _call(fn, start, 4.0, list(sz))
            if int(got) != want:
                raise _Wrong(f"window at {start:g} s (4 s long) → {int(got)}, expected {want}. "
                             "Hint: measure the overlap in seconds and compare with half the "
                             "window.")
    return _run("window label", answer, body)


def check_sensitivity_specificity(answer) -> bool | None:
    """Notebook 05, exercise 2: sensitivity and specificity at a threshold.

    ``answer(scores, labels, threshold) -> (sensitivity, specificity)``: a window is
    predicted ictal when score ≥ threshold; sensitivity = TP/(TP + FN), specificity =
    TN/(TN + FP).
    """
    def body(fn):
        r = _rng(5)
        labels = (r.random(200) < 0.2).astype(int)
        scores = np.clip(0.3 * labels + 0.5 * r.random(200), 0, 1)
        for th in (0.3, 0.5, 0.6):
            pred = scores >= th
            sens = (pred & (labels == 1)).sum() / (labels == 1).sum()
            spec = (~pred & (labels == 0)).sum() / (labels == 0).sum()
            out = _call(fn, scores.copy(), labels.copy(), th)
            if not (isinstance(out, tuple | list) and len(out) == 2):
                raise _Wrong("return a pair (sensitivity, specificity).")
            _expect_close(out, [sens, spec], f"(sensitivity, specificity) at {th}",
                          hint="sensitivity counts among ictal windows, specificity among the "
                               "others.")
    return _run("sensitivity/specificity", answer, body)


# --------------------------------------------------------------------------- 06 energy
def check_ann_over_snn(answer) -> bool | None:
    """Notebook 06, exercise 1: the arithmetic energy ratio of one Linear layer.

    ``answer(rate) -> E_ANN / E_SNN`` for a Linear layer whose inputs spike with
    probability ``rate`` per step: the ANN does one MAC (4.6 pJ) per input and output per
    step, the SNN one accumulate (0.9 pJ) per input *spike* and output, so the ratio is
    4.6 / (0.9·rate) (Horowitz 2014, as :mod:`bimsnn.analysis.energy`).
    """
    def body(fn):
        for rate in (0.1, 0.02, 0.5):
            _expect_close(_call(fn, rate), 4.6 / (0.9 * rate), f"ann_over_snn({rate})",
                          rtol=1e-3, hint="count operations per input per step for both.")
    return _run("ANN/SNN energy", answer, body)


def check_fit_tau(answer) -> bool | None:
    """Notebook 06, exercise 2: the LTP time constant of a measured window.

    ``answer(dt, dw) -> τ+``, fitted from the Δt ≥ 0 half of a noisy measured window
    (e.g. a straight line through log Δw). Accepted within 10 % on synthetic windows.
    """
    from bimsnn.rules import stdp_window

    def body(fn):
        r = _rng(6)
        dt = np.arange(-30, 31, dtype=float)
        for tau in (9.5, 4.0):
            dw = stdp_window(dt, 0.02, tau, 0.01, 6.0) * (1 + 0.03 * r.standard_normal(dt.size))
            got = float(_array(_call(fn, dt.copy(), dw.copy()), "τ+").reshape(-1)[0])
            if not abs(got - tau) <= 0.1 * tau:
                raise _Wrong(f"fitted τ+ = {got:.3g} on a window made with τ+ = {tau:g}. "
                             "Hint: on Δt ≥ 0, log Δw = log A+ − Δt/τ+.")
    return _run("fit τ+", answer, body)


# --------------------------------------------------------------------------- 07 encoders
def check_adm_decode(answer) -> bool | None:
    """Notebook 07, exercise 1: reconstruct a signal from its ADM spikes.

    ``answer(spikes, theta, init) -> x_hat`` with spikes (T, 2) (column 0 ON, column 1
    OFF) of one channel: x̂_t = init + θ·Σ_{s≤t}(ON_s − OFF_s). Compared with
    :func:`bimsnn.encoding.adm_decode`.
    """
    from bimsnn.encoding import adm, adm_decode

    def body(fn):
        t = torch.linspace(0, 6, 300, dtype=torch.float64)
        x = (torch.sin(t) + 0.3 * torch.sin(5 * t)).unsqueeze(-1)       # (T, 1)
        for theta in (0.1, 0.25):
            s = adm(x, theta)
            want = adm_decode(s, theta, init=float(x[0, 0]))[:, 0]
            _expect_close(_call(fn, s.clone(), theta, float(x[0, 0])), want,
                          f"x̂ (θ={theta})", hint="a running sum of ON − OFF, times θ, plus init.")
    return _run("ADM decode", answer, body)


def check_reconstruction_error(answer) -> bool | None:
    """Notebook 07, exercise 2: the normalised reconstruction error used in the figures.

    ``answer(x, x_hat) -> float``: RMS(x − x̂) / std(x) (0 = perfect, 1 = no better than
    the mean).
    """
    def body(fn):
        r = _rng(7)
        x = np.cumsum(r.standard_normal(500))
        for noise in (0.1, 2.0):
            xh = x + noise * r.standard_normal(500)
            want = np.sqrt(np.mean((x - xh) ** 2)) / np.std(x)
            _expect_close(_call(fn, x.copy(), xh.copy()), want, f"error (noise {noise:g})",
                          rtol=1e-4, hint="root of the mean squared difference, over std(x).")
    return _run("reconstruction error", answer, body)


def check_theta_for_budget(answer) -> bool | None:
    """Notebook 07, exercise 3: an ADM threshold that meets a spike budget.

    ``answer(x, budget) -> θ`` for a 1-D signal x: ADM with that θ must emit at most
    ``budget`` spikes, and at least a quarter of it (not wastefully coarse), on smooth test
    signals. The spike-count bound of :func:`bimsnn.encoding.adm`, TV(x)/θ, gives one
    answer (on noisy signals that bound is loose: many small steps never cross θ).
    """
    from bimsnn.encoding import adm

    def body(fn):
        t = np.linspace(0, 10, 2000)
        signals = {"sine": np.sin(2 * np.pi * 0.7 * t),
                   "two tones": 2 * np.sin(2 * np.pi * 0.3 * t) + 0.5 * np.sin(2 * np.pi * 3 * t)}
        for name, x in signals.items():
            for budget in (100, 300):
                th = float(_array(_call(fn, x.copy(), budget), "θ").reshape(-1)[0])
                if not th > 0:
                    raise _Wrong(f"θ must be > 0, got {th:g}.")
                n = int(adm(torch.from_numpy(x).unsqueeze(-1), th).sum())
                if n > budget:
                    raise _Wrong(f"{name}, budget {budget}: θ = {th:.4g} gives {n} spikes. "
                                 "Hint: each spike needs the signal to move by θ.")
                if n < budget / 4:
                    raise _Wrong(f"{name}, budget {budget}: θ = {th:.4g} gives only {n} spikes; "
                                 "a smaller θ would resolve more detail within the budget.")
    return _run("θ for a spike budget", answer, body)


# --------------------------------------------------------------------------- 08 SSM
def check_scan_loop(answer) -> bool | None:
    """Notebook 08, exercise 1: the selective scan of one channel as a loop (eq. 1–2).

    ``answer(u, delta, A, B, C, D) -> y`` with u, delta (T,), A (N,) < 0, B, C (T, N),
    D a float; h_0 = 0. Compared with :func:`bimsnn.ssm.selective_scan_ref`.
    """
    from bimsnn.ssm import selective_scan_ref

    def body(fn):
        g = torch.Generator().manual_seed(9)
        T, N = 30, 4
        u = torch.randn(T, generator=g, dtype=torch.float64)
        delta = torch.rand(T, generator=g, dtype=torch.float64) * 0.5 + 0.01
        A = -torch.arange(1, N + 1, dtype=torch.float64)
        B, C = (torch.randn(T, N, generator=g, dtype=torch.float64) for _ in range(2))
        D = 0.7
        want = selective_scan_ref(u.view(T, 1, 1), delta.view(T, 1, 1), A.view(1, N),
                                  B.view(T, 1, N), C.view(T, 1, N),
                                  torch.tensor([D], dtype=torch.float64))[:, 0, 0]
        _expect_close(_call(fn, u.clone(), delta.clone(), A.clone(), B.clone(), C.clone(), D),
                      want, "y", hint="h_t = exp(Δ_t A)·h_{t−1} + Δ_t u_t B_t; "
                                      "y_t = C_t·h_t + D u_t.")
    return _run("scan loop", answer, body)


def check_lti_kernel(answer) -> bool | None:
    """Notebook 08, exercise 2: the convolution kernel of an LTI SSM.

    ``answer(a_bar, b_bar, c, T) -> K`` (T,) with K_k = Σ_n c_n·a_bar_n^k·b_bar_n, so that
    y = K * u (causal convolution) equals the recurrence h_t = a_bar⊙h_{t−1} + b_bar·u_t,
    y_t = c·h_t.
    """
    def body(fn):
        r = _rng(10)
        a, b, c = r.uniform(0.3, 0.95, 5), r.standard_normal(5), r.standard_normal(5)
        k = np.arange(25)[:, None]
        _expect_close(_call(fn, a.copy(), b.copy(), c.copy(), 25), (c * a ** k * b).sum(1),
                      "K", hint="an impulse at t = 0 reaches step k through a_bar^k.")
    return _run("LTI kernel", answer, body)


def check_memory_steps(answer) -> bool | None:
    """Notebook 08, exercise 3: how long a selective state remembers.

    ``answer(delta, A) -> steps`` for the state to decay by a factor e with constant Δ:
    exp(Δ·A·k) = 1/e, ``k = 1/(Δ·|A|)``.
    """
    def body(fn):
        for delta, A in ((0.1, -1.0), (0.01, -2.0), (1.0, -0.5)):
            _expect_close(_call(fn, delta, A), 1.0 / (delta * abs(A)),
                          f"steps(Δ={delta}, A={A})", rtol=1e-4,
                          hint="per step the state is multiplied by exp(Δ·A).")
    return _run("memory in steps", answer, body)


# --------------------------------------------------------------------------- 09 pruning
def check_prune_prob(answer) -> bool | None:
    """Notebook 09, exercise 1: the pruning probability of eq. 9 (small weights pruned).

    ``answer(w, theta, beta) -> p`` elementwise: ``p = σ(β(θ − |w|))``, as
    :meth:`bimsnn.rules.AdaptivePruning.prune_prob`.
    """
    def body(fn):
        w = torch.linspace(-0.5, 0.5, 101, dtype=torch.float64)
        for theta, beta in ((0.1, 50.0), (0.2, 10.0)):
            want = torch.sigmoid(beta * (theta - w.abs()))
            _expect_close(_call(fn, w.clone(), theta, beta), want, f"p (θ={theta}, β={beta})",
                          hint="small |w| must give p ≈ 1; note eq. 9's sign as printed "
                               "prunes large weights.")
    return _run("pruning probability", answer, body)


def check_hard_threshold(answer) -> bool | None:
    """Notebook 09, exercise 2: the magnitude threshold for a target sparsity.

    ``answer(w, rho) -> θ`` such that a fraction ρ of the entries has ``|w| < θ`` (β → ∞ in
    eq. 9: deterministic magnitude pruning). Accepted within 0.01 in sparsity.
    """
    def body(fn):
        w = torch.from_numpy(_rng(11).standard_normal((50, 40))) * 0.1
        for rho in (0.5, 0.9, 0.2):
            th = float(_array(_call(fn, w.clone(), rho), "θ").reshape(-1)[0])
            s = float((w.abs() < th).double().mean())
            if abs(s - rho) > 0.01:
                raise _Wrong(f"θ = {th:.4g} prunes {s:.3f} of the weights, target {rho}. "
                             "Hint: a quantile of |w|.")
    return _run("threshold for ρ", answer, body)


def check_theta_update(answer) -> bool | None:
    """Notebook 09, exercise 3: one Euler step of the threshold controller (eq. 10).

    ``answer(theta, gamma, rho, s) -> θ_new = θ + γ·(ρ − s)`` (dt = 1): the threshold rises
    while the network is less sparse than the target.
    """
    def body(fn):
        for args in ((0.1, 0.01, 0.8, 0.5), (0.3, 0.05, 0.5, 0.9), (0.0, 0.02, 0.6, 0.6)):
            th, gamma, rho, s = args
            _expect_close(_call(fn, *args), th + gamma * (rho - s), f"θ_new{args}",
                          hint="too few weights pruned (s < ρ) must raise θ.")
    return _run("θ update", answer, body)


# --------------------------------------------------------------------------- 10 Hybrid, memory
def check_hybrid_grad(answer) -> bool | None:
    """Notebook 10, exercise 1: what the Hybrid rule writes into ``.grad`` (eq. 4).

    ``answer(g, omega, lam) -> λ·g − (1 − λ)·Ω``, with g = ∂L/∂w and Ω the STDP update,
    so that SGD's w −= η·grad descends L and applies STDP potentiation.
    """
    def body(fn):
        g = torch.Generator().manual_seed(12)
        grad, omega = (torch.randn(6, 4, generator=g, dtype=torch.float64) for _ in range(2))
        for lam in (0.0, 0.3, 1.0):
            want = lam * grad - (1 - lam) * omega
            got = _call(fn, grad.clone(), omega.clone(), lam)
            if np.allclose(_array(got, ".grad"), (lam * grad + (1 - lam) * omega).numpy()) \
                    and lam < 1:
                raise _Wrong("right mix, wrong sign of Ω: SGD subtracts .grad, and Ω > 0 "
                             "must *increase* w.")
            _expect_close(got, want, f".grad (λ={lam})")
    return _run("Hybrid .grad", answer, body)


def check_memory_slope(answer) -> bool | None:
    """Notebook 10, exercise 2: memory per time step from measured (T, MB) points.

    ``answer(Ts, mbs) -> slope`` in MB per step: the least-squares line through the points.
    """
    def body(fn):
        r = _rng(13)
        Ts = np.array([50, 100, 200, 400, 800], float)
        for slope, icpt in ((0.012, 1.0), (0.0, 0.5)):
            mbs = icpt + slope * Ts + 0.002 * r.standard_normal(Ts.size)
            want = np.polyfit(Ts, mbs, 1)[0]
            _expect_close(_call(fn, Ts.copy(), mbs.copy()), want, f"slope ({slope:g} MB/step)",
                          rtol=1e-3, atol=1e-6, hint="np.polyfit(Ts, mbs, 1).")
    return _run("memory slope", answer, body)


def check_max_chunk(answer) -> bool | None:
    """Notebook 10, exercise 3: the largest chunk that fits a memory budget.

    ``answer(budget_mb, per_step_mb, fixed_mb) -> K``: the largest integer K ≥ 1 with
    fixed_mb + K·per_step_mb ≤ budget_mb (chunked rules hold K steps of graph plus
    fixed-size traces), or 0 if not even K = 1 fits.
    """
    def body(fn):
        for args, want in (((100.0, 0.5, 20.0), 160), ((10.0, 3.0, 2.0), 2),
                           ((5.0, 1.0, 4.5), 0), ((64.0, 0.25, 0.0), 256)):
            got = _call(fn, *args)
            if int(got) != got or int(got) != want:
                raise _Wrong(f"max_chunk{args} returned {got}, expected {want}. "
                             "Hint: K must be a whole number of steps, rounded down.")
    return _run("max chunk", answer, body)


# --------------------------------------------------------------------------- 11 streaming
def check_alarm_onsets(answer) -> bool | None:
    """Notebook 11, exercise 1: where alarms start in a stream of window scores.

    ``answer(scores, threshold, k) -> onsets``: the indices of the windows at which an
    alarm switches on, as :class:`bimsnn.monitor.Monitor` (and
    :func:`bimsnn.metrics.clinical_metrics`) decide: the alarm is on at window i when
    windows i − k + 1 … i all score ≥ threshold, and one alarm is one run of "on" windows,
    so an onset is a window where the run of scores ≥ threshold reaches length k.
    """
    def ref(sc, th, k):
        run, out = 0, []
        for i, v in enumerate(sc):
            run = run + 1 if v >= th else 0
            if run == k:
                out.append(i)
        return out

    def body(fn):
        r = _rng(14)
        sc = np.clip(0.35 + 0.3 * r.standard_normal(300), 0, 1)
        sc[40:60] = 0.9                                     # one long run
        sc[100] = 0.5                                       # exactly at the threshold: on
        for th, k in ((0.5, 2), (0.5, 1), (0.6, 3)):
            got = _call(fn, sc.copy(), th, k)
            got = [int(v) for v in np.asarray(got, dtype=float).reshape(-1)]
            want = ref(sc, th, k)
            if got != want:
                extra = sorted(set(got) - set(want))[:3]
                missed = sorted(set(want) - set(got))[:3]
                raise _Wrong(f"threshold {th}, k = {k}: {len(got)} onsets, expected {len(want)}"
                             f" (e.g. unexpected {extra}, missing {missed}). Hint: count the "
                             "run of consecutive windows ≥ threshold; an alarm starts only "
                             "where that run reaches k, not at every window after.")
    return _run("alarm onsets", answer, body)


def check_window_count(answer) -> bool | None:
    """Notebook 11, exercise 2: how many windows a recording yields.

    ``answer(duration_s, window_s, stride_s) -> n``: windows start every ``stride_s``
    from 0 and must lie wholly inside the recording, so n = ⌊(duration − window) / stride⌋
    + 1 when duration ≥ window, else 0 (the monitor's and the offline loader's count).
    """
    def body(fn):
        for args in ((1800.0, 4.0, 2.0), (600.0, 4.0, 1.0), (3.0, 4.0, 2.0), (4.0, 4.0, 2.0),
                     (3601.0, 10.0, 5.0), (125.0, 4.0, 4.0)):
            dur, win, hop = args
            want = int((dur - win) // hop) + 1 if dur >= win else 0
            got = _call(fn, *args)
            if int(round(float(got))) != want or abs(float(got) - want) > 1e-9:
                raise _Wrong(f"n_windows{args} returned {got}, expected {want}. Hint: the "
                             "last window must end inside the recording; count its start.")
    return _run("window count", answer, body)


def check_stateful_filter(answer) -> bool | None:
    """Notebook 11, exercise 3: a causal IIR filter run block by block.

    ``answer(blocks, b, a) -> y``: ``blocks`` a list of 1-D arrays (consecutive pieces of
    one signal), ``b, a`` the filter's coefficients; ``y`` must equal
    ``scipy.signal.lfilter(b, a, concatenated blocks)`` whatever the block sizes (carry
    the filter state ``zi`` from one block to the next, as
    :class:`bimsnn.data.stream.CausalEEGChain` does).
    """
    from scipy.signal import butter, lfilter

    def body(fn):
        x = np.cumsum(_rng(15).standard_normal(2000)) * 0.1
        b, a = butter(2, [0.02, 0.3], btype="band")
        want = lfilter(b, a, x)
        for size in (1, 37, 500, 2000):
            blocks = [x[i:i + size].copy() for i in range(0, len(x), size)]
            _expect_close(_call(fn, blocks, b.copy(), a.copy()), want,
                          f"y with blocks of {size}", rtol=1e-7, atol=1e-9,
                          hint="start from zi = zeros(max(len(a), len(b)) − 1) and hand "
                               "lfilter's returned state to the next block.")
    return _run("stateful filter", answer, body)


#: The checks of each notebook, in exercise order ("01" → (exercise 1's check, ...)).
EXERCISES: dict[str, tuple[Callable, ...]] = {
    "01": (check_lif_step, check_fast_sigmoid_derivative, check_rheobase),
    "02": (check_stdp_window, check_pre_trace, check_pair_omega),
    "03": (check_rtrl_gradient, check_trace_count),
    "04": (check_selective_step, check_delta_for_beta),
    "05": (check_window_label, check_sensitivity_specificity),
    "06": (check_ann_over_snn, check_fit_tau),
    "07": (check_adm_decode, check_reconstruction_error, check_theta_for_budget),
    "08": (check_scan_loop, check_lti_kernel, check_memory_steps),
    "09": (check_prune_prob, check_hard_threshold, check_theta_update),
    "10": (check_hybrid_grad, check_memory_slope, check_max_chunk),
    "11": (check_alarm_onsets, check_window_count, check_stateful_filter),
}
