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
"""

from __future__ import annotations

import warnings

import snntorch as snn
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from bimsnn.surrogate import ATan, Surrogate, as_surrogate

__all__ = ["lif_charge", "lif_fire", "reset_signal", "lif_step", "lif_multi_step",
           "lif_multi_step_ref", "synaptic_step", "synaptic_multi_step", "Leaky", "Synaptic"]

_MECHANISMS = ("subtract", "zero", "none")
_DEFAULT_SG = ATan(2.0)  # snnTorch's default surrogate, surrogate.atan(alpha=2.0)
Param = float | Tensor


# ----------------------------------------------------------------- charge → fire → reset
def lif_charge(cur: Tensor, mem: Tensor, beta: Param) -> Tensor:
    """Leaky integration β·U + I (eq. 3, one Euler step). Shapes: (B, ...) → (B, ...)."""
    return beta * mem + cur


def lif_fire(mem: Tensor, threshold: Param, spike_grad) -> Tensor:
    """S = H(U − U_thr), differentiable through ``spike_grad``; in mem's dtype. (B, ...)."""
    return spike_grad(mem - threshold).to(mem.dtype)


def reset_signal(mem: Tensor, threshold: Param, spike_grad) -> Tensor:
    """R = H(U_prev − U_thr), detached: snnTorch's reset from the previous membrane. (B, ...)."""
    if isinstance(spike_grad, Surrogate):  # known Heaviside forward: skip the autograd node
        return (mem.detach() - threshold > 0).to(mem.dtype)
    return spike_grad(mem - threshold).detach().to(mem.dtype)


def _check_mechanism(reset_mechanism: str) -> None:
    if reset_mechanism not in _MECHANISMS:
        raise ValueError(f"reset_mechanism must be one of {_MECHANISMS}, got {reset_mechanism!r}")


def _clamp01(beta: Param) -> Param:
    return beta.clamp(0, 1) if isinstance(beta, Tensor) else min(max(float(beta), 0.0), 1.0)


def _check_state(name: str, state: Tensor | None, like: Tensor) -> Tensor:
    if state is None:
        return torch.zeros_like(like)
    if state.shape != like.shape:
        raise ValueError(f"{name}: expected shape {tuple(like.shape)} (same as the input "
                         f"current), got {tuple(state.shape)}")
    return state


def _lif_step(cur, mem, beta, threshold, spike_grad, reset_mechanism):
    """lif_step, also returning the reset signal (the modules keep it as ``self.reset``)."""
    sg = _DEFAULT_SG if spike_grad is None else spike_grad
    reset = reset_signal(mem, threshold, sg)
    beta = _clamp01(beta)
    if reset_mechanism == "zero":
        mem = (1 - reset) * mem  # snnTorch zeroes the *old* membrane, then charges
    mem = lif_charge(cur, mem, beta)
    if reset_mechanism == "subtract":
        mem = mem - reset * threshold
    elif reset_mechanism not in ("zero", "none"):
        _check_mechanism(reset_mechanism)
    return lif_fire(mem, threshold, sg), mem, reset


def lif_step(cur: Tensor, mem: Tensor | None, beta: Param, threshold: Param = 1.0,
             spike_grad=None, reset_mechanism: str = "subtract") -> tuple[Tensor, Tensor]:
    """One step of ``snntorch.Leaky`` (reset_delay=True), as a pure function.

    Args:
        cur: input current I[t], (B, ...). mem: U[t−1], (B, ...) or None (zeros).
        beta, threshold: floats, scalar tensors, or tensors broadcastable to (B, ...).
        spike_grad: a :mod:`bimsnn.surrogate` object or any snnTorch surrogate; None = atan.
    Returns:
        spk S[t], mem U[t]: (B, ...) each, in cur's dtype.
    """
    spk, mem, _ = _lif_step(cur, _check_state("mem", mem, cur), beta, threshold, spike_grad,
                            reset_mechanism)
    return spk, mem


