"""The STDP window that gradient learning produces (paper §4.6), measured and fitted.

Symbols: T time steps, B batch (trials), N pre neurons (Linear in), H post neurons (Leaky),
Δt = t_post − t_pre (steps; Δt ≥ 0: pre before post), β membrane decay, τ_m = −1/ln β,
θ threshold, σ' surrogate derivative, λ spike-penalty weight, I_T teacher current.

Protocol (one Linear weight w → Leaky, snnTorch semantics: subtract reset, detached)::

    pre spike  x[t_pre] = 1;   post spike forced by a teacher current I_T at t_post
    loss       L = Σ_t ℓ_t,   ℓ_t = λ Σ_i S_i[t] − [t = t_post] S_post[t_post]

The loss *rewards the post spike* at t_post and *penalises spiking* (an activity / energy
regulariser, λ); spikes enter through the surrogate. The measured change is Δw = −∂L/∂w
(η = 1) of the paired protocol *minus* that of the unpaired control (same pre spike, no
teacher current): the pairing-induced change, as STDP experiments report it.

What produces each lobe (first order in w; exact statements hold for one pair)::

    ∂L/∂w = Σ_t δ[t] x[t] = δ[t_pre],   δ[t] = ∂L/∂U[t] = Σ_{t' ≥ t} β^{t'−t} ℓ'[t'],
    ℓ'[t] = (λ − [t = t_post]) σ'(U[t] − θ)

so the window *is* the BPTT adjoint of the post membrane read backwards from the post spike.

* LTP (Δt ≥ 0): the reward at t_post reaches t_pre through the leak, Δw ∝ (1 − λ) σ' β^Δt:
  τ+ ≈ τ_m. Causal, and the same for RTRL, whose eligibility is this pre-trace.
* LTD (Δt < 0): a pre spike after the post spike cannot change S[t_post]; its gradient
  comes only from the penalty in the post spike's wake. The subtract reset leaves the
  wake membrane at U[t_post+1] = β U[t_post] − θ, decaying as β^k: depolarised when the
  teacher overshoot U[t_post] > θ/β. The penalty's gradient σ'(U − θ) grows with
  depolarisation (σ'' > 0 below threshold), so a pre spike in a depolarised wake, which
  pushes the neuron towards an unwanted extra spike, is depressed; to first order
  Δw ∝ −λ σ'' β^{−Δt}, τ− ≈ τ_m. A hyperpolarised wake (U[t_post] < θ/β) flips the sign
  (weak potentiation), and no penalty (λ = 0) or a "zero" reset (wake membrane exactly
  0) gives *no* LTD lobe at all (``main`` prints these controls). Larger λ or overshoot
  also depresses pre-before-post pairs (their PSP lasts into the wake): the LTP lobe
  shrinks or flips. The window is a property of the loss and the reset, not a law of BPTT.
* Beyond first order the pre spike's own PSP (w0 β^Δt) shifts σ' at t_post: τ+ = 12 at
  w0 = 0.1 but 9.7 ≈ τ_m at w0 = 0.01.

The fitted window is eq. 6 (:func:`stdp_window`); the network version averages the pairing
change of random (pre, post) pairs inside a Linear + Leaky layer with Poisson background.
``python -m bimsnn.analysis.plasticity`` prints the fits and ends with ``RESULT ...``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy.optimize import curve_fit
from torch import Tensor, nn

from bimsnn.neurons import Leaky, lif_multi_step
from bimsnn.rules.stdp import stdp_window  # eq. 6 lives with the rule; re-exported here
from bimsnn.surrogate import ATan

__all__ = ["PairProtocol", "WindowFit", "stdp_window", "fit_window", "pair_window",
           "network_window", "plot_window", "main"]


@dataclass
class PairProtocol:
    """Settings of the pairing experiment (defaults: those ``main`` reports)."""

    beta: float = 0.9           # τ_m = −1/ln β ≈ 9.5 steps
    threshold: float = 1.0
    w0: float = 0.1             # pre → post weight (small: first-order regime)
    teacher: float = 1.3        # I_T at t_post: U[t_post] ≈ 1.3 θ > θ/β, wake depolarised
    lam: float = 0.5            # spike-penalty weight λ
    max_dt: int = 20            # Δt ∈ [−max_dt, max_dt]
    T: int = 90                 # t_post = T // 2, so the wake fits inside T
    reset: str = "subtract"     # "zero": control without residual depolarisation
    alpha: float = 2.0          # atan surrogate sharpness (snnTorch default)

    @property
    def t_post(self) -> int:
        return self.T // 2

    @property
    def dts(self) -> np.ndarray:
        return np.arange(-self.max_dt, self.max_dt + 1)


@dataclass
class WindowFit:
    """Eq. 6 parameters fitted by least squares, and the coefficient of determination."""

    A_plus: float
    tau_plus: float
    A_minus: float
    tau_minus: float
    r2: float

    def __str__(self) -> str:
        return (f"A+ = {self.A_plus:.4g}, tau+ = {self.tau_plus:.3g}, A- = {self.A_minus:.4g}, "
                f"tau- = {self.tau_minus:.3g}, R^2 = {self.r2:.4f}")


def fit_window(dts, dw, tau_bounds: tuple[float, float] = (0.1, 1e3)) -> WindowFit:
    """Fit eq. 6 to a measured window with ``scipy.optimize.curve_fit``.

    Args:
        dts: Δt values (n,). dw: measured Δw (n,).
        tau_bounds: bounds of τ±; amplitudes are free (a negative A+ is reported as such).
    Returns:
        WindowFit; R² = 1 − SS_res / SS_tot over the n points.
    """
    x, y = np.asarray(dts, dtype=float), np.asarray(dw, dtype=float)
    scale = float(np.abs(y).max()) or 1.0
    pos, neg = y[x >= 0], y[x < 0]
    p0 = [pos[0] if pos.size else scale, 5.0, -neg[-1] if neg.size else 0.0, 5.0]
    lo, hi = tau_bounds
    p, _ = curve_fit(stdp_window, x, y, p0=p0, bounds=([-np.inf, lo, -np.inf, lo],
                                                        [np.inf, hi, np.inf, hi]),
                     maxfev=20000)
    ss_res = float(((y - stdp_window(x, *p)) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum()) or 1.0
    return WindowFit(*map(float, p), r2=1.0 - ss_res / ss_tot)


# ---------------------------------------------------------------- one pair, BPTT and RTRL
def _pair_inputs(cfg: PairProtocol, teacher: bool) -> tuple[Tensor, Tensor]:
    """One post neuron per Δt (diagonal weights), so one run measures the whole window.

    Returns x (T, 1, n) pre spikes and I (T, 1, n) teacher current, float64.
    """
    dts = cfg.dts
    n = len(dts)
    x = torch.zeros(cfg.T, 1, n, dtype=torch.float64)
    x[cfg.t_post - torch.as_tensor(dts), 0, torch.arange(n)] = 1.0
    current = torch.zeros_like(x)
    if teacher:
        current[cfg.t_post] = cfg.teacher
    return x, current


def _pair_grad(cfg: PairProtocol, teacher: bool, method: str) -> np.ndarray:
    """diag(∂L/∂W) of the pair network for one condition; (n,)."""
    x, current = _pair_inputs(cfg, teacher)
    n = x.shape[-1]
    fc = nn.Linear(n, n, bias=False).double()
    with torch.no_grad():
        fc.weight.copy_(cfg.w0 * torch.eye(n, dtype=torch.float64))
    lif = Leaky(beta=cfg.beta, threshold=cfg.threshold, spike_grad=ATan(cfg.alpha),
                reset_mechanism=cfg.reset)
    rule = None
    if method == "rtrl":
        from bimsnn.rules import RTRL  # lazy: analysis must not need the rules to import

        rule = RTRL(nn.Sequential(fc, lif), layers=[(fc, lif)])
        rule.reset(1)
    elif method != "bptt":
        raise ValueError(f"method must be 'bptt' or 'rtrl', got {method!r}")
    mem, total = torch.zeros(1, n, dtype=torch.float64), 0.0
    try:
        for t in range(cfg.T):
            spk, mem = lif(fc(x[t]) + current[t], mem)
            loss_t = cfg.lam * spk.sum() - (spk.sum() if teacher and t == cfg.t_post else 0.0)
            if rule is None:
                total = total + loss_t                 # BPTT: one backward through all T
            else:
                rule.backward(loss_t)                  # RTRL: this step only
        if rule is None:
            total.backward()
    finally:
        if rule is not None:
            rule.remove()
    return fc.weight.grad.diagonal().numpy().copy()


def pair_window(cfg: PairProtocol | None = None, method: str = "bptt"
                ) -> tuple[np.ndarray, np.ndarray]:
    """Pairing-induced Δw(Δt) = −(∂L/∂w paired − ∂L/∂w control) for one pre/post pair.

    Args:
        cfg: the protocol (default :class:`PairProtocol()`).
        method: "bptt" (autograd through all T steps) or "rtrl" (:class:`bimsnn.rules.RTRL`,
            one backward per step); for one layer both are exact and agree to float64.
    Returns:
        dts (n,), dw (n,) with n = 2·max_dt + 1.
    """
    cfg = cfg or PairProtocol()
    dw = -(_pair_grad(cfg, True, method) - _pair_grad(cfg, False, method))
    return cfg.dts, dw


# ---------------------------------------------------------------- network, random pairs
def network_window(cfg: PairProtocol | None = None, n_in: int = 20, n_out: int = 10,
                   rate: float = 0.02, w_scale: float = 0.1, trials: int = 512,
                   chunk: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean pairing-induced Δw_ij over random pairs (j, i) of a Linear(N→H) + Leaky layer.

    Each trial draws weights W ~ N(0, w_scale²), Poisson background spikes (``rate`` per
    step) on every input but j, one pre spike on j at t_post − Δt, and a teacher current on
    post neuron i at t_post; the loss penalises every spike of the layer (λ) and rewards
    i's at t_post. Per trial ∂L/∂w_ij = Σ_t δ_i[t] x_j[t] = δ_i[t_pre], read from the
    gradient of the input current (exact BPTT per sample, no per-sample weight copies).

    Returns:
        dts (n,), mean Δw (n,), standard error over trials (n,).
    """
    cfg = cfg or PairProtocol()
    g = torch.Generator().manual_seed(seed)
    dts = cfg.dts
    T, tp, n = cfg.T, cfg.t_post, len(dts)
    sg = ATan(cfg.alpha)
    dw = np.zeros((n, trials))
    for c0 in range(0, trials, chunk):
        k = min(chunk, trials - c0)
        B = n * k
        d = torch.as_tensor(dts).repeat_interleave(k)                       # (B,)
        W = torch.randn(B, n_out, n_in, generator=g) * w_scale               # per-trial net
        j = torch.randint(0, n_in, (B,), generator=g)
        i = torch.randint(0, n_out, (B,), generator=g)
        b = torch.arange(B)
        x = (torch.rand(T, B, n_in, generator=g) < rate).float()           # (T, B, N)
        x[:, b, j] = 0.0
        x[tp - d, b, j] = 1.0
        drive = torch.einsum("tbn,bhn->tbh", x, W)                         # (T, B, H)
        out = []
        for teacher in (True, False):
            cur = drive.clone()
            if teacher:
                cur[tp, b, i] += cfg.teacher
            cur.requires_grad_(True)
            spk, _ = lif_multi_step(cur, None, cfg.beta, cfg.threshold, sg, cfg.reset)
            loss = cfg.lam * spk.sum() - (spk[tp, b, i].sum() if teacher else 0.0)
            (g_cur,) = torch.autograd.grad(loss, cur)                      # δ (T, B, H)
            out.append(-g_cur[tp - d, b, i])                                # −δ_i[t_pre]
        dw[:, c0:c0 + k] = (out[0] - out[1]).double().reshape(n, k).numpy()
    return dts, dw.mean(1), dw.std(1, ddof=1) / math.sqrt(trials)


