"""snnTorch-compatible neuron modules: :class:`Leaky` and :class:`Synaptic`, thin wrappers
around the step functions of :mod:`bimsnn.neurons.functional` (paper eq. 3).

Symbols: T time steps, B batch, N neurons. Public tensors are time-major: cur (T, B, ...).
"""

from __future__ import annotations

import warnings

import snntorch as snn
import torch
from torch import Tensor

from bimsnn.neurons.functional import (
    _lif_step,
    _synaptic_step,
    lif_multi_step,
    synaptic_multi_step,
)
from bimsnn.surrogate import ATan

__all__ = ["Leaky", "Synaptic"]


def _fresh_or_raise(name: str, state: Tensor, like: Tensor) -> Tensor:
    """An all-zero state of another shape (e.g. ``init_leaky()`` → zeros(0), or the zeroed
    state of a previous, larger batch) means "fresh": use zeros, as snnTorch does. A non-zero
    state of the wrong shape is a bug, which snnTorch would silently discard: raise instead."""
    if state.numel() == 0 or not bool(state.detach().any()):
        return torch.zeros_like(like)
    raise ValueError(f"{name}: expected shape {tuple(like.shape)} (same as input_), got "
                     f"{tuple(state.shape)}")


def _exotic(m: snn.SpikingNeuron) -> bool:
    """Options that only snnTorch's own forward implements."""
    return bool(m.inhibition or m.state_quant or not m.reset_delay)


