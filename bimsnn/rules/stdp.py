"""Pair-based STDP (paper eq. 5-6), online with exponential traces, on any connection.

Symbols: B batch (leading dims flattened for Linear), N presynaptic width, H postsynaptic
width, i post, j pre, W the connection weight, T time, d± = exp(−1/τ±).

Eq. 5-6, summed over every pair of a post spike t_i and a pre spike t_j of a sequence::

    Ω_ij = Σ_{t_i} Σ_{t_j} W(t_i − t_j),   W(Δ) = A+ exp(−Δ/τ+)  for Δ ≥ 0   (pre before post)
                                           W(Δ) = −A− exp(Δ/τ−)  for Δ < 0   (post before pre)

:func:`stdp_window` is W(Δ); :func:`stdp_omega_ref` evaluates the double sum literally.
Online (:func:`stdp_step`, the pure step the handlers call), with the traces of
:mod:`bimsnn.rules.traces`::

    x̄_j(t) = d+ x̄_j(t−1) + x_j(t)                pre-trace, *includes* step t
    Ω_ij  += A+ s_i(t) x̄_j(t)                      LTP: every pre spike at t_j ≤ t
    Ω_ij  −= A− d− ȳ_i(t−1) x_j(t)                 LTD: every post spike at t_i < t
    ȳ_i(t) = d− ȳ_i(t−1) + s_i(t)                  post-trace

so a same-step pair counts once, as W(0) = A+ (Δ ≥ 0), and the sum equals eq. 5 exactly.
Pre activity x is the connection's input, post activity s the neuron's output spikes;
graded values enter as spike amplitudes. Ω is *averaged over the batch* (divided by B).

Connections: "i, j connected" is whatever W connects (:meth:`Connection.outer`). For a
conv, Ω[o, c, k] sums over every (output position p, input position p + k) pair: the
pre-trace lives on the input map, the post-trace on the output map, and each step is one
``conv2d_weight`` call (two with soft bounds). With pooling between the conv and its
neuron, a post spike pairs with the input patch its pooling window read at the later
spike's step (max pooling: the selected position). Recurrent neurons (RLeaky, RSynaptic):
the recurrent weights pair s(t) with the previous step's spikes s(t−1), their input; the
one-to-one weight V gets no STDP.

Variants (``bound``)::

    "additive": as above.
    "soft": weight-dependent soft bounds, LTP ∝ (w_max − w_ij), LTD ∝ (w_ij − w_min),
        with w the weight at the step the pair completes: weights stay in [w_min, w_max]
        for small enough steps (van Rossum et al. 2000).

Sign convention: ``.grad -= Ω`` (``STDP.backward``) so that SGD's ``w -= η·grad`` gives
Δw = +η·Ω (potentiation increases w). Usable alone, unsupervised (``backward(None)``).
Homeostasis: none built in; ``normalize=c`` makes :meth:`STDP.normalize_` rescale each
post unit's incoming weights to Σ_j ``|w_ij|`` = c (Diehl & Cook 2015), call it after
``opt.step()``. Only weights learn (not biases).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from bimsnn.rules.base import Pair, Rule, accumulate_grad
from bimsnn.rules.connections import Connection, LinearConn, Route
from bimsnn.rules.taps import LayerTap
from bimsnn.rules.traces import Trace, decay_from_tau


def stdp_window(dt, A_plus: float, tau_plus: float, A_minus: float, tau_minus: float):
    """Eq. 6: W(Δt) = A+ exp(−Δt/τ+) for Δt ≥ 0, −A− exp(Δt/τ−) for Δt < 0.

    ``dt`` a tensor (returns a tensor) or anything numpy takes (returns an ndarray).

    Example:
        >>> stdp_window([-1.0, 0.0, 2.0], 1.0, 2.0, 0.5, 1.0).round(3).tolist()
        [-0.184, 1.0, 0.368]
    """
    if isinstance(dt, Tensor):
        return torch.where(dt >= 0, A_plus * torch.exp(-dt.clamp_min(0) / tau_plus),
                           -A_minus * torch.exp(dt.clamp_max(0) / tau_minus))
    dt = np.asarray(dt, dtype=float)
    with np.errstate(over="ignore"):   # the unused branch of where() may overflow
        return np.where(dt >= 0, A_plus * np.exp(-dt / tau_plus),
                        -A_minus * np.exp(dt / tau_minus))


class STDPState(NamedTuple):
    """Traces carried by :func:`stdp_step`: x̄ (pre shape) and ȳ (post shape), or None."""

    pre: Tensor | None = None
    post: Tensor | None = None


def linear_outer(pre: Tensor, post: Tensor) -> Tensor:
    """Σ_b post_b ⊗ pre_b: pre (B, N), post (B, H) → (H, N) (a Linear's pairs)."""
    return post.t() @ pre


def stdp_step(pre: Tensor, post: Tensor, state: STDPState | None = None, *,
              A_plus: float = 1e-2, A_minus: float = 1.05e-2, tau_plus: float = 20.0,
              tau_minus: float = 20.0, outer: Callable[[Tensor, Tensor], Tensor] = linear_outer,
              bound: str = "additive", w: Tensor | None = None, w_min: float = -1.0,
              w_max: float = 1.0) -> tuple[Tensor, STDPState]:
    """One online step of eq. 5 (module docstring): state in, (ΔΩ_t, state) out.

    Args:
        pre: presynaptic activity x(t) (B, ...); post: postsynaptic spikes s(t) (B, ...).
        state: traces from the previous step (None or empty: a new sequence; a batch size
            that differs from the traces' also starts one).
        outer: ``outer(pre, post)`` = Σ over the batch (and positions) of post ⊗ pre over
            connected pairs; additive runs it once, on the batch-concatenated pairs.
        bound: "additive" or "soft" (needs ``w``, the current weight).
    Returns:
        ΔΩ_t (weight shape, batch mean) and the new :class:`STDPState`.

    Example (one pre spike at t = 0, one post spike at t = 2: LTP A+ exp(−2/τ+)):
        >>> x, s = torch.tensor([[1.0], [0.0], [0.0]]), torch.tensor([[0.0], [0.0], [1.0]])
        >>> st, total = None, 0.0
        >>> for t in range(3):
        ...     dw, st = stdp_step(x[t:t + 1], s[t:t + 1], st, A_plus=1.0, tau_plus=2.0)
        ...     total = total + dw
        >>> round(float(total), 4)                              # exp(−1)
        0.3679
    """
    d_plus, d_minus = decay_from_tau(tau_plus), decay_from_tau(tau_minus)
    st = state or STDPState()
    if st.pre is not None and st.pre.shape != pre.shape:
        st = STDPState()                          # new batch shape = new sequence
    B = pre.shape[0]
    xbar = pre.clone() if st.pre is None else d_plus * st.pre + pre
    ybar_prev = st.post
    if bound == "soft":
        if w is None:
            raise ValueError("soft bounds need the current weight w")
        dw = A_plus * (w_max - w) * outer(xbar, post) / B
        if ybar_prev is not None:
            dw = dw - A_minus * (w - w_min) * outer(pre, d_minus * ybar_prev) / B
    elif ybar_prev is None:
        dw = A_plus * outer(xbar, post) / B
    else:                                        # LTP and LTD in one outer call
        dw = outer(torch.cat([xbar, pre]),
                   torch.cat([A_plus * post, -A_minus * d_minus * ybar_prev])) / B
    ybar = post.clone() if ybar_prev is None else d_minus * ybar_prev + post
    return dw, STDPState(xbar, ybar)


def stdp_omega_ref(pre_spikes: Tensor, post_spikes: Tensor, *, A_plus: float = 1e-2,
                   A_minus: float = 1.05e-2, tau_plus: float = 20.0, tau_minus: float = 20.0,
                   bound: str = "additive", w: Tensor | None = None, w_min: float = -1.0,
                   w_max: float = 1.0) -> Tensor:
    """Eq. 5 literally: Ω_ij = Σ_{t_i} Σ_{t_j} s_i(t_i) x_j(t_j) W(t_i − t_j), batch mean.

    The reference twin of the online rule (:func:`stdp_step` summed over a sequence): every
    pair of time steps is weighted by :func:`stdp_window`, no trace is involved. O(T²·H·N·B).

    Args:
        pre_spikes: (T, B, N); post_spikes: (T, B, H) (graded values are amplitudes).
        bound: "additive", or "soft" with a fixed weight ``w`` (H, N) (the weight at the
            step each pair completes, if the optimizer does not step within the sequence).
    Returns:
        Ω (H, N), in pre_spikes' dtype (float64 recommended).
    """
    T, B = pre_spikes.shape[:2]
    t = torch.arange(T, dtype=torch.float64, device=pre_spikes.device)
    dt = t[:, None] - t[None, :]                                  # (T, T): t_i − t_j
    win = stdp_window(dt, A_plus, tau_plus, A_minus, tau_minus).to(pre_spikes.dtype)
    pre, post = pre_spikes, post_spikes.to(pre_spikes.dtype)
    ltp = torch.einsum("ibh,ij,jbn->hn", post, torch.where(dt >= 0, win, 0), pre) / B
    ltd = torch.einsum("ibh,ij,jbn->hn", post, torch.where(dt < 0, -win, 0), pre) / B
    if bound == "soft":
        return (w_max - w) * ltp - (w - w_min) * ltd
    return ltp - ltd


class STDPLayer:
    """Traces and Ω of one connection (feed-forward or recurrent) of a tap (a Handler).

    ``state`` is the :class:`STDPState` that :func:`stdp_step` carries; ``pre`` / ``post``
    show the same traces as :class:`~bimsnn.rules.traces.Trace` objects (``.value``).
    """

    def __init__(self, tap: LayerTap, stdp: STDP, conn: Connection, recurrent: bool = False):
        self.tap, self.cfg, self.conn, self.recurrent = tap, stdp, conn, recurrent
        self.state = STDPState()
        self.pre = Trace(decay_from_tau(stdp.tau_plus))
        self.post = Trace(decay_from_tau(stdp.tau_minus))
        self.omega = torch.zeros_like(conn.weight, requires_grad=False)       # since reset
        self.pending = torch.zeros_like(self.omega)                          # since flush
        self.scale = 1.0               # (1 − λ) under Hybrid: .grad -= scale·Ω
        tap.listeners.append(self)

    @property
    def weight(self) -> Tensor:
        return self.conn.weight

    @torch.no_grad()
    def on_step(self, tap: LayerTap) -> None:
        c, conn = self.cfg, self.conn
        if self.recurrent:
            pre, route = tap.state("spk"), None
        else:
            pre, route = tap.x, tap.route
        post = tap.spk.to(pre.dtype)
        if isinstance(conn, LinearConn):
            pre, post, outer = pre.reshape(-1, conn.F), post.reshape(-1, conn.O), linear_outer
        else:
            route = route or Route("id", conn.O, 0)
            B = post.shape[0]

            def outer(x, s):
                g = torch.cat([route.T(conn.canon(part)) for part in s.split(B)])
                return conn.outer(x, g)

        dw, self.state = stdp_step(pre, post, self.state, A_plus=c.A_plus, A_minus=c.A_minus,
                                   tau_plus=c.tau_plus, tau_minus=c.tau_minus, outer=outer,
                                   bound=c.bound, w=conn.weight.detach().to(pre.dtype),
                                   w_min=c.w_min, w_max=c.w_max)
        self.pre.value, self.post.value = self.state
        dw = dw.to(self.omega.dtype)
        self.omega += dw
        self.pending += dw

    def reset(self, batch_size: int) -> None:
        self.state = STDPState()
        self.pre.reset()
        self.post.reset()
        self.omega.zero_()
        self.pending.zero_()

    def after_backward(self) -> None:
        """Flush Ω accumulated since the last call into ``.grad`` as −scale·Ω."""
        if self.scale != 0.0:
            accumulate_grad(self.conn.weight, -self.scale * self.pending)
        self.pending.zero_()

    def remove(self) -> None:
        if self in self.tap.listeners:
            self.tap.listeners.remove(self)


class STDP(Rule):
    """Online pair-based STDP (eq. 5-6) on every connection→neuron pair; see module docstring.

    Args:
        model: the network, or None to make a configuration that :class:`Hybrid` attaches.
        A_plus, A_minus: LTP / LTD amplitudes (A− slightly > A+ keeps rates in check).
        tau_plus, tau_minus: kernel time constants, in steps.
        bound: "additive" or "soft" (soft bounds [w_min, w_max]).
        normalize: target Σ_j ``|w_ij|`` per post unit for :meth:`normalize_`, or None.
        layers, check: pairing override and structural check (see :mod:`bimsnn.rules.base`).
        chunk: with a model, K steps per chunk: returns a
            :class:`~bimsnn.rules.chunked.ChunkedSTDP` (the same Ω, computed per chunk).

    Plasticity also runs under ``torch.no_grad()`` (not under ``model.eval()``).
    After each sequence ``omegas[k]`` holds Ω of connection k since :meth:`reset` (one per
    pair, plus one per recurrent weight, in order).
    """

    plastic_without_grad = True

    def __new__(cls, model: nn.Module | None = None, *, chunk: int | None = None,
                layers: Sequence[Pair] | None = None, check: bool = True, **kw):
        if chunk is not None and model is not None:
            from bimsnn.rules.chunked import ChunkedSTDP

            return ChunkedSTDP(model, chunk, layers=layers, check=check, **kw)
        return super().__new__(cls)

    def __init__(self, model: nn.Module | None = None, *, A_plus: float = 1e-2,
                 A_minus: float = 1.05e-2, tau_plus: float = 20.0, tau_minus: float = 20.0,
                 bound: str = "additive", w_min: float = -1.0, w_max: float = 1.0,
                 normalize: float | None = None, layers: Sequence[Pair] | None = None,
                 check: bool = True, chunk: int | None = None):
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
        """Subscribe to existing taps (used by Hybrid); returns the per-connection handlers."""
        for h in self.layers:
            h.remove()
        self.layers = []
        for t in taps:
            if t.fc is None:
                continue
            self.layers.append(STDPLayer(t, self, t.conn))
            if t.rec is not None and t.rec.weight.requires_grad:
                self.layers.append(STDPLayer(t, self, t.rec, recurrent=True))
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
        """Rescale each post unit's weights to Σ_j ``|w_ij|`` = ``normalize`` (no-op if None)."""
        if self.normalize is None:
            return
        for h in self.layers:
            w = h.weight
            norm = w.abs().flatten(1).sum(1).clamp_min(1e-12)
            w.mul_((self.normalize / norm).reshape(-1, *[1] * (w.dim() - 1)))
