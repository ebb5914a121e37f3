"""Leaky integrate-and-fire neurons, functional: pure step functions and a fused multi-step op.

Symbols: T time steps, B batch, N neurons ("..." = any further trailing dims after B).

Paper eq. 3, τ_m dV/dt = −V + R Σ_j w_ij Σ_f α(t − t_j^f) + I_ext, discretised with step Δt
(β = exp(−Δt/τ_m); R and Δt/τ_m folded into the weights w) exactly as snnTorch 1.0 does::

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

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from bimsnn.surrogate import ATan, Surrogate, as_surrogate

__all__ = ["lif_charge", "lif_fire", "reset_signal", "lif_step", "lif_multi_step",
           "lif_multi_step_ref", "synaptic_step", "synaptic_multi_step"]

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
class LIFMultiStep(torch.autograd.Function):
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


def fused_lif(cur: Tensor, mem0: Tensor, beta: Param, threshold: Param, sg: Surrogate,
              reset_mechanism: str, smooth: bool = False) -> tuple[Tensor, Tensor]:
    """:class:`LIFMultiStep` without the argument checks of :func:`lif_multi_step`.

    ``smooth=True`` replaces the Heaviside spike by the surrogate's smooth primitive in the
    forward too, so the hand-written backward is the exact derivative and
    ``torch.autograd.gradcheck`` applies to it (tests/test_neurons.py).
    """
    beta = _as_param(beta, cur).clamp(0, 1)  # clamp outside: autograd masks its grad
    threshold = _as_param(threshold, cur)
    return LIFMultiStep.apply(cur, mem0, beta, threshold, sg, reset_mechanism, smooth)


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
    return fused_lif(cur, mem0, beta, threshold, sg, reset_mechanism)


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
