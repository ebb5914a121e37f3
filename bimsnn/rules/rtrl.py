"""RTRL for Linear→Leaky layers (paper eq. 7-8), online, by gradient injection.

Symbols: B batch (leading dims flattened), N Linear in_features, H Leaky width,
T time, W (H, N) weight, b (H,) bias, β̂ = clamp(β, 0, 1), ϑ threshold.

snnTorch's Leaky (reset computed from the *previous* membrane and detached)::

    r_t   = H(m_{t−1} − ϑ)                                     # detached
    mem_t = β̂ ⊙ m_{t−1} + W x_t + b − r_t ⊙ ϑ                  # reset "subtract"
    mem_t = β̂ ⊙ (1 − r_t) ⊙ m_{t−1} + W x_t + b                 # reset "zero"
    mem_t = β̂ ⊙ m_{t−1} + W x_t + b                            # reset "none"

With a_t = ∂mem_t/∂m_{t−1} (β̂, or β̂(1 − r_t) for "zero"), eq. 7
e_ij(t) = Σ_k ∂f_i/∂x_k e_kj(t−1) + ∂f_i/∂w_ij is diagonal in i::

    e^W_ij(t) = a_i(t) e^W_ij(t−1) + x_j(t)      (scalar a: e_j(t), the STDP pre-trace, (B, N))
    e^b_i(t)  = a_i(t) e^b_i(t−1) + 1
    e^β_i(t)  = a_i(t) e^β_i(t−1) + [0 ≤ β ≤ 1] m_{t−1,i} (· (1 − r_t) for "zero")   learn_beta
    e^ϑ_i(t)  = a_i(t) e^ϑ_i(t−1) − r_{t,i}      ("subtract"; 0 otherwise)       learn_threshold

Eq. 8 by injection: the Leaky's pre-hook replaces m_{t−1} with
``TraceInject(m_{t−1}.detach(), e(t−1), W, b, …)``, whose forward is the identity and whose
backward adds g ⊗ e(t−1) into each parameter's gradient, g = ∂L_t/∂m_{t−1} being computed
by autograd through ``mem_t = a_t·m_{t−1} + …``. Within-step autograd adds the immediate
term, so a step's backward yields ∂L_t/∂mem_t · e(t): eq. 8 for that step.

What it computes: exactly BPTT's gradient for one layer (any loss on its spikes and/or
membrane, at every step). For stacked layers the error is back-propagated spatially
within the current step only: the paths W^l → out^l_{t'} → state^{l+1}_{t'} → … →
L_t for t' < t (later layers' state depending on earlier layers' *past* outputs) are
dropped. Each layer's own recurrence is exact. Measured (tests/test_rules_rtrl.py, β = 0.9):
per-tensor cosine to BPTT ≥ 0.99, but layer l's gradient is ~(1 − β)^(L−l) times BPTT's
(0.12 for the first of 2 layers, 0.015 for the first of 3): the dropped paths run through
later leaky integrators, which sum ~1/(1 − β) past steps. The last layer is exact.
Per-parameter adaptive optimizers (Adam) absorb the scale. Other parameters (a readout Linear with no
Leaky after it) get within-step autograd gradients; SelectiveSSMs get the exact traces
of :mod:`bimsnn.rules.ssm_rtrl` through ``ssm_handlers``.

Not supported (ValueError): ``reset_delay=False``, ``inhibition=True``, ``state_quant``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from bimsnn.rules.base import LayerTap, Pair, Rule
from bimsnn.rules.traces import Trace

_SUBTRACT, _ZERO, _NONE = 0, 1, 2      # snnTorch's reset_mechanism_val


def _contract(g: Tensor, kind: str, e: Tensor, shape: torch.Size) -> Tensor:
    """Σ_b g ⊗ e reduced to a parameter's shape. g: (B, H); e: (B, N), (B, H, N) or (B, H)."""
    e = e.to(g.dtype)
    if kind == "outer":
        return g.t() @ e if e.dim() == 2 else torch.einsum("bh,bhn->hn", g, e)  # (H, N)
    v = (g * e).sum(0)                                                          # (H,)
    return v.sum().reshape(shape) if shape.numel() == 1 else v.reshape(shape)


class TraceInject(torch.autograd.Function):
    """Identity on the membrane whose backward also adds g ⊗ e(t−1) to each parameter.

    ``apply(mem, spec, *params)``: mem (..., H); spec a tuple of (kind, e) per param, kind
    "outer" (e (B, N) or (B, H, N), param (H, N)) or "diag" (e (B, H), param (H,), (1,)
    or ()). Its backward is deliberately *not* the derivative of its forward (the forward
    does not depend on the params), so gradcheck does not apply; the test compares it with
    :func:`trace_inject_ref`, which computes the same gradients with plain autograd.
    """

    @staticmethod
    def forward(ctx, mem: Tensor, spec: tuple, *params: Tensor) -> Tensor:
        ctx.spec = spec
        ctx.shapes = [p.shape for p in params]
        return mem.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        g2 = g.reshape(-1, g.shape[-1])                                         # (B, H)
        grads = [_contract(g2, kind, e, shape) for (kind, e), shape in zip(ctx.spec, ctx.shapes)]
        return (g if ctx.needs_input_grad[0] else None, None, *grads)


def trace_inject_ref(mem: Tensor, spec: tuple, *params: Tensor) -> Tensor:
    """Reference twin of :class:`TraceInject`: ``mem + Σ e·(p − p.detach())`` (value = mem)."""
    m2 = mem.reshape(-1, mem.shape[-1])
    for (kind, e), p in zip(spec, params):
        d = p - p.detach()                                     # zero, but carries ∂/∂p = I
        if kind == "outer":
            m2 = m2 + (e @ d.t() if e.dim() == 2 else torch.einsum("bhn,hn->bh", e, d))
        else:
            m2 = m2 + e * d
    return m2.reshape(mem.shape)


