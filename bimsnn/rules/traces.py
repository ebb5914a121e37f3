"""Exponential traces: the one place traces live (read by RTRL and by STDP).

Symbols: B batch (leading dims flattened), N presynaptic width (Linear in_features),
H postsynaptic width (Linear out_features = Leaky width), k, l neuron state variables
(``mem``; ``syn``, ``mem``; ...).

A trace is a leaky running sum of a signal s(t)::

    s̄(t) = a(t) ⊙ s̄(t−1) + s(t),        s̄(−1) = 0

* STDP (paper eq. 5-6): a = exp(−1/τ±) is constant; s is the pre (post) spike train,
  so ``a·s̄(t−1)`` is Σ_{t' < t} exp(−(t − t')/τ) over earlier spikes.
* RTRL (paper eq. 7): for a Linear→Leaky layer the eligibility e_ij(t) = ∂mem_i(t)/∂w_ij
  obeys the same recursion with a = ∂mem(t)/∂mem(t−1) (= β for snnTorch's detached reset)
  and s = x_j(t), the Linear's input. That is the "pre-trace" of STDP with τ = −1/ln β.
* Neurons with several state variables (Synaptic: syn → mem) couple their traces:
  :func:`filter_step` advances e^k(t) = Σ_l J^{kl}(t) e^l(t−1) + s^k(t), with
  J^{kl} = ∂state^k_t/∂state^l_{t−1}. For Synaptic this is the two-stage filter
  e^syn ← α e^syn + x, e^mem ← β e^mem + α e^syn(t−1) + x (α then β).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor


def decay_from_tau(tau: float, dt: float = 1.0) -> float:
    """Per-step decay factor a = exp(−dt/τ) of an exponential kernel with time constant τ."""
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    return math.exp(-dt / tau)


class Trace:
    """Exponential trace ``s̄(t) = a ⊙ s̄(t−1) + s(t)`` (out-of-place, so old values stay valid).

    Args:
        decay: default factor a: a float, or a tensor broadcastable against the value.
            :meth:`update` may override it per step (RTRL's a(t) depends on the reset).

    The value starts as ``None`` (meaning zeros), so the trace takes its shape, dtype and
    device from the first signal; a signal with another batch size restarts it (a new
    sequence, as a Leaky zero-inits a membrane of the wrong shape). Broadcasting is allowed: a signal (B, 1, N) with a decay
    (B, H, 1) gives a (B, H, N) trace (RTRL with a per-neuron leak).

    Example:
        >>> tr = Trace(0.5)
        >>> for s in ([1.0], [0.0], [1.0]):
        ...     v = tr.update(torch.tensor(s))
        >>> v                      # 0.25 + 1
        tensor([1.2500])
    """

    def __init__(self, decay: float | Tensor | None = None):
        self.decay = decay
        self.value: Tensor | None = None

    def reset(self) -> None:
        """Zero the trace (start of a sequence)."""
        self.value = None

    def decayed(self, decay: float | Tensor | None = None) -> Tensor | None:
        """``a ⊙ s̄(t−1)``: the trace carried to the current step, before adding s(t)."""
        a = self.decay if decay is None else decay
        if self.value is None:
            return None
        return self.value * a

    @torch.no_grad()
    def update(self, s: Tensor, decay: float | Tensor | None = None) -> Tensor:
        """Advance one step with signal ``s`` and return the new value ``a ⊙ s̄ + s``."""
        prev = self.decayed(decay)
        if prev is not None and prev.shape[0] != s.shape[0]:
            prev = None          # new batch shape = new sequence (as the Leaky zero-inits)
        self.value = s.detach().clone() if prev is None else prev + s.detach()
        return self.value


Coef = float | Tensor


@torch.no_grad()
def filter_step(e: Mapping[str, Tensor | None], J: Mapping[tuple[str, str], Coef],
                drive: Mapping[str, Tensor | tuple | None]) -> dict[str, Tensor | None]:
    """One step of a coupled linear filter, out of place (old traces stay valid)::

        e^k(t) = Σ_l J[k, l] ⊙ e^l(t−1) + drive^k(t)          (None stands for zeros)

    Args:
        e: previous traces, one per state k (any common shape; None = zeros).
        J: coefficients ∂state^k_t/∂state^l_{t−1} keyed (k, l); floats or tensors that
            broadcast against the traces. Missing keys are zero.
        drive: this step's immediate term per state k: a tensor, a pair (a, b) meaning
            a ⊙ b (fused into the sum), or None (zero). A tensor drive may become part of
            the new traces without a copy: pass fresh tensors.
    Returns:
        the new traces, keyed like ``e`` (None where everything was zero). Traces are never
        modified in place, so a graph that saved e(t−1) stays valid.

    Example (Synaptic, α = 0.5, β = 0.9: one input at t = 0 reaches mem at t = 0 and 1):
        >>> J = {("syn", "syn"): 0.5, ("mem", "mem"): 0.9, ("mem", "syn"): 0.5}
        >>> e = filter_step({"syn": None, "mem": None}, J,
        ...                 {"syn": torch.ones(1), "mem": torch.ones(1)})
        >>> e = filter_step(e, J, {"syn": None, "mem": None})
        >>> [round(float(e[k]), 3) for k in ("syn", "mem")]     # 0.5, 0.9 + 0.5
        [0.5, 1.4]
    """
    out: dict[str, Tensor | None] = {}
    for k in e:
        acc = None
        for (k2, l), coef in J.items():
            if k2 == k and e.get(l) is not None:
                term = e[l] * coef                                   # a fresh tensor
                acc = term if acc is None else _add(acc, term)
        d = drive.get(k)
        if isinstance(d, tuple):
            a, b = d
            if acc is None or not isinstance(a, Tensor) or not _fits(acc, a, b):
                d = a * b
            else:
                acc.addcmul_(a, b)
                d = None
        if d is not None:
            acc = d if acc is None else _add(acc, d)
        out[k] = acc
    return out


def _fits(acc: Tensor, *xs: Tensor) -> bool:
    """True if every x broadcasts to acc's shape without enlarging it."""
    n = acc.dim()
    for x in xs:
        if x.dim() > n or any(d != 1 and d != acc.shape[n - x.dim() + i]
                              for i, d in enumerate(x.shape)):
            return False
    return True


def _add(acc: Tensor, x: Tensor) -> Tensor:
    """acc + x, in place when acc (a tensor this step created) already has the result's shape."""
    return acc.add_(x) if isinstance(x, Tensor) and _fits(acc, x) else acc + x
