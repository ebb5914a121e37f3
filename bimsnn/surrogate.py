"""Surrogate spike functions whose derivative is exposed, for hand-written backward passes.

Symbols: x = U − U_thr, the membrane potential shifted by the threshold (any shape).

Each surrogate is a Heaviside step in the forward pass, S = H(x) = 1[x > 0], and in the
backward pass uses the derivative σ'(x) of a smooth primitive σ(x) ≈ H(x):

    atan(alpha)          σ(x) = 1/2 + arctan(π α x / 2) / π      σ'(x) = (α/2) / (1 + (π α x / 2)²)
    fast_sigmoid(slope)  σ(x) = x / (1 + k|x|)                   σ'(x) = 1 / (1 + k|x|)²
    sigmoid(slope)       σ(x) = 1 / (1 + e^{−k x})               σ'(x) = k e^{−k x} / (e^{−k x} + 1)²
    straight_through()   σ(x) = x                                σ'(x) = 1

Forward and backward are bit-for-bit those of ``snntorch.surrogate.atan`` / ``fast_sigmoid`` /
``sigmoid`` / ``straight_through_estimator`` (the same floating-point operations in the same
order), except that spikes take the input's dtype where snnTorch always returns float32.

Unlike snnTorch's closures, the objects here expose ``derivative`` (and ``grad``, the
vector-Jacobian product, in snnTorch's operation order), so a custom ``autograd.Function`` can
apply the surrogate to a whole (T, B, ...) sequence at once. :func:`as_surrogate` also
recognises snnTorch's own closures and converts them.

Example::

    >>> import torch
    >>> sg = atan(alpha=2.0)
    >>> x = torch.tensor([-1.0, 0.0, 0.5], requires_grad=True)
    >>> sg(x)
    tensor([0., 0., 1.], grad_fn=<_SpikeFnBackward>)
    >>> torch.allclose(sg.derivative(x.detach()), torch.tensor([0.0920, 1.0, 0.2884]), atol=1e-4)
    True
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["Surrogate", "ATan", "FastSigmoid", "Sigmoid", "StraightThrough", "atan",
           "fast_sigmoid", "sigmoid", "straight_through", "as_surrogate"]


class _SpikeFn(torch.autograd.Function):
    """S = H(x) forward; grad_x = surrogate.grad(x, grad_S) backward."""

    @staticmethod
    def forward(ctx, x: Tensor, surrogate: Surrogate) -> Tensor:
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (x,) = ctx.saved_tensors
        return ctx.surrogate.grad(x, grad_out), None


class Surrogate:
    """Base class: Heaviside forward, ``derivative`` of a smooth ``primitive`` backward.

    Subclasses implement :meth:`primitive` and :meth:`derivative`; they may override
    :meth:`grad` to reproduce a reference implementation's rounding exactly.
    """

    def __call__(self, x: Tensor) -> Tensor:
        """Spikes H(x) in x's dtype, differentiable through the surrogate. Same shape as x."""
        return _SpikeFn.apply(x, self)

    def primitive(self, x: Tensor) -> Tensor:
        """Smooth σ(x) whose exact derivative is :meth:`derivative` (used by gradcheck)."""
        raise NotImplementedError

    def derivative(self, x: Tensor) -> Tensor:
        """σ'(x), elementwise."""
        raise NotImplementedError

    def grad(self, x: Tensor, grad_out: Tensor) -> Tensor:
        """Vector-Jacobian product grad_out · σ'(x), elementwise; must return a new tensor."""
        return self.derivative(x) * grad_out

    def grad_acc_(self, x: Tensor, grad_out: Tensor, acc: Tensor | None) -> Tensor:
        """acc + grad_out · σ'(x) (acc None: 0). May overwrite x; for whole (T, B, ...) blocks.

        Subclasses fuse it into few passes over memory; rounding may differ from :meth:`grad`.
        """
        g = self.grad(x, grad_out)
        return g if acc is None else g.add_(acc)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self), tuple(vars(self).items())))


class ATan(Surrogate):
    """Arc-tangent surrogate (Fang et al., ICCV 2021); snnTorch's default."""

    def __init__(self, alpha: float = 2.0):
        self.alpha = alpha

    def primitive(self, x: Tensor) -> Tensor:
        return 0.5 + torch.atan(math.pi / 2 * self.alpha * x) / math.pi

    def derivative(self, x: Tensor) -> Tensor:
        # Same expression and order as snntorch.surrogate.ATan.backward.
        return self.alpha / 2 / (1 + (torch.pi / 2 * self.alpha * x).pow_(2))

    def grad_acc_(self, x: Tensor, grad_out: Tensor, acc: Tensor | None) -> Tensor:
        # σ' = 1 / (2/α + (2/α)(πα/2)² x²): one addcmul for the denominator, one addcdiv.
        k = 2 / self.alpha
        den = torch.addcmul(x.new_tensor(k), x, x, value=k * (math.pi / 2 * self.alpha) ** 2,
                            out=x)
        return torch.div(grad_out, den, out=x) if acc is None else torch.addcdiv(
            acc, grad_out, den, out=x)


