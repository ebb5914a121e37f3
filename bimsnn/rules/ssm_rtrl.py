"""Exact RTRL for the selective SSM's recurrent core (paper eq. 7-8; Zucchet et al. 2023).

Symbols: B batch, E channels (expanded width), N state size, R dt rank,
u the SSM input (B, E), h the state (B, E, N), θ the core parameters.

One step of the SelectiveSSM (``bimsnn.ssm.mamba``), with W_x = x_proj.weight split
into rows (W_Δ (R, E), W_B (N, E), W_C (N, E)), W_dt = dt_proj.weight (E, R), b = dt_proj.bias::

    r = W_Δ u   B = W_B u   C = W_C u   z = W_dt r + b   Δ = softplus(z)   A = -exp(A_log)
    Ā = exp(Δ ⊗ A)                                         # (B, E, N)
    h_t = Ā ⊙ h_{t-1} + (Δ ⊙ u) ⊗ B                         # (B, E, N)
    y_t = h_t · C + D ⊙ u                                   # (B, E)

The recurrence is diagonal (∂h_t/∂h_{t-1} = Ā, element-wise), so the RTRL eligibility
e_θ(t) = ∂h_t/∂θ (eq. 7) obeys e_θ(t) = Ā ⊙ e_θ(t-1) + ∂h_t/∂θ|immediate, and the gradient is
(eq. 8) ∂L_t/∂θ = ∂L_t/∂θ|within step + (∂L_t/∂h_{t-1}) · e_θ(t-1). With σ(z) = 1 - exp(-Δ)
and q = (A ⊙ Ā ⊙ h_{t-1} + u ⊗ B) ⊙ σ(z) = ∂h_t/∂z|immediate, the traces are
(math indices b, e, n; the stored layout, chosen so backward is a bmm without copies, in [..])::

    e_A   [b,e,n]     ← Ā e_A   + Δ ⊙ A ⊙ Ā ⊙ h_{t-1}   (B, E, N)     A_log[e, n] → h[e, n] only
    e_b   [b,e,n]     ← Ā e_b   + q                      (B, E, N)     dt_proj.bias[e] → row e
    e_Wdt [b,e,n,r]   ← Ā e_Wdt + q ⊗ r                  [E, B, N, R]  dt_proj.weight[e, r]
    P     [b,e,n,j]   ← Ā P     + q ⊗ u                  [E, B, N, E]  ∂h/∂W_Δ[r,j] = W_dt[e,r] P
    e_WB  [b,e,n,j]   ← Ā e_WB  + (Δ ⊙ u) ⊗ u (all n)    [N, B, E, E]  W_B[n, j] → column n only

The W_Δ eligibility (B, E, N, R, E) factors as W_dt ⊗ P because W_dt is constant within a
sequence, saving a factor R; with optimizer steps *inside* a sequence it uses the current W_dt
(the usual RTRL frozen-Jacobian approximation). Memory per SSM is B·E·N·(2 + R + 2E) numbers
(B=1, E=128, N=16, R=4: 2.1 MB in float32), independent of T; cost per step is O(B·E·N·E).
W_C and D do not enter the recurrence: within-step autograd is already exact for them.

Mechanism: ``ssm.step`` is wrapped on the instance. The incoming state is detached and
replaced by ``SSMTraceInject(h, θ)``, an identity whose backward adds g · e(t-1) to each θ,
where g = ∂L_t/∂h_{t-1} is what autograd computes through Ā ⊙ h_{t-1}; within-step autograd
adds the immediate term. The step's small update factors (Ā, q, u, ...) are kept, and the
traces advance e(t-1) → e(t) in ``after_backward`` (in place: that step's backward is over),
or, if no ``rule.backward`` came, at the next step out of place, since the previous graph
holding e(t-1) may still be backwarded later (e.g. one backward of Σ_t L_t at the end).
Steps run under ``torch.no_grad()`` are passed through untraced (evaluation).

Usage: ``bimsnn.rules.RTRL`` / ``Hybrid`` add these handlers; alone::

    rule = Rule(model); rule.handlers += ssm_handlers(rule, model)
    rule.reset(B); ...; y_t, h = ssm.step(u_t, h); rule.backward(loss_t); ...; rule.remove()

What is exact and what is not:
  * A single SSM whose input u does not depend on its own θ: exact (float64 tests: relative
    error ~1e-15 vs BPTT).
  * Inside a network, errors reach the SSM only within a step (spatial back-propagation):
    ∂L_t/∂y_t is used, while the paths y_s → (LIF membrane, readout integrator, next layer's
    SSM state) → L_t for s < t are dropped (eq. 8's usual cross-layer approximation). This
    holds for one block too, since its LIF and the readout integrate over time. Measured
    against BPTT in tests/test_ssm_rtrl.py and benchmarks/online_memory.py.
  * in_proj / conv / out_proj and the LIF membranes get within-step gradients from here; the
    Linear→Leaky pre-traces come from the rules in ``rtrl.py``. Every module with a ``step``
    that contains an SSM (block, net) gets its incoming ``state`` detached, so the conv
    buffer, LIF membranes and h never carry a graph across steps: backward covers one step.
  * Only streaming ``step`` calls are seen; ``forward`` (parallel scan) is left as BPTT.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bimsnn.state import detach_tree

_SSM_ATTRS = ("x_proj", "dt_proj", "A_log", "D", "discretize", "step")


def is_selective_ssm(m: nn.Module) -> bool:
    """Duck-typed test for the SelectiveSSM contract (see module docstring)."""
    return all(hasattr(m, a) for a in _SSM_ATTRS)


def _bmm_contract(g_perm: Tensor, trace: Tensor) -> Tensor:
    """Σ over the middle axes: g_perm (K, M), trace [K, M..., J] viewed (K, M, J) -> (K, J)."""
    K = trace.shape[0]
    return torch.bmm(g_perm.reshape(K, 1, -1), trace.reshape(K, g_perm[0].numel(), -1))[:, 0]


class SSMTraceInject(torch.autograd.Function):
    """Identity on h whose backward adds g · e(t-1) to the core parameters' gradients.

    forward(h, W_dt_now, R, e_A, e_b, e_Wdt, P, e_WB, A_log, dt_w, dt_b, x_w) -> h (a view)
    backward(g (B, E, N)) -> gradients (E, N), (E, R), (E,), (R + 2N, E) for the parameters.
    The traces go through ``save_for_backward``, so updating them in place before this step's
    backward has run raises autograd's usual "modified by an inplace operation" error.
    Its backward is *not* the derivative of its forward (that is zero), so gradcheck does not
    apply: it is the derivative of the tangent model :func:`ssm_trace_inject_ref`, which the
    tests compare it against.
    """

    @staticmethod
    def forward(ctx, h, W_dt_now, R, e_A, e_b, e_Wdt, P, e_WB, A_log, dt_w, dt_b, x_w):
        ctx.save_for_backward(e_A, e_b, e_Wdt, P, e_WB)
        ctx.W_dt = W_dt_now                  # not saved: the optimizer may step in place later
        return h.view_as(h)

    @staticmethod
    def backward(ctx, g):
        e_A, e_b, e_Wdt, P, e_WB = ctx.saved_tensors
        need = ctx.needs_input_grad
        g_ebn = g.transpose(0, 1)                                            # (E, B, N)
        gA = (g * e_A).sum(0) if need[8] else None                            # (E, N)
        gWdt = _bmm_contract(g_ebn, e_Wdt) if need[9] else None               # (E, R)
        gb = (g * e_b).sum((0, 2)) if need[10] else None                      # (E,)
        gx = None
        if need[11]:
            G = _bmm_contract(g_ebn, P)                                       # (E, E)
            gB = _bmm_contract(g.permute(2, 0, 1), e_WB)                      # (N, E)
            gx = torch.cat([ctx.W_dt.t() @ G, gB, torch.zeros_like(gB)], 0)   # (R + 2N, E)
        return (None,) * 8 + (gA, gWdt, gb, gx)


def ssm_trace_inject_ref(h, W_dt_now, R, e_A, e_b, e_Wdt, P, e_WB, A_log, dt_w, dt_b, x_w):
    """Reference twin of ``SSMTraceInject``: h + Σ_θ e_θ · (θ - stop_grad θ), via plain autograd."""
    def d(p):
        return p - p.detach()

    N = h.shape[-1]
    out = h + e_A * d(A_log) + torch.einsum("ebnr,er->ben", e_Wdt, d(dt_w))
    if dt_b is not None:
        out = out + e_b * d(dt_b)[:, None]
    out = out + torch.einsum("ebnj,er,rj->ben", P, W_dt_now, d(x_w[:R]))
    return out + torch.einsum("nbej,nj->ben", e_WB, d(x_w[R:R + N]))


class SSMTraceHandler:
    """RTRL handler for one SelectiveSSM: wraps ``ssm.step`` and keeps the traces above.

    Args:
        ssm: a module following the SelectiveSSM contract (x_proj without bias).
    Attributes:
        traces: dict name -> tensor in the stored layouts of the module docstring
            (``None`` before :meth:`reset` or the first step).
        steps_seen: traced steps so far (diagnostic).
    """

    def __init__(self, ssm: nn.Module):
        if not is_selective_ssm(ssm):
            raise TypeError(f"{type(ssm).__name__} does not follow the SelectiveSSM contract")
        if ssm.x_proj.bias is not None:
            raise NotImplementedError("x_proj with a bias is not supported (contract: bias=False)")
        other = getattr(ssm.__dict__.get("step"), "__self__", None)
        if isinstance(other, SSMTraceHandler) and other._active:
            # A second wrapper would cut the first one's injection (it detaches h again).
            raise RuntimeError("this SSM already has RTRL traces attached (another rule?); "
                               "remove() that rule first")
        self.ssm = ssm
        E, N = ssm.A_log.shape
        self.E, self.N = E, N
        self.R = ssm.x_proj.out_features - 2 * N
        if self.R != ssm.dt_proj.in_features or ssm.dt_proj.out_features != E:
            raise ValueError("x_proj / dt_proj shapes disagree with A_log (E, N)")
        self.traces: dict[str, Tensor] | None = None
        self._pending: tuple[Tensor, ...] | None = None   # this step's update, not yet applied
        self.steps_seen = 0
        self._had_own_step = "step" in ssm.__dict__
        self._orig_step = ssm.step
        self._active = True
        self._wrapper = self._step          # one bound-method object, so remove() can find it
        ssm.step = self._wrapper                                     # instance attribute

    # --- Handler protocol -------------------------------------------------------------
    def reset(self, batch_size: int) -> None:
        """Start a new sequence: zero traces for ``batch_size`` samples."""
        p = self.ssm.A_log
        E, N, R = self.E, self.N, self.R
        B = batch_size
        shapes = {"e_A": (B, E, N), "e_b": (B, E, N), "e_Wdt": (E, B, N, R),
                  "P": (E, B, N, E), "e_WB": (N, B, E, E)}               # layouts: see top
        self.traces = {k: p.new_zeros(s) for k, s in shapes.items()}
        self._pending = None

    def after_backward(self) -> None:
        """This step's backward is done, so e(t-1) is free: advance the traces in place."""
        self._flush(inplace=True)

    def remove(self) -> None:
        """Restore ``ssm.step`` (or disable the wrapper if someone wrapped on top of it)."""
        self._active = False
        if self.ssm.__dict__.get("step") is self._wrapper:
            if self._had_own_step:
                self.ssm.step = self._orig_step
            else:
                del self.ssm.step
        self.traces = self._pending = None

    def numel(self) -> int:
        """Number of elements held in traces and the pending update (independent of T)."""
        held = [*(self.traces or {}).values(), *(self._pending or ())]
        return sum(t.numel() for t in held)

    # --- the wrapped step ---------------------------------------------------------------
    def _step(self, u_t: Tensor, h: Tensor | None = None):
        """Wrapped ``ssm.step(u_t (B, E), h (B, E, N) | None) -> (y_t (B, E), h (B, E, N))``."""
        if not self._active or not torch.is_grad_enabled():
            return self._orig_step(u_t, h)
        ssm, R = self.ssm, self.R
        Bsz = u_t.shape[0]
        if h is None or self.traces is None:
            self.reset(Bsz)                                          # fresh sequence
        elif self.traces["e_A"].shape[0] != Bsz:                     # (B, E, N)
            raise ValueError(f"batch {Bsz} != traces' batch {self.traces['e_A'].shape[0]}; "
                             "call rule.reset(batch_size) at each new sequence")
        # The previous step's update is still pending if no rule.backward came in between;
        # its graph may still be alive, so apply it out of place.
        self._flush(inplace=False)
        h_prev = None if h is None else h.detach()
        h_in = h_prev
        if h_prev is not None:
            tr = self.traces
            h_in = SSMTraceInject.apply(h_prev, ssm.dt_proj.weight.detach(), R, tr["e_A"],
                                      tr["e_b"], tr["e_Wdt"], tr["P"], tr["e_WB"], ssm.A_log,
                                      ssm.dt_proj.weight, ssm.dt_proj.bias, ssm.x_proj.weight)
        y_t, h_new = self._orig_step(u_t, h_in)
        self._pending = self._immediate(u_t.detach(), h_prev)
        self.steps_seen += 1
        return y_t, h_new

    @torch.no_grad()
    def _immediate(self, u: Tensor, h_prev: Tensor | None) -> tuple[Tensor, ...]:
        """Small per-step factors of the update: Ā, immediate e_A term, q, r, u, Δ⊙u."""
        ssm, R = self.ssm, self.R
        delta, A, Bt, _ = ssm.discretize(u)                          # (B,E) (E,N) (B,N)
        r = F.linear(u, ssm.x_proj.weight[:R])                       # (B, R) = dt_low
        dA = torch.exp(delta[..., None] * A)                         # (B, E, N)
        sig = -torch.expm1(-delta)                                   # softplus'(z) = σ(z)
        uB = u[..., None] * Bt[:, None, :]                           # (B, E, N)
        if h_prev is None:
            e_A_imm = torch.zeros_like(dA)
            q = uB * sig[..., None]
        else:
            AdAh = A * dA * h_prev                                   # (B, E, N)
            e_A_imm = delta[..., None] * AdAh
            q = (AdAh + uB) * sig[..., None]                         # ∂h_t/∂z|imm
        return dA, e_A_imm, q, r, u, delta * u

    @torch.no_grad()
    def _flush(self, inplace: bool) -> None:
        """e(t) = Ā ⊙ e(t-1) + immediate; in place only once e(t-1)'s backward has run."""
        if self._pending is None or self.traces is None:
            return
        dA, e_A_imm, q, r, u, du = self._pending
        self._pending = None
        tr = self.traces if inplace else {k: v.clone() for k, v in self.traces.items()}
        # Small factors made contiguous in the traces' layouts (see module docstring).
        dA_e = dA.transpose(0, 1).contiguous()[..., None]            # (E, B, N, 1)
        q_e = q.transpose(0, 1).contiguous()[..., None]              # (E, B, N, 1)
        tr["e_A"].mul_(dA).add_(e_A_imm)
        tr["e_b"].mul_(dA).add_(q)
        tr["e_Wdt"].mul_(dA_e).addcmul_(q_e, r[None, :, None, :])
        tr["P"].mul_(dA_e).addcmul_(q_e, u[None, :, None, :])
        du_u = du[:, :, None] * u[:, None, :]                        # (B, E, E), same for all n
        tr["e_WB"].mul_(dA.permute(2, 0, 1).contiguous()[..., None]).add_(du_u)
        self.traces = tr


