"""Exponential traces: the one place traces live (read by RTRL and by STDP).

Symbols: B batch (leading dims flattened), N presynaptic width (Linear in_features),
H postsynaptic width (Linear out_features = Leaky width).

A trace is a leaky running sum of a signal s(t)::

    s̄(t) = a(t) ⊙ s̄(t−1) + s(t),        s̄(−1) = 0

* STDP (paper eq. 5-6): a = exp(−1/τ±) is constant; s is the pre (post) spike train,
  so ``a·s̄(t−1)`` is Σ_{t' < t} exp(−(t − t')/τ) over earlier spikes.
* RTRL (paper eq. 7): for a Linear→Leaky layer the eligibility e_ij(t) = ∂mem_i(t)/∂w_ij
  obeys the same recursion with a = ∂mem(t)/∂mem(t−1) (= β for snnTorch's detached reset)
  and s = x_j(t), the Linear's input. That is the "pre-trace" of STDP with τ = −1/ln β.
"""

from __future__ import annotations

import math

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