class Leaky(snn.Leaky):
    """Drop-in ``snntorch.Leaky`` (first-order LIF, eq. 3 with α(t) = δ(t)) plus a fused path.

    It *is* an ``snn.Leaky`` (subclass): same constructor, buffers/parameters (beta, threshold,
    mem), ``init_leaky()``, ``reset_mem()``, ``init_hidden``/``output`` modes, and
    ``snntorch.utils.reset``. ``forward(input_, mem)`` is an ordinary per-step module call, so
    forward (pre-)hooks see and may replace ``mem``. Differences from snnTorch:

    * the default surrogate is :func:`bimsnn.surrogate.atan` (same numbers as snnTorch's);
    * spikes take the input's dtype (snnTorch: always float32);
    * an explicit ``mem`` of the wrong shape raises ValueError, unless it is all zeros
      (a freshly reset state), which, like snnTorch, is replaced by zeros of the input's shape;
    * inhibition, state_quant and reset_delay=False run snnTorch's own forward.

    Example::

        >>> import torch
        >>> lif = Leaky(beta=0.9)
        >>> spk, mem = lif(torch.ones(2, 3), lif.init_leaky())
        >>> spk_seq, mem_seq = lif.multi_step(torch.full((5, 2, 3), 0.5))  # (T, B, N) each
        >>> spk_seq[:, 0, 0].tolist()
        [0.0, 0.0, 1.0, 0.0, 1.0]
    """

    def __init__(self, beta, threshold=1.0, spike_grad=None, surrogate_disable=False,
                 init_hidden=False, inhibition=False, learn_beta=False, learn_threshold=False,
                 reset_mechanism="subtract", state_quant=False, output=False,
                 graded_spikes_factor=1.0, learn_graded_spikes_factor=False, reset_delay=True):
        super().__init__(beta, threshold, spike_grad, surrogate_disable, init_hidden,
                         inhibition, learn_beta, learn_threshold, reset_mechanism, state_quant,
                         output, graded_spikes_factor, learn_graded_spikes_factor, reset_delay)
        if spike_grad is None and not surrogate_disable:
            self.spike_grad = ATan(2.0)  # same as snnTorch's default, exposes its derivative

    def forward(self, input_: Tensor, mem: Tensor | None = None):
        """One step. ``input_``, ``mem``: (B, ...). Returns (spk, mem), or spk if init_hidden."""
        if _exotic(self):
            return super().forward(input_, mem)
        if mem is not None:
            if self.init_hidden:
                raise TypeError("`mem` should not be passed as an argument while "
                                "`init_hidden=True`")
            self.mem = mem if mem.shape == input_.shape else _fresh_or_raise("mem", mem, input_)
        elif self.mem.shape != input_.shape:
            self.mem = torch.zeros_like(input_)  # hidden state of a new batch shape: fresh
        spk, self.mem, self.reset = _lif_step(input_, self.mem, self.beta, self.threshold,
                                              self.spike_grad, self.reset_mechanism)
        spk = spk * self.graded_spikes_factor
        if self.init_hidden and not self.output:
            return spk
        return spk, self.mem

    def multi_step(self, cur_seq: Tensor, mem0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Whole sequence through :func:`lif_multi_step` (BPTT fast path).

        cur_seq: (T, B, ...); mem0: (B, ...) or None (zeros; the hidden ``mem`` is not read).
        Returns (spk_seq, mem_seq), (T, B, ...) each; ``self.mem`` is left at U[T−1].
        Forward hooks are *not* called per step: online rules need the per-step forward.
        """
        if _exotic(self):
            raise NotImplementedError("multi_step supports reset_delay=True without inhibition "
                                      "or state_quant; use the per-step forward")
        if self._forward_hooks or self._forward_pre_hooks:
            warnings.warn("Leaky.multi_step bypasses forward hooks; use the per-step forward "
                          "for hook-based (online) learning rules", stacklevel=2)
        spk, mem = lif_multi_step(cur_seq, mem0, self.beta, self.threshold, self.spike_grad,
                                  self.reset_mechanism)
        self.mem = mem[-1]
        return spk * self.graded_spikes_factor, mem


class Synaptic(snn.Synaptic):
    """Drop-in ``snntorch.Synaptic``: LIF driven by an exponentially decaying synaptic current.

        I_syn[t] = α I_syn[t−1] + I[t]        U[t] = β U[t−1] + I_syn[t] − R[t] U_thr

    This realises eq. 3's kernel α(t) as an exponential post-synaptic current, α(t) = α^t
    (α = exp(−Δt/τ_syn)); the membrane then responds to one input spike at t = 0 with the
    double-exponential PSP (no spike, zero initial state)

        U[t] = Σ_k β^{t−k} α^k = (α^{t+1} − β^{t+1}) / (α − β)    ((t+1) β^t when α = β),

    the discrete form of (e^{−t/τ_syn} − e^{−t/τ_m}). Same constructor and call as snnTorch,
    ``spk, syn, mem = lif(cur, syn, mem)``, plus :meth:`multi_step`. Differences from
    snnTorch are those listed in :class:`Leaky`. Note snnTorch's "zero" reset zeroes the
    *new* membrane here (after charging), while Leaky zeroes the old one.
    """

    def __init__(self, alpha, beta, threshold=1.0, spike_grad=None, surrogate_disable=False,
                 init_hidden=False, inhibition=False, learn_alpha=False, learn_beta=False,
                 learn_threshold=False, reset_mechanism="subtract", state_quant=False,
                 output=False, reset_delay=True):
        super().__init__(alpha, beta, threshold, spike_grad, surrogate_disable, init_hidden,
                         inhibition, learn_alpha, learn_beta, learn_threshold, reset_mechanism,
                         state_quant, output, reset_delay)
        if spike_grad is None and not surrogate_disable:
            self.spike_grad = ATan(2.0)

    def forward(self, input_: Tensor, syn: Tensor | None = None, mem: Tensor | None = None):
        """One step. All (B, ...). Returns (spk, syn, mem), or spk if init_hidden."""
        if _exotic(self):
            return super().forward(input_, syn, mem)
        if self.init_hidden and (syn is not None or mem is not None):
            raise TypeError("`mem` or `syn` should not be passed as an argument while "
                            "`init_hidden=True`")
        for name, given in (("syn", syn), ("mem", mem)):
            state = getattr(self, name) if given is None else given
            if state.shape != input_.shape:
                state = (torch.zeros_like(input_) if given is None
                         else _fresh_or_raise(name, given, input_))
            setattr(self, name, state)
        spk, self.syn, self.mem, self.reset = _synaptic_step(
            input_, self.syn, self.mem, self.alpha, self.beta, self.threshold, self.spike_grad,
            self.reset_mechanism)
        spk = spk * self.graded_spikes_factor
        if self.init_hidden and not self.output:
            return spk
        return spk, self.syn, self.mem

    def multi_step(self, cur_seq: Tensor, syn0: Tensor | None = None,
                   mem0: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Whole sequence: cur_seq (T, B, ...) → (spk, syn, mem), (T, B, ...) each."""
        if _exotic(self):
            raise NotImplementedError("multi_step supports reset_delay=True without inhibition "
                                      "or state_quant; use the per-step forward")
        spk, syn, mem = synaptic_multi_step(cur_seq, syn0, mem0, self.alpha, self.beta,
                                            self.threshold, self.spike_grad, self.reset_mechanism)
        self.syn, self.mem = syn[-1], mem[-1]
        return spk * self.graded_spikes_factor, syn, mem