class FastSigmoid(Surrogate):
    """Fast-sigmoid surrogate (SuperSpike; Zenke & Ganguli 2018)."""

    def __init__(self, slope: float = 25):
        self.slope = slope

    def primitive(self, x: Tensor) -> Tensor:
        return x / (1 + self.slope * x.abs())

    def derivative(self, x: Tensor) -> Tensor:
        return 1.0 / (self.slope * torch.abs(x) + 1.0) ** 2

    def grad(self, x: Tensor, grad_out: Tensor) -> Tensor:
        # snnTorch divides rather than multiplies by the reciprocal; keep its rounding.
        return grad_out / (self.slope * torch.abs(x) + 1.0) ** 2

    def grad_acc_(self, x: Tensor, grad_out: Tensor, acc: Tensor | None) -> Tensor:
        den = x.abs_().mul_(self.slope).add_(1.0).square_()
        return torch.div(grad_out, den, out=x) if acc is None else torch.addcdiv(
            acc, grad_out, den, out=x)


class Sigmoid(Surrogate):
    """Logistic-sigmoid surrogate (SuperSpike; Zenke & Ganguli 2018)."""

    def __init__(self, slope: float = 25):
        self.slope = slope

    def primitive(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.slope * x)

    def derivative(self, x: Tensor) -> Tensor:
        return self.grad(x, torch.ones_like(x))

    def grad(self, x: Tensor, grad_out: Tensor) -> Tensor:
        e = torch.exp(-self.slope * x)
        return grad_out * self.slope * e / ((e + 1) ** 2)


class StraightThrough(Surrogate):
    """Straight-through estimator: σ'(x) = 1."""

    def primitive(self, x: Tensor) -> Tensor:
        return x.clone()

    def derivative(self, x: Tensor) -> Tensor:
        return torch.ones_like(x)

    def grad(self, x: Tensor, grad_out: Tensor) -> Tensor:
        return grad_out.clone()


def atan(alpha: float = 2.0) -> ATan:
    """Same forward/backward as ``snntorch.surrogate.atan(alpha)``."""
    return ATan(alpha)


def fast_sigmoid(slope: float = 25) -> FastSigmoid:
    """Same forward/backward as ``snntorch.surrogate.fast_sigmoid(slope)``."""
    return FastSigmoid(slope)


def sigmoid(slope: float = 25) -> Sigmoid:
    """Same forward/backward as ``snntorch.surrogate.sigmoid(slope)``."""
    return Sigmoid(slope)


def straight_through() -> StraightThrough:
    """Same forward/backward as ``snntorch.surrogate.straight_through_estimator()``."""
    return StraightThrough()


# snnTorch closure name -> (our class, name of the closure's free variable holding its parameter)
_SNNTORCH = {
    "atan.<locals>.inner": (ATan, "alpha"),
    "fast_sigmoid.<locals>.inner": (FastSigmoid, "slope"),
    "sigmoid.<locals>.inner": (Sigmoid, "slope"),
    "straight_through_estimator.<locals>.inner": (StraightThrough, None),
}


def as_surrogate(spike_grad: object) -> Surrogate | None:
    """Return a :class:`Surrogate` equivalent to ``spike_grad``, or None if it is unknown.

    ``None`` means snnTorch's default, ``atan(alpha=2.0)``. Closures made by
    ``snntorch.surrogate.atan / fast_sigmoid / sigmoid / straight_through_estimator`` are
    converted by reading their parameter from the closure. Any other callable returns None:
    callers then fall back to plain autograd (e.g. ``lif_multi_step_ref``).
    """
    if spike_grad is None:
        return ATan(2.0)
    if isinstance(spike_grad, Surrogate):
        return spike_grad
    if getattr(spike_grad, "__module__", None) != "snntorch.surrogate":
        return None
    entry = _SNNTORCH.get(getattr(spike_grad, "__qualname__", ""))
    if entry is None:
        return None
    cls, param = entry
    if param is None:
        return cls()
    free = dict(zip(spike_grad.__code__.co_freevars,
                    (c.cell_contents for c in spike_grad.__closure__ or ())))
    return cls(free[param]) if param in free else None