# ---------------------------------------------------------------- fused multi-step op
class _LIFMultiStep(torch.autograd.Function):
    """All T steps in one node: no per-step graph, hand-written backward.

    Because R[t] is detached, the adjoint a[t] = ∂L/∂U[t] obeys a *linear* recurrence
        a[t] = c[t] + d[t+1] a[t+1],   c[t] = ∂L/∂U[t] + ∂L/∂S[t] σ'(U[t] − U_thr),
    with d = β ("subtract", "none") or β(1 − R) ("zero"). c is computed for all t at once;
    the reverse loop is one fused multiply-add per step.
    """

    @staticmethod
    def forward(ctx, cur, mem0, beta, threshold, sg: Surrogate, mechanism: str, smooth: bool):
        m0 = torch.zeros_like(cur[0]) if mem0 is None else mem0
        # Tensors (even 0-dim, as snnTorch's buffers are) dispatch faster than Python scalars,
        # which get wrapped per call; the backward loop takes β as a float alpha.
        b = beta.item() if beta.numel() == 1 else beta
        th = threshold.item() if threshold.numel() == 1 else threshold
        mem, spk = torch.empty_like(cur), torch.empty_like(cur)  # (T, B, ...)
        zero = mechanism == "zero"
        # In "zero" mode spk[t] first holds keep = 1 − S[t] (used directly by the next
        # step); it is flipped to spikes after the loop. Otherwise spk[t] holds S[t].
        r_prev = (m0 <= th if zero else m0 > th).to(cur.dtype)  # (B, ...)  R[0] or 1 − R[0]
        m_prev, sub, unit = m0, mechanism == "subtract", isinstance(th, float) and th == 1.0
        # Same float ops in the same order as snnTorch, so U and S match it bit for bit
        # (no fused multiply-add on β·U + I). unbind() makes all per-step views at once.
        for m_t, x_t, s_t in zip(mem.unbind(0), cur.unbind(0), spk.unbind(0)):
            torch.mul(m_prev, beta, out=m_t)
            if zero:
                torch.addcmul(x_t, m_t, r_prev, out=m_t)  # keep ∈ {0, 1}: product is exact
                torch.le(m_t, threshold, out=s_t)
            else:
                m_t.add_(x_t)
                if sub:  # R ∈ {0, 1}, so R·U_thr is exact under any rounding
                    if unit:
                        m_t.sub_(r_prev)
                    elif isinstance(th, float):
                        m_t.sub_(r_prev, alpha=th)
                    else:
                        m_t.addcmul_(r_prev, th, value=-1)
                torch.gt(m_t, threshold, out=s_t)
            m_prev, r_prev = m_t, s_t
        if zero:
            spk.neg_().add_(1)
        if smooth:  # gradcheck variant: smooth spikes; the (detached) reset stays a step
            spk = sg.primitive(mem - threshold)
        ctx.save_for_backward(mem, m0, beta, threshold)
        ctx.set_materialize_grads(False)  # an unused output's grad stays None: no zero fill
        ctx.sg, ctx.mechanism, ctx.b, ctx.th = sg, mechanism, b, th
        return spk, mem

    @staticmethod
    @once_differentiable
    def backward(ctx, g_spk, g_mem):
        mem, m0, beta, threshold = ctx.saved_tensors
        b, th, mechanism = ctx.b, ctx.th, ctx.mechanism
        need_cur, need_m0, need_beta, need_th = ctx.needs_input_grad[:4]
        T = mem.shape[0]
        # c = ∂L/∂U + ∂L/∂S · σ'(U − U_thr), (T, B, ...), in a fresh buffer (the reverse loop
        # runs in place on it; incoming grads may be expanded views and must not be written).
        u, g_th = mem - th, None
        if g_spk is None:
            c = u.copy_(g_mem) if g_mem is not None else u.zero_()
        elif need_th:
            c = ctx.sg.grad(u, g_spk)
            g_th = -c.sum(0)  # through S[t] = H(U[t] − U_thr)
            if g_mem is not None:
                c.add_(g_mem)
        else:
            c = ctx.sg.grad_acc_(u, g_spk, g_mem)
        if need_th and g_th is None:
            g_th = torch.zeros_like(mem[0])
        r0 = (m0 > th).to(mem.dtype)  # R[0], (B, ...)
        keep, cs = None, c.unbind(0)
        if mechanism == "zero":
            keep = (mem <= th).to(mem.dtype)  # keep[t] = 1 − R[t+1]
            ds = (keep * b).unbind(0)
            for t in range(T - 2, -1, -1):
                cs[t].addcmul_(ds[t], cs[t + 1])
        elif isinstance(b, float):
            for t in range(T - 2, -1, -1):
                cs[t].add_(cs[t + 1], alpha=b)
        else:
            for t in range(T - 2, -1, -1):
                cs[t].addcmul_(b, cs[t + 1])
        a = c  # a[t] = ∂L/∂U[t]
        keep0 = 1 - r0 if keep is not None else 1
        g_m0 = a[0] * b * keep0 if need_m0 else None
        g_beta = None
        if need_beta:  # ∂U[t]/∂β = U[t−1] (times 1 − R[t] in "zero" mode)
            prev = mem[:-1] if keep is None else mem[:-1] * keep[:-1]
            g_beta = (a[1:] * prev).sum(0) + a[0] * m0 * keep0
            g_beta = g_beta.sum_to_size(beta.shape).to(beta.dtype)
        if need_th:
            if mechanism == "subtract":  # ∂U[t]/∂U_thr = −R[t]
                g_th -= (a[1:] * (mem[:-1] > th)).sum(0) + a[0] * r0
            g_th = g_th.sum_to_size(threshold.shape).to(threshold.dtype)
        return (a if need_cur else None), g_m0, g_beta, g_th, None, None, None


