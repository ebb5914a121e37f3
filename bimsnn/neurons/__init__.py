"""Leaky integrate-and-fire neurons: pure step functions, a fused multi-step op, thin modules.

Symbols: T time steps, B batch, N neurons ("..." = any further trailing dims after B).

Paper eq. 3, τ_m dV/dt = −V + R Σ_j w_ij Σ_f α(t − t_j^f) + I_ext, discretised with step Δt
(β = exp(−Δt/τ_m); R and Δt/τ_m folded into the weights w) exactly as snnTorch 1.0 does:

    R[t] = H(U[t−1] − U_thr)            reset signal = previous step's spike, *detached*
    U[t] = β U[t−1] + I[t] − R[t] U_thr  charge, then reset    ("subtract")
         = β (1 − R[t]) U[t−1] + I[t]    zero the old membrane ("zero")
         = β U[t−1] + I[t]               no reset              ("none")
    S[t] = H(U[t] − U_thr)               fire; the surrogate σ' replaces H' in backward

β is clamped to [0, 1] in the forward pass (as snnTorch does). The reset signal is detached,
so no gradient flows through it, but U_thr still receives −R[t] through the subtract term.
Leaky takes I[t] = Σ_j w_ij x_j[t] (α(t) = δ(t)); Synaptic adds an exponential synaptic current.

Public tensors are time-major: cur (T, B, ...), state (B, ...).

Modules: :mod:`.functional` (charge → fire → reset, ``lif_step``, the fused
``lif_multi_step`` with its ``_ref`` twin, the Synaptic steps) and :mod:`.modules` (the
drop-in ``Leaky`` and ``Synaptic``).
"""

from bimsnn.neurons.functional import (
    lif_charge,
    lif_fire,
    lif_multi_step,
    lif_multi_step_ref,
    lif_step,
    reset_signal,
    synaptic_multi_step,
    synaptic_step,
)
from bimsnn.neurons.modules import Leaky, Synaptic

__all__ = ["lif_charge", "lif_fire", "reset_signal", "lif_step", "lif_multi_step",
           "lif_multi_step_ref", "synaptic_step", "synaptic_multi_step", "Leaky", "Synaptic"]