# ---------------------------------------------------------------- plot, CLI
def plot_window(dts, dw, fit: WindowFit | None = None, sem=None, ax=None, label="BPTT",
                reference: tuple[float, float, float, float] | None = (1.0, 20.0, 1.05, 20.0)):
    """Measured window (points), its eq. 6 fit (line) and, on a twin axis, eq. 6 with the
    :class:`bimsnn.rules.STDP` defaults (A± = 1, 1.05 relative; τ± = 20) for comparison."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    dts = np.asarray(dts)
    ax.axhline(0, color="0.7", lw=0.8)
    ax.axvline(0, color="0.7", lw=0.8)
    ax.errorbar(dts, dw, yerr=sem, fmt="o", ms=3.5, label=f"{label} Δw (measured)")
    grid = np.linspace(dts.min(), dts.max(), 400)
    if fit is not None:
        ax.plot(grid, stdp_window(grid, fit.A_plus, fit.tau_plus, fit.A_minus, fit.tau_minus),
                "C1", label=f"eq. 6 fit, R² = {fit.r2:.3f}")
    if reference is not None:
        ax2 = ax.twinx()
        ax2.plot(grid, stdp_window(grid, *reference), "k--", lw=1, label="eq. 6, STDP rule")
        ax2.set_ylabel("eq. 6 (STDP rule, a.u.)")
        lim = max(abs(v) for v in ax2.get_ylim())
        ax2.set_ylim(-lim, lim)
        ax2.legend(loc="lower right", fontsize=8)
    lim = max(abs(v) for v in ax.get_ylim())
    ax.set_ylim(-lim, lim)   # zero in the middle of both axes
    ax.set_xlabel("Δt = t_post − t_pre (steps)")
    ax.set_ylabel("Δw = −∂L/∂w (η = 1)")
    ax.legend(loc="upper left", fontsize=8)
    return ax


def main(argv=None) -> None:
    """``python -m bimsnn.analysis.plasticity``: fit the windows, print ``RESULT ...``."""
    import argparse
    import time

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=512, help="random pairs per Δt (network)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    cfg = PairProtocol()
    print(f"protocol: beta={cfg.beta} (tau_m={-1 / math.log(cfg.beta):.2f} steps), "
          f"theta={cfg.threshold}, w0={cfg.w0}, teacher={cfg.teacher}, lambda={cfg.lam}, "
          f"reset={cfg.reset}, atan alpha={cfg.alpha}")
    dts, bptt = pair_window(cfg, "bptt")
    _, rtrl = pair_window(cfg, "rtrl")
    pair_fit = fit_window(dts, bptt)
    print(f"one pair, BPTT : {pair_fit}")
    print(f"one pair, RTRL : {fit_window(dts, rtrl)}   max|RTRL - BPTT| = "
          f"{np.abs(rtrl - bptt).max():.2e}")
    for name, c in (("zero reset", replace(cfg, reset="zero")), ("no penalty", replace(cfg, lam=0.0))):
        _, dw = pair_window(c)
        print(f"control, {name:10s}: LTD lobe max|dw(dt<0)| = {np.abs(dw[dts < 0]).max():.2e}, "
              f"LTP dw(0) = {dw[dts == 0][0]:.3g}")
    _, mean, sem = network_window(cfg, trials=args.trials, seed=args.seed)
    net_fit = fit_window(dts, mean)
    print(f"network (20->10, Poisson 0.02, {args.trials} random pairs per dt): {net_fit}")
    print(f"total {time.perf_counter() - t0:.1f} s")
    print(f"RESULT stdp_window_r2={net_fit.r2:.4f} pair_r2={pair_fit.r2:.4f} "
          f"A_plus={net_fit.A_plus:.4g} tau_plus={net_fit.tau_plus:.3g} "
          f"A_minus={net_fit.A_minus:.4g} tau_minus={net_fit.tau_minus:.3g}")


if __name__ == "__main__":
    main()