def _as_param(p: Param, cur: Tensor) -> Tensor:
    if not isinstance(p, Tensor):
        return torch.tensor(float(p), dtype=cur.dtype, device=cur.device)
    # A more precise parameter would promote the whole sequence; compute in cur's dtype.
    return p if torch.promote_types(p.dtype, cur.dtype) == cur.dtype else p.to(cur.dtype)


def _check_seq(cur: Tensor, states: dict, params: dict, reset_mechanism: str) -> None:
    _check_mechanism(reset_mechanism)
    if cur.dim() < 2 or cur.shape[0] == 0:
        raise ValueError(f"cur: expected shape (T, B, ...) with T ≥ 1, got {tuple(cur.shape)}")
    for name, s in states.items():
        if s is not None and s.shape != cur.shape[1:]:
            raise ValueError(f"{name}: expected shape {tuple(cur.shape[1:])} (= cur.shape[1:]), "
                             f"got {tuple(s.shape)}")
    for name, p in params.items():
        if isinstance(p, Tensor) and p.dim():
            try:
                ok = tuple(torch.broadcast_shapes(p.shape, cur.shape[1:])) == tuple(cur.shape[1:])
            except RuntimeError:
                ok = False
            if not ok:
                raise ValueError(f"{name}: expected a shape broadcastable to "
                                 f"{tuple(cur.shape[1:])}, got {tuple(p.shape)}")


def _fused(cur, mem0, beta, threshold, sg: Surrogate, reset_mechanism, smooth=False):
    beta = _as_param(beta, cur).clamp(0, 1)  # clamp outside: autograd masks its grad
    threshold = _as_param(threshold, cur)
    return _LIFMultiStep.apply(cur, mem0, beta, threshold, sg, reset_mechanism, smooth)


def lif_multi_step(cur: Tensor, mem0: Tensor | None, beta: Param, threshold: Param = 1.0,
                   spike_grad=None, reset_mechanism: str = "subtract") -> tuple[Tensor, Tensor]:
    """T steps of :func:`lif_step` fused into one autograd node (the fast BPTT path).

    Forward and gradients equal those of :func:`lif_multi_step_ref` (tests: float64 to 1e-10,
    spikes and membranes bit-identical). ``spike_grad`` must be a :mod:`bimsnn.surrogate`
    object or an snnTorch atan/fast_sigmoid/sigmoid/straight-through closure; any other
    callable falls back to the reference loop (same results, slower).

    Args:
        cur: input currents I, (T, B, ...). mem0: U[−1], (B, ...) or None (zeros).
        beta, threshold: floats, scalar or per-neuron tensors broadcastable to (B, ...); their
            gradients are returned when they require grad.
    Returns:
        spk S, mem U: (T, B, ...) each.
    """
    _check_seq(cur, {"mem0": mem0}, {"beta": beta, "threshold": threshold}, reset_mechanism)
    sg = as_surrogate(spike_grad)
    if sg is None:
        return lif_multi_step_ref(cur, mem0, beta, threshold, spike_grad, reset_mechanism)
    return _fused(cur, mem0, beta, threshold, sg, reset_mechanism)