class _StateDetachHandler:
    """Wraps ``module.step(x_t, state, ...)`` so the incoming state carries no graph."""

    def __init__(self, module: nn.Module):
        self.module = module
        self._had_own_step = "step" in module.__dict__
        self._orig_step = module.step
        self._active = True

        def step(x_t, state=None, *args, **kwargs):
            if self._active:
                state = detach_tree(state)
            return self._orig_step(x_t, state, *args, **kwargs)

        self._step = step
        module.step = step

    def reset(self, batch_size: int) -> None:
        pass

    def after_backward(self) -> None:
        pass

    def remove(self) -> None:
        self._active = False
        if self.module.__dict__.get("step") is self._step:
            if self._had_own_step:
                self.module.step = self._orig_step
            else:
                del self.module.step


def ssm_handlers(rule, model: nn.Module) -> list:
    """RTRL handlers for every SelectiveSSM in ``model``, plus state detachers.

    Every SelectiveSSM gets an :class:`SSMTraceHandler`; every other module that has a
    ``step`` method and contains an SSM (SpikingMamba block, SpikingMambaNet) gets its
    incoming ``state`` detached, so no graph is carried across steps. ``rule`` is unused
    (gradients are written by autograd through ``SSMTraceInject``); it keeps the signature
    shared with the other handler factories.

    Returns:
        list of handlers (Handler protocol), SSM handlers first; ``[]`` if there is no SSM.
    """
    ssms = [m for m in model.modules() if is_selective_ssm(m)]
    handlers: list = [SSMTraceHandler(m) for m in ssms]
    ssm_ids = {id(m) for m in ssms}
    for m in model.modules():
        if id(m) in ssm_ids or not callable(getattr(m, "step", None)):
            continue
        if any(id(sub) in ssm_ids for sub in m.modules()):
            handlers.append(_StateDetachHandler(m))
    return handlers