def _check_supported(lif: nn.Module, name: str) -> None:
    bad = [k for k, ok in (("reset_delay=False", getattr(lif, "reset_delay", True)),
                           ("inhibition=True", not getattr(lif, "inhibition", False)),
                           ("state_quant", not getattr(lif, "state_quant", False))) if not ok]
    if bad:
        raise ValueError(f"RTRL: Leaky {name} uses {', '.join(bad)}, whose state Jacobian "
                         "is not β̂ or β̂(1−r); not supported")


class LeakyRTRL:
    """Eligibility traces of one Linear→Leaky pair (a Handler; see module docstring)."""

    def __init__(self, tap: LayerTap):
        _check_supported(tap.lif, tap.name)
        self.tap = tap
        self.params = {"weight": tap.fc.weight, "bias": tap.fc.bias,
                       "beta": tap.lif.beta, "threshold": tap.lif.threshold}
        self.traces = {k: Trace() for k in self.params}
        tap.injector = self.inject
        tap.listeners.append(self)

    @property
    def mode(self) -> int:
        return int(self.tap.lif.reset_mechanism_val)

    def _learnable(self, name: str) -> bool:
        p = self.params[name]
        if name == "threshold" and self.mode != _SUBTRACT:
            return False                   # ϑ only enters through the detached reset
        return isinstance(p, Tensor) and p.requires_grad

    def inject(self, mem_prev: Tensor) -> Tensor:
        spec, params = [], []
        for name, p in self.params.items():
            e = self.traces[name].value
            if e is not None and self._learnable(name):
                spec.append(("outer" if name == "weight" else "diag", e))
                params.append(p)
        return TraceInject.apply(mem_prev, tuple(spec), *params) if params else mem_prev

    @torch.no_grad()
    def on_step(self, tap: LayerTap) -> None:
        """Advance e(t−1) → e(t) with this step's x_t, m_{t−1}, r_t (eq. 7)."""
        lif, H = tap.lif, tap.fc.out_features
        x = tap.x.reshape(-1, tap.x.shape[-1])                               # (B, N)
        B = x.shape[0]
        m = (tap.mem_prev.reshape(B, H) if tap.mem_prev is not None
             else x.new_zeros(B, H))                                         # (B, H)
        beta = lif.beta.detach()
        thr = lif.threshold.detach()
        r = (m > thr).to(m.dtype)                       # snnTorch's mem_reset: H(m − ϑ)
        a = beta.clamp(0, 1)
        if self.mode == _ZERO:
            a = a * (1 - r)                                                  # (B, H)
        if self._learnable("weight"):
            if a.numel() == 1:                          # shared pre-trace e_j (B, N)
                self.traces["weight"].update(x, a.reshape(()))
            else:                                       # per-neuron leak: (B, H, N)
                a3 = a.expand(B, H).unsqueeze(-1)
                self.traces["weight"].update(x.unsqueeze(1).expand(B, H, x.shape[1]), a3)
        if self._learnable("bias"):
            self.traces["bias"].update(m.new_ones(B, H), a)
        if self._learnable("beta"):
            in_range = ((beta >= 0) & (beta <= 1)).to(m.dtype)   # clamp's gradient mask
            imm = m * in_range * ((1 - r) if self.mode == _ZERO else 1)
            self.traces["beta"].update(imm, a)
        if self._learnable("threshold"):
            self.traces["threshold"].update(-r, a)

    def reset(self, batch_size: int) -> None:
        for tr in self.traces.values():
            tr.reset()

    def after_backward(self) -> None:
        pass

    def remove(self) -> None:
        if self.tap.injector == self.inject:
            self.tap.injector = None
        if self in self.tap.listeners:
            self.tap.listeners.remove(self)


def _ssm_handlers(rule: Rule, model: nn.Module) -> list:
    from bimsnn.rules.ssm_rtrl import ssm_handlers  # lazy: ssm_rtrl may import us
    return list(ssm_handlers(rule, model))


class RTRL(Rule):
    """Online RTRL (eq. 7-8): writes ∂L/∂w into ``.grad`` one step at a time.

    Args:
        model: any module with Linear→Leaky pairs (snnTorch tutorial nets unmodified,
            bimsnn.Leaky nets, SpikingMamba nets: their SSMs get ``ssm_handlers``).
        layers: explicit [(fc, lif), ...] pairing (default: registration order).
        check: structural check that each Leaky's input is its Linear's output (+ residual).

    Example:
        >>> import snntorch as snn
        >>> fc, lif = nn.Linear(3, 2), snn.Leaky(beta=0.9)
        >>> net = nn.Sequential(fc, lif)
        >>> rule = RTRL(net); rule.reset(4)
        >>> mem = torch.zeros(4, 2)
        >>> for t in range(5):
        ...     spk, mem = lif(fc(torch.rand(4, 3)), mem)
        ...     rule.backward((mem ** 2).sum())
        >>> fc.weight.grad.shape
        torch.Size([2, 3])
        >>> rule.remove()
    """

    def __init__(self, model: nn.Module, layers: Sequence[Pair] | None = None,
                 check: bool = True):
        super().__init__(model)
        taps = self._attach_taps(layers, check)
        try:
            self.layer_handlers = [LeakyRTRL(t) for t in taps if t.fc is not None]
            self.ssm_handlers = _ssm_handlers(self, model)
        except Exception:
            self.remove()
            raise
        self.handlers = [*self.layer_handlers, *self.ssm_handlers, *taps]
