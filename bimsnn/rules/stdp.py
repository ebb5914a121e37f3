"""Pair-based STDP (paper eq. 5-6), online with exponential traces.

Symbols: B batch (leading dims flattened), N presynaptic width (Linear in_features),
H postsynaptic width (Leaky), i post, j pre, W (H, N) the Linear weight.

Eq. 5-6, summed over every pair of a post spike t_i and a pre spike t_j of a sequence::

    Ω_ij = Σ_{t_i} Σ_{t_j} W(t_i − t_j),   W(Δ) = A+ exp(−Δ/τ+)  for Δ ≥ 0   (pre before post)
                                           W(Δ) = −A− exp(Δ/τ−)  for Δ < 0   (post before pre)

Online, with the traces of :mod:`bimsnn.rules.traces` (decays d± = exp(−1/τ±))::

    x̄_j(t) = d+ x̄_j(t−1) + x_j(t)                pre-trace, *includes* step t
    Ω_ij  += A+ s_i(t) x̄_j(t)                      LTP: every pre spike at t_j ≤ t
    Ω_ij  −= A− d− ȳ_i(t−1) x_j(t)                 LTD: every post spike at t_i < t
    ȳ_i(t) = d− ȳ_i(t−1) + s_i(t)                  post-trace

so a same-step pair counts once, as W(0) = A+ (Δ ≥ 0), and the sum equals eq. 5 exactly.
Pre activity x is the Linear's input, post activity s the Leaky's output spikes; graded
values enter as spike amplitudes. Ω is *averaged over the batch* (divided by B), so the
step size does not depend on the batch size.

Variants (``bound``):
    "additive": as above.
    "soft": weight-dependent soft bounds, LTP ∝ (w_max − w_ij), LTD ∝ (w_ij − w_min),
        with w the weight at the step the pair completes: weights stay in [w_min, w_max]
        for small enough steps (van Rossum et al. 2000).

Sign convention: ``.grad -= Ω`` (``STDP.backward``) so that SGD's ``w -= η·grad`` gives
Δw = +η·Ω (potentiation increases w). Usable alone, unsupervised (``backward(None)``).
Homeostasis: none built in; ``normalize=c`` makes :meth:`STDP.normalize_` rescale each
post neuron's incoming weights to Σ_j |w_ij| = c (Diehl & Cook 2015), call it after
``opt.step()``. Only weights learn (not biases).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from bimsnn.rules.base import LayerTap, Pair, Rule, accumulate_grad
from bimsnn.rules.traces import Trace, decay_from_tau


class STDPLayer:
    """Traces and Ω of one Linear→Leaky pair (a Handler)."""

    def __init__(self, tap: LayerTap, stdp: STDP):
        self.tap, self.cfg = tap, stdp
        self.pre = Trace(decay_from_tau(stdp.tau_plus))
        self.post = Trace(decay_from_tau(stdp.tau_minus))
        self.omega = torch.zeros_like(tap.fc.weight, requires_grad=False)   # since reset
        self.pending = torch.zeros_like(self.omega)                          # since flush
        self.scale = 1.0               # (1 − λ) under Hybrid: .grad -= scale·Ω
        tap.listeners.append(self)

    @torch.no_grad()
    def on_step(self, tap: LayerTap) -> None:
        c = self.cfg
        x = tap.x.reshape(-1, tap.x.shape[-1])                     # (B, N) pre
        s = tap.spk.reshape(-1, tap.spk.shape[-1]).to(x.dtype)     # (B, H) post
        B = x.shape[0]
        xbar = self.pre.update(x)                                  # includes t: W(0) = A+
        ybar = self.post.decayed()                                 # strictly earlier posts
        ltp = s.t() @ xbar / B                                     # (H, N)
        ltd = ybar.t() @ x / B if ybar is not None else None
        self.post.update(s)
        w = tap.fc.weight.detach()
        if c.bound == "soft":
            ltp = (c.w_max - w) * ltp
            ltd = None if ltd is None else (w - c.w_min) * ltd
        dw = c.A_plus * ltp if ltd is None else c.A_plus * ltp - c.A_minus * ltd
        dw = dw.to(self.omega.dtype)
        self.omega += dw
        self.pending += dw

    def reset(self, batch_size: int) -> None:
        self.pre.reset()
        self.post.reset()
        self.omega.zero_()
        self.pending.zero_()

    def after_backward(self) -> None:
        """Flush Ω accumulated since the last call into ``.grad`` as −scale·Ω."""
        if self.scale != 0.0:
            accumulate_grad(self.tap.fc.weight, -self.scale * self.pending)
        self.pending.zero_()

    def remove(self) -> None:
        if self in self.tap.listeners:
            self.tap.listeners.remove(self)


class STDP(Rule):
    """Online pair-based STDP (eq. 5-6) on every Linear→Leaky pair; see module docstring.

    Args:
        model: the network, or None to make a configuration that :class:`Hybrid` attaches.
        A_plus, A_minus: LTP / LTD amplitudes (A− slightly > A+ keeps rates in check).
        tau_plus, tau_minus: kernel time constants, in steps.
        bound: "additive" or "soft" (soft bounds [w_min, w_max]).
        normalize: target Σ_j |w_ij| per post neuron for :meth:`normalize_`, or None.
        layers, check: pairing override and structural check (see :mod:`bimsnn.rules.base`).

    Plasticity also runs under ``torch.no_grad()`` (not under ``model.eval()``).
    After each sequence ``omegas[k]`` (H, N) holds Ω of pair k since :meth:`reset`.
    """

    plastic_without_grad = True

    def __init__(self, model: nn.Module | None = None, *, A_plus: float = 1e-2,
                 A_minus: float = 1.05e-2, tau_plus: float = 20.0, tau_minus: float = 20.0,
                 bound: str = "additive", w_min: float = -1.0, w_max: float = 1.0,
                 normalize: float | None = None, layers: Sequence[Pair] | None = None,
                 check: bool = True):
        super().__init__(model)
        if bound not in ("additive", "soft"):
            raise ValueError(f"bound must be 'additive' or 'soft', got {bound!r}")
        if not w_min < w_max:
            raise ValueError(f"need w_min < w_max, got {w_min}, {w_max}")
        for tau in (tau_plus, tau_minus):
            decay_from_tau(tau)                                  # validates τ > 0
        self.A_plus, self.A_minus = float(A_plus), float(A_minus)
        self.tau_plus, self.tau_minus = float(tau_plus), float(tau_minus)
        self.bound, self.w_min, self.w_max = bound, float(w_min), float(w_max)
        self.normalize = normalize
        self.layers: list[STDPLayer] = []
        if model is not None:
            self.bind(self._attach_taps(layers, check))
            self.handlers = [*self.layers, *self.taps]

    def bind(self, taps: Sequence[LayerTap]) -> list[STDPLayer]:
        """Subscribe to existing taps (used by Hybrid); returns the per-pair handlers."""
        for h in self.layers:
            h.remove()
        self.layers = [STDPLayer(t, self) for t in taps if t.fc is not None]
        return self.layers

    @property
    def omegas(self) -> list[Tensor]:
        return [h.omega for h in self.layers]

    def backward(self, loss_t: Tensor | None = None) -> None:
        """Flush this step's −Ω into ``.grad``. STDP is unsupervised: ``loss_t`` must be None."""
        if loss_t is not None:
            raise ValueError("STDP.backward takes no loss; combine a loss with STDP via Hybrid")
        super().backward(None)

    @torch.no_grad()
    def normalize_(self) -> None:
        """Rescale each post neuron's weights to Σ_j |w_ij| = ``normalize`` (no-op if None)."""
        if self.normalize is None:
            return
        for h in self.layers:
            w = h.tap.fc.weight
            w.mul_(self.normalize / w.abs().sum(1, keepdim=True).clamp_min(1e-12))