def lif_multi_step_ref(cur: Tensor, mem0: Tensor | None, beta: Param, threshold: Param = 1.0,
                       spike_grad=None, reset_mechanism: str = "subtract"
                       ) -> tuple[Tensor, Tensor]:
    """Reference twin of :func:`lif_multi_step`: a plain loop of :func:`lif_step` under autograd."""
    _check_seq(cur, {"mem0": mem0}, {"beta": beta, "threshold": threshold}, reset_mechanism)
    mem = torch.zeros_like(cur[0]) if mem0 is None else mem0
    spks, mems = [], []
    for x in cur:
        spk, mem, _ = _lif_step(x, mem, beta, threshold, spike_grad, reset_mechanism)
        spks.append(spk)
        mems.append(mem)
    return torch.stack(spks), torch.stack(mems)


# ------------------------------------------------------------- second-order (Synaptic)
def _synaptic_step(cur, syn, mem, alpha, beta, threshold, spike_grad, reset_mechanism):
    sg = _DEFAULT_SG if spike_grad is None else spike_grad
    reset = reset_signal(mem, threshold, sg)
    syn = lif_charge(cur, syn, _clamp01(alpha))  # I_syn ← α I_syn + I  (exponential PSC)
    mem = lif_charge(syn, mem, _clamp01(beta))   # U ← β U + I_syn
    if reset_mechanism == "subtract":
        mem = mem - reset * threshold
    elif reset_mechanism == "zero":
        mem = mem - mem * reset  # unlike Leaky, snnTorch's Synaptic zeroes the *new* membrane
    elif reset_mechanism != "none":
        _check_mechanism(reset_mechanism)
    return lif_fire(mem, threshold, sg), syn, mem, reset


def synaptic_step(cur: Tensor, syn: Tensor | None, mem: Tensor | None, alpha: Param,
                  beta: Param, threshold: Param = 1.0, spike_grad=None,
                  reset_mechanism: str = "subtract") -> tuple[Tensor, Tensor, Tensor]:
    """One step of ``snntorch.Synaptic``: returns (spk, syn, mem), each (B, ...).

    syn and mem are (B, ...) or None (zeros). Leaky's charge is applied twice: the input is
    first filtered into the synaptic current I_syn (decay α), which then charges U (decay β).
    """
    spk, syn, mem, _ = _synaptic_step(cur, _check_state("syn", syn, cur),
                                      _check_state("mem", mem, cur), alpha, beta, threshold,
                                      spike_grad, reset_mechanism)
    return spk, syn, mem


def synaptic_multi_step(cur: Tensor, syn0: Tensor | None, mem0: Tensor | None, alpha: Param,
                        beta: Param, threshold: Param = 1.0, spike_grad=None,
                        reset_mechanism: str = "subtract") -> tuple[Tensor, Tensor, Tensor]:
    """T steps of :func:`synaptic_step` (plain autograd loop). cur (T, B, ...) → 3 × (T, B, ...)."""
    _check_seq(cur, {"syn0": syn0, "mem0": mem0},
               {"alpha": alpha, "beta": beta, "threshold": threshold}, reset_mechanism)
    syn = torch.zeros_like(cur[0]) if syn0 is None else syn0
    mem = torch.zeros_like(cur[0]) if mem0 is None else mem0
    out = []
    for x in cur:
        spk, syn, mem, _ = _synaptic_step(x, syn, mem, alpha, beta, threshold, spike_grad,
                                          reset_mechanism)
        out.append((spk, syn, mem))
    return tuple(torch.stack(seq) for seq in zip(*out))


# ------------------------------------------------------------------------- modules
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
        """One step. input_, mem: (B, ...). Returns (spk, mem), or spk if init_hidden."""
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
