"""Hybrid rule (paper eq. 4): a gradient term and STDP, mixed by λ.

Symbols: λ ∈ [0, 1] mixing weight, L loss, Ω STDP update of eq. 5 (:mod:`bimsnn.rules.stdp`),
η learning rate.

Eq. 4 reads Δw = η(λ·(−∂L/∂w) + (1 − λ)·Ω). The rule writes::

    w.grad += λ·∂L/∂w − (1 − λ)·Ω

so that any optimizer stepping ``w -= η·grad`` (SGD) descends L *and* applies STDP
potentiation (Ω > 0 increases w). ∂L/∂w is the online RTRL gradient of
:mod:`bimsnn.rules.rtrl` (``grad="rtrl"``, with SSM traces through ``ssm_handlers``) or
plain within-step autograd with the carried state detached and no traces
(``grad="autograd"``, the cheapest online gradient, truncated to one step; it installs no
SSM handlers, so SpikingMamba state must then be detached by the caller).

λ may be one float, a sequence with one λ per connection→neuron pair (see ``rule.pairs``),
or a dict {module: λ}: a pair is looked up by its connection or its neuron (a recurrent
neuron's own weights follow its pair), any other module sets
λ for its own parameters. With a float, λ scales the gradient of *every* parameter
(eq. 4 literally: λ = 0 trains nothing but STDP); with a sequence or dict, unlisted
parameters get λ = 1 (plain gradient; give a readout λ = 1 this way).

Units. Ω is in A± units and ∂L/∂w in loss units, so how much λ mixes depends on A±, the
loss scale and the optimizer: under Adam, which normalises each weight's update, an
STDP term far larger than a weight's gradient sets that weight's direction whatever λ
(measured: docs/rules_support.md). ``balance=True`` makes λ a share of the
update norm instead. Per connection weight W and per sequence (since :meth:`reset`), with
G = Σ_t ∂L_t/∂W and Ω = Σ_t Ω_t, ``.grad`` then holds::

    λ·G − (1 − λ)·‖G‖·Ω/‖Ω‖                                            (after every step)

so the STDP term keeps Ω's direction and timing structure but has norm (1 − λ)·‖G‖, and
λ = 0.5 gives both terms equal norm. Earlier steps' writes are rescaled as ‖G‖ and ‖Ω‖
grow (the rule writes the difference), so ``.grad`` is the formula above after each step.
It needs λ > 0 on every pair (‖G‖ is measured through the λ-scaled gradient).
Balance fixes the *norm* share, not Adam's per-weight normalisation: an STDP direction
that keeps its sign across batches (Hebbian growth) still earns full-size Adam steps
while the gradient's sign fluctuates (docs/rules_support.md); with SGD the mix is exactly λ.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from bimsnn.rules.base import Pair, Rule, accumulate_grad
from bimsnn.rules.rtrl import LayerRTRL, _ssm_handlers
from bimsnn.rules.stdp import STDP

BALANCE = ("norm", "element")


def balance_mode(balance) -> str | None:
    """``balance`` argument → None (off: eq. 4 literally), "norm" (True) or "element"."""
    if balance in (False, None, "off", "none"):
        return None
    mode = "norm" if balance is True else balance
    if mode not in BALANCE:
        raise ValueError(f"balance must be False, True, 'norm' or 'element', got {balance!r}")
    return mode


@torch.no_grad()
def balanced_stdp(G: Tensor, omega: Tensor, lam: float, mode: str) -> Tensor | None:
    """The STDP part of ``.grad`` under ``balance`` for one weight (eq. 4 with λ a share).

    Args:
        G: λ·Σ_t ∂L_t/∂W so far this sequence. omega: Ω so far (eq. 5). lam: λ ∈ (0, 1).
        mode: "norm": −(1 − λ)/λ·‖G‖·Ω/‖Ω‖, the STDP term has norm (1 − λ)·‖∂L/∂W‖;
            "element": −(1 − λ)/λ·``|G|`` ⊙ Ω/max|Ω|, every weight's STDP term is at most
            (1 − λ)/λ of its own gradient term, in proportion to its Ω: under an adaptive
            optimizer (Adam) a weight with no gradient gets no STDP step either, so a
            sign-stable Ω cannot drive full-size steps where the loss is silent.
    Returns:
        the target (shape of W), or None where Ω is zero.
    """
    if mode == "norm":
        n = omega.norm()
        return None if n == 0 else omega * (-(1.0 - lam) / lam * G.norm() / n)
    m = omega.abs().max()
    return None if m == 0 else G.abs() * omega * (-(1.0 - lam) / lam / m)


def _check_lam(v: float) -> float:
    v = float(v)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"λ must lie in [0, 1], got {v}")
    return v


class LambdaMix:
    """λ bookkeeping shared by :class:`Hybrid` and the chunked Hybrid: per-parameter λ
    (eq. 4), the λ-scaled backward of a loss, and the balanced STDP write. The host has
    ``model``, ``pairs``, ``stdp_layers`` (each with ``weight``, ``omega``, ``scale`` and
    ``tap.lif``) and calls :meth:`_init_balance` after :meth:`_set_lam`."""

    def _set_lam(self, lam) -> None:
        pairs = self.pairs
        params = list(self.model.parameters())
        if isinstance(lam, Mapping):
            per_param = {p: _check_lam(v) for m, v in lam.items() for p in m.parameters()}
            pair_lam = [_check_lam(lam.get(fc, lam.get(lif, 1.0))) for fc, lif in pairs]
        elif isinstance(lam, Sequence):
            if len(lam) != len(pairs):
                raise ValueError(f"lam has {len(lam)} entries for {len(pairs)} pairs")
            per_param, pair_lam = {}, [_check_lam(v) for v in lam]
        else:
            v = _check_lam(lam)
            per_param, pair_lam = dict.fromkeys(params, v), [v] * len(pairs)
        for (fc, lif), v in zip(pairs, pair_lam):
            for p in (*fc.parameters(), *lif.parameters()):
                per_param[p] = v
        tap_lam = {id(lif): v for (_, lif), v in zip(pairs, pair_lam)}
        self.layer_lam = [tap_lam[id(layer.tap.lif)] for layer in self.stdp_layers]
        for layer, v in zip(self.stdp_layers, self.layer_lam):
            layer.scale = 1.0 - v
        self.pair_lam = pair_lam
        lams = {per_param.get(p, 1.0) for p in params}
        # One λ for all: scale the loss. Mixed: rescale each backward's gradient increment.
        self._uniform = lams.pop() if len(lams) == 1 else None
        self._scaled = [(p, per_param.get(p, 1.0)) for p in params
                        if per_param.get(p, 1.0) != 1.0]

    @property
    def omegas(self) -> list[Tensor]:
        """Each pair's Ω (eq. 5) since the last ``reset``, (out, in) per pair: the same
        list for the per-step and the chunked Hybrid."""
        return [h.omega for h in self.stdp_layers]

    def _init_balance(self, balance) -> None:
        self.balance = balance_mode(balance)
        if not self.balance:
            return
        if min(self.pair_lam, default=1.0) <= 0.0:
            raise ValueError("balance=True needs λ > 0 on every pair: ‖G‖ is read "
                             "from the λ-scaled gradient")
        for layer in self.stdp_layers:
            layer.scale = 0.0          # Ω still accumulates; the balanced write replaces it
        self._G = [torch.zeros_like(h.omega) for h in self.stdp_layers]   # λ·G
        self._S = [torch.zeros_like(h.omega) for h in self.stdp_layers]   # written

    def reset(self, batch_size: int) -> None:
        super().reset(batch_size)
        if self.balance:
            for g, s in zip(self._G, self._S):
                g.zero_()
                s.zero_()

    def _mix_backward(self, loss: Tensor | None, after=()) -> None:
        """Add λ·∂L/∂w − (1 − λ)·Ω to ``.grad`` (either term may be absent; ``balance``
        rescales the STDP part), then let the handlers in ``after`` finish the step."""
        self._warn_if_blind()
        g_before = self._grads_before()
        if loss is not None:
            self._lam_backward(loss)
        for h in self.grad_handlers:
            h.after_backward()
        if self.balance:
            self._write_balanced(g_before)
        for h in (*self.stdp_layers, *after):
            h.after_backward()

    def _grads_before(self) -> list:
        """``.grad`` of the STDP weights before a backward (balance tracks λ·G from it)."""
        if not self.balance:
            return []
        return [None if h.weight.grad is None else h.weight.grad.detach().clone()
                for h in self.stdp_layers]

    def _lam_backward(self, loss: Tensor) -> None:
        """``loss.backward()`` with each parameter's gradient increment scaled by its λ."""
        if self._uniform is not None:
            (loss if self._uniform == 1.0 else self._uniform * loss).backward()
            return
        before = [(p, v, None if p.grad is None else p.grad.clone()) for p, v in self._scaled]
        loss.backward()
        with torch.no_grad():
            for p, v, g0 in before:
                if p.grad is None:
                    continue
                if g0 is None:
                    p.grad.mul_(v)
                else:
                    p.grad.sub_(g0).mul_(v).add_(g0)

    @torch.no_grad()
    def _write_balanced(self, g_before: list) -> None:
        """Track λ·G per pair weight, then set its STDP part of ``.grad`` to
        :func:`balanced_stdp`'s target by writing the change since the last call."""
        for k, (g0, h) in enumerate(zip(g_before, self.stdp_layers)):
            w = h.weight
            if w.grad is not None:
                self._G[k] += w.grad if g0 is None else w.grad - g0
            lam = self.layer_lam[k]
            target = None if lam >= 1.0 else balanced_stdp(self._G[k], h.omega, lam,
                                                              self.balance)
            if target is None:
                continue
            accumulate_grad(w, target - self._S[k])
            self._S[k].copy_(target)


