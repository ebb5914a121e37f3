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

λ may be one float, a sequence with one λ per Linear→Leaky pair (see ``rule.pairs``), or a
dict {module: λ}: a pair is looked up by its Linear or its Leaky, any other module sets
λ for its own parameters. With a float, λ scales the gradient of *every* parameter
(eq. 4 literally: λ = 0 trains nothing but STDP); with a sequence or dict, unlisted
parameters get λ = 1 (plain gradient; give a readout λ = 1 this way).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from bimsnn.rules.base import Pair, Rule
from bimsnn.rules.rtrl import LeakyRTRL, _ssm_handlers
from bimsnn.rules.stdp import STDP


def _check_lam(v: float) -> float:
    v = float(v)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"λ must lie in [0, 1], got {v}")
    return v


class Hybrid(Rule):
    """λ·gradient − (1 − λ)·STDP into ``.grad`` (eq. 4); see module docstring.

    Args:
        model: the network (Linear→Leaky pairs, as for :class:`~bimsnn.rules.rtrl.RTRL`).
        lam: λ, a float, per-pair sequence, or {module: λ} dict.
        stdp: an :class:`STDP` giving amplitudes, time constants and bounds; either
            unattached (``STDP(A_plus=...)``) or attached to this same model, in which case
            Hybrid takes it over (its hooks are replaced by Hybrid's). Default ``STDP()``.
        grad: "rtrl" or "autograd".
        layers, check: pairing override and structural check (see :mod:`bimsnn.rules.base`).

    ``rule.stdp.omegas`` holds each pair's Ω since the last :meth:`reset`.
    """

    def __init__(self, model: nn.Module, lam: float | Sequence[float] | Mapping = 0.5,
                 stdp: STDP | None = None, grad: str = "rtrl",
                 layers: Sequence[Pair] | None = None, check: bool = True):
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
                self.grad_handlers = [LeakyRTRL(t) for t in taps if t.fc is not None]
                self.grad_handlers += _ssm_handlers(self, model)
            self.stdp, self.grad = stdp, grad
            self.stdp_layers = stdp.bind(taps)
            self._set_lam(lam)
        except Exception:
            self.remove()
            raise
        self.handlers = [*self.grad_handlers, *self.stdp_layers, *taps]

    def _set_lam(self, lam) -> None:
        pairs = self.pairs
        params = list(self.model.parameters())
        if isinstance(lam, Mapping):
            per_param = {}
            for m, v in lam.items():
                for p in m.parameters():
                    per_param[p] = _check_lam(v)
            pair_lam = [_check_lam(lam.get(fc, lam.get(lif, 1.0))) for fc, lif in pairs]
        elif isinstance(lam, Sequence):
            if len(lam) != len(pairs):
                raise ValueError(f"lam has {len(lam)} entries for {len(pairs)} pairs")
            per_param, pair_lam = {}, [_check_lam(v) for v in lam]
        else:
            v = _check_lam(lam)
            per_param, pair_lam = {p: v for p in params}, [v] * len(pairs)
        for (fc, lif), v in zip(pairs, pair_lam):
            for p in (*fc.parameters(), *lif.parameters()):
                per_param[p] = v
        for layer, v in zip(self.stdp_layers, pair_lam):
            layer.scale = 1.0 - v
        self.pair_lam = pair_lam
        lams = {per_param.get(p, 1.0) for p in params}
        # One λ for all: scale the loss. Mixed: rescale each step's gradient increment.
        self._uniform = lams.pop() if len(lams) == 1 else None
        self._scaled = [(p, per_param.get(p, 1.0)) for p in params
                        if per_param.get(p, 1.0) != 1.0]

    def backward(self, loss_t: Tensor | None) -> None:
        """Add λ·∂L_t/∂w − (1 − λ)·Ω_t to ``.grad`` (either term may be absent)."""
        self._warn_if_blind()
        if loss_t is not None:
            if self._uniform is not None:
                (loss_t if self._uniform == 1.0 else self._uniform * loss_t).backward()
                for h in self.grad_handlers:
                    h.after_backward()
            else:
                before = [(p, v, None if p.grad is None else p.grad.clone())
                          for p, v in self._scaled]
                loss_t.backward()
                for h in self.grad_handlers:
                    h.after_backward()
                with torch.no_grad():
                    for p, v, g0 in before:
                        if p.grad is None:
                            continue
                        if g0 is None:
                            p.grad.mul_(v)
                        else:
                            p.grad.sub_(g0).mul_(v).add_(g0)
        else:
            for h in self.grad_handlers:
                h.after_backward()
        for h in self.stdp_layers:
            h.after_backward()
        for t in self.taps:
            t.after_backward()