class Hybrid(LambdaMix, Rule):
    """λ·gradient − (1 − λ)·STDP into ``.grad`` (eq. 4); see module docstring.

    Args:
        model: the network (connection→neuron pairs, as for :class:`~bimsnn.rules.rtrl.RTRL`).
        lam: λ, a float, per-pair sequence, or {module: λ} dict.
        stdp: an :class:`STDP` giving amplitudes, time constants and bounds; either
            unattached (``STDP(A_plus=...)``) or attached to this same model, in which case
            Hybrid takes it over (its hooks are replaced by Hybrid's). Default ``STDP()``.
        grad: "rtrl" or "autograd".
        chunk: K steps per chunk: returns a :class:`~bimsnn.rules.chunked.ChunkedHybrid`
            (same λ, STDP and ``balance`` semantics, written after every chunk).
        balance: False (eq. 4 literally), True or "norm" (the STDP term rescaled to
            (1 − λ)·‖G‖ per pair weight and sequence, see the module docstring) or
            "element" (per weight element: at most (1 − λ)/λ of that weight's own
            gradient term; :func:`balanced_stdp`).
        layers, check: pairing override and structural check (see :mod:`bimsnn.rules.base`).
        pool_traces: RTRL's trace layout with max pooling before a neuron (see
            :mod:`bimsnn.rules.rtrl`).

    ``rule.omegas`` (also ``rule.stdp.omegas``) holds each pair's Ω since the last :meth:`reset`.
    """

    def __new__(cls, model: nn.Module, *args, chunk: int | None = None, **kw):
        if chunk is not None:
            from bimsnn.rules.chunked import ChunkedHybrid

            kw.pop("pool_traces", None)           # chunked rules: Linear→Leaky pairs only
            return ChunkedHybrid(model, chunk, *args, **kw)
        return super().__new__(cls)

    def __init__(self, model: nn.Module, lam: float | Sequence[float] | Mapping = 0.5,
                 stdp: STDP | None = None, grad: str = "rtrl",
                 layers: Sequence[Pair] | None = None, check: bool = True,
                 balance: bool = False, pool_traces: str = "exact", chunk: None = None):
        super().__init__(model)
        if grad not in ("rtrl", "autograd"):
            raise ValueError(f"grad must be 'rtrl' or 'autograd', got {grad!r}")
        stdp = STDP() if stdp is None else stdp
        if stdp.model is not None:
            if stdp.model is not model:
                raise ValueError("stdp is attached to another model")
            stdp.remove()
        taps = self._attach_taps(layers, check)
        try:
            self.grad_handlers: list = []
            if grad == "rtrl":
                self.grad_handlers = [LayerRTRL(t, pool_traces) for t in taps
                                      if t.fc is not None]
                self.grad_handlers += _ssm_handlers(self, model)
            self.stdp, self.grad = stdp, grad
            self.stdp_layers = stdp.bind(taps)
            self._set_lam(lam)
            self._init_balance(balance)
        except Exception:
            self.remove()
            raise
        self.handlers = [*self.grad_handlers, *self.stdp_layers, *taps]

    def backward(self, loss_t: Tensor | None) -> None:
        """Add λ·∂L_t/∂w − (1 − λ)·Ω_t to ``.grad`` (either term may be absent); with
        ``balance``, the STDP part is rescaled as in the module docstring."""
        self._mix_backward(loss_t, self.taps)
