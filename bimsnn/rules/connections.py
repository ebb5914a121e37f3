"""Synapses as the rules see them: Linear / Conv1d / Conv2d geometry, and the route to a neuron.

Symbols: B batch (leading dims flattened for Linear), N Linear in_features, C conv input
channels, O output units (Linear out_features, conv out_channels), G conv groups,
F fan-in of one output unit (N, or C/G·kernel size), Q conv output positions,
P neuron positions per output channel (Q, or the pooled positions), K conv kernel size.

A connection computes y = W ⋆ x (+ b) from presynaptic activity x. Everything a rule needs
from it is linear in W:

* :meth:`Connection.outer` ``(pre, post) -> Σ post ⊗ pre`` over every (input, output) pair
  that W connects, summed over the batch and positions: the weight gradient of y for an
  output gradient ``post``. Linear: ``postᵀ pre``; conv: one ``conv{1,2}d_weight`` call.
  RTRL contracts its traces with it, STDP's eq. 5 pairs pre and post traces with it.
* :meth:`Connection.apply` ``(pre, w) = w ⋆ pre`` (no bias): its adjoint, used by the
  ``*_ref`` twins.
* :meth:`Connection.patches`: the input that each output unit reads, (O|1, B, P, F)
  (output-unit-major, so RTRL's contraction over (B, P) is one batched matmul).

Conv1d is run as a Conv2d of height 1, and padding (any mode, "same") is applied to the
input with ``F.pad`` exactly as ``nn.Conv*d`` does, so patches, outer and apply share
one geometry.

A :class:`Route` maps the connection output y_t (B, O, Q) to the neuron input (B, O, P):
identity (any reshape, e.g. ``Flatten``), average pooling (constant), or max pooling (a
selection that changes every step). :func:`find_route` reads it off the autograd graph of
the neuron's input, so ``nn.MaxPool2d`` modules and ``F.max_pool2d`` calls alike are seen.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

CONNECTIONS = (nn.Linear, nn.Conv1d, nn.Conv2d)

# Graph nodes through which the connection output may reach the neuron input with ∂ = I.
PASS_THROUGH = {"AddBackward", "UnbindBackward", "SelectBackward", "ToCopyBackward",
                "CloneBackward", "ViewBackward", "UnsafeViewBackward", "ReshapeAliasBackward",
                "AliasBackward", "SqueezeBackward", "UnsqueezeBackward"}
POOLS = {"MaxPool2DWithIndicesBackward": "max", "AvgPool2DBackward": "avg"}


def _node_kind(node) -> str:
    return node.name().rstrip("0123456789")


class Route:
    """Linear map y_t (B, O, Q) → neuron input (B, O, P); see module docstring.

    Attributes: kind ("id", "avg", "max"); const (True unless "max"); O, P.
    For pools, ``grid`` is the pooled input's spatial shape (H, W) (H = 1 for 1-d) and
    ``idx`` (B, O, P) the selected positions (max) or ``args`` the avg_pool2d arguments.
    """

    def __init__(self, kind: str, O: int, P: int, grid: tuple[int, int] | None = None,
                 idx: Tensor | None = None, args: tuple | None = None):
        self.kind, self.O, self.P, self.grid, self.idx, self.args = kind, O, P, grid, idx, args
        self.const = kind != "max"
        self._hw: tuple[int, int] | None = None
        if kind == "avg":
            H, W = self._pooled_hw()
            self.P = H * W

    def T(self, g: Tensor) -> Tensor:
        """Adjoint: (B, O, P) → (B, O, Q)."""
        if self.kind == "id":
            return g
        B = g.shape[0]
        if self.kind == "max":
            out = g.new_zeros(B, self.O, self.grid[0] * self.grid[1])
            return out.scatter_add_(2, self.idx, g)
        tmpl = g.new_empty(B, self.O, *self.grid)
        k, s, p, ceil, incl, div = self.args
        gp = g.reshape(B, self.O, *self._pooled_hw())
        return torch.ops.aten.avg_pool2d_backward(gp, tmpl, k, s, p, ceil, incl, div
                                                  ).reshape(B, self.O, -1)

    def fwd(self, z: Tensor) -> Tensor:
        """The route itself: (B, O', Q) → (B, O', P); O' = O, or any count for "avg"/"id"."""
        if self.kind == "id":
            return z
        if self.kind == "max":
            return z.gather(2, self.idx)
        k, s, p, ceil, incl, div = self.args
        z4 = z.reshape(z.shape[0], z.shape[1], *self.grid)
        return F.avg_pool2d(z4, k, s, p, ceil, incl, div).reshape(z.shape[0], z.shape[1], -1)

    def _pooled_hw(self) -> tuple[int, int]:
        """Pooled (H, W) of an avg route, read off avg_pool2d itself (ceil_mode rules)."""
        if self._hw is None:
            k, s, p, ceil, incl, div = self.args
            self._hw = tuple(F.avg_pool2d(torch.zeros(1, 1, *self.grid), k, s, p, ceil, incl,
                                          div).shape[2:])
        return self._hw

    def gather_patches(self, U: Tensor, groups: int) -> Tensor:
        """Patches (B, G·F, Q) of every conv output position → (O|1, B, P, F) per unit,
        contiguous (O = 1 when every unit reads the same patch: no pooling selection)."""
        B, FG, Q = U.shape
        Fg = FG // groups
        Ut = U.transpose(1, 2).contiguous()                                  # (B, Q, G·F)
        if self.kind == "max":                    # rows (b, q, g) of Ut, in (o, b, p) order
            b = torch.arange(B, device=U.device)[None, :, None]
            g = (torch.arange(self.O, device=U.device) // (self.O // groups))[:, None, None]
            rows = ((b * Q + self.idx.transpose(0, 1)) * groups + g).reshape(-1)
            return Ut.reshape(-1, Fg).index_select(0, rows).reshape(self.O, B, self.P, Fg)
        if self.kind == "avg":
            Ut = self.fwd(U).transpose(1, 2).contiguous()                    # (B, P, G·F)
        Z = Ut.reshape(B, -1, groups, Fg)                                     # (B, P, G, F)
        if groups == 1:
            return Z[..., 0, :].unsqueeze(0)                                  # (1, B, P, F)
        Z = Z.permute(2, 0, 1, 3).repeat_interleave(self.O // groups, dim=0)
        return Z.contiguous()                                                 # (O, B, P, F)


class Connection:
    """Common interface; see module docstring. ``module`` is the wrapped layer."""

    kind = ""

    def __init__(self, module: nn.Module):
        self.module = module
        self.O = 0
        self.groups = 1

    @property
    def weight(self) -> Tensor:
        return self.module.weight

    @property
    def bias(self) -> Tensor | None:
        return self.module.bias

    def canon(self, t: Tensor) -> Tensor:
        """Neuron-space tensor (B, ...) → (B, O, P)."""
        raise NotImplementedError

    def outer(self, pre: Tensor, post: Tensor) -> Tensor:
        raise NotImplementedError

    def apply(self, pre: Tensor, w: Tensor) -> Tensor:
        raise NotImplementedError

    def patches(self, x: Tensor, route: Route) -> Tensor:
        raise NotImplementedError


class LinearConn(Connection):
    """nn.Linear: x (..., N) → y (..., O). Leading dims are batch (B = their product)."""

    kind = "linear"

    def __init__(self, module: nn.Linear):
        super().__init__(module)
        self.O, self.F = module.out_features, module.in_features

    def canon(self, t: Tensor) -> Tensor:
        return t.reshape(-1, self.O, 1)

    def outer(self, pre: Tensor, post: Tensor) -> Tensor:
        """Σ_b post_b ⊗ pre_b: pre (..., N), post (..., O) → (O, N)."""
        return post.reshape(-1, self.O).t() @ pre.reshape(-1, self.F).to(post.dtype)

    def apply(self, pre: Tensor, w: Tensor) -> Tensor:
        return F.linear(pre.to(w.dtype), w)

    def patches(self, x: Tensor, route: Route) -> Tensor:
        return x.reshape(1, -1, 1, self.F)                                   # (1, B, 1, N)

    def y_shape(self, x: Tensor) -> tuple[int, ...]:
        return (*x.shape[:-1], self.O)


class ConvConn(Connection):
    """nn.Conv1d / nn.Conv2d: x ``(B, C, *in)`` → y ``(B, O, *out)``; see module docstring."""

    kind = "conv"

    def __init__(self, module: nn.Conv1d | nn.Conv2d):
        super().__init__(module)
        m = module
        self.nd = 1 if isinstance(m, nn.Conv1d) else 2
        self.O, self.C, self.groups = m.out_channels, m.in_channels, m.groups

        def two(v):
            return (1, *v) if self.nd == 1 else tuple(v)

        self.k, self.stride, self.dilation = two(m.kernel_size), two(m.stride), two(m.dilation)
        pad = list(m._reversed_padding_repeated_twice)                       # F.pad order
        self.pad = pad + [0, 0] if self.nd == 1 else pad
        self.pad_mode = "constant" if m.padding_mode == "zeros" else m.padding_mode
        self.F = self.C // self.groups * self.k[0] * self.k[1]
        self.w2 = (self.O, self.C // self.groups, *self.k)

    def _prep(self, x: Tensor) -> Tensor:
        x = x.unsqueeze(2) if self.nd == 1 else x
        return F.pad(x, self.pad, mode=self.pad_mode) if any(self.pad) else x

    def _4d(self, y: Tensor) -> Tensor:
        return y.unsqueeze(2) if self.nd == 1 and y.dim() == 3 else y

    def canon(self, t: Tensor) -> Tensor:
        return t.reshape(t.shape[0], self.O, -1)

    def outer(self, pre: Tensor, post: Tensor) -> Tensor:
        """Σ over batch and positions of post ⊗ input patch: pre ``(B, C, *in)``, post
        ``(B, O, *out)`` or (B, O, Q) → weight shape. One ``conv2d_weight`` call."""
        x = self._prep(pre.to(post.dtype))
        H = (x.shape[2] - self.dilation[0] * (self.k[0] - 1) - 1) // self.stride[0] + 1
        g = post.reshape(post.shape[0], self.O, H, -1)
        w = torch.nn.grad.conv2d_weight(x, self.w2, g, self.stride, 0, self.dilation,
                                        self.groups)
        return w.reshape(self.weight.shape)

    def apply(self, pre: Tensor, w: Tensor) -> Tensor:
        y = F.conv2d(self._prep(pre.to(w.dtype)), w.reshape(self.w2), None, self.stride, 0,
                     self.dilation, self.groups)
        return y.squeeze(2) if self.nd == 1 else y

    def unfold(self, x: Tensor) -> Tensor:
        """``(B, C, *in)`` → (B, C/G·K per group × G, Q) input patches, channel-major as W."""
        return F.unfold(self._prep(x), self.k, self.dilation, 0, self.stride)

    def patches(self, x: Tensor, route: Route) -> Tensor:
        return route.gather_patches(self.unfold(x), self.groups)


def connection(module: nn.Module) -> Connection:
    """Wrap a Linear / Conv1d / Conv2d; TypeError for anything else."""
    if isinstance(module, nn.Linear):
        return LinearConn(module)
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        return ConvConn(module)
    raise TypeError(f"{type(module).__name__} is not a connection bimsnn.rules can trace "
                    "(supported: nn.Linear, nn.Conv1d, nn.Conv2d)")


def _pool_route(node, conn: Connection, y: Tensor) -> Route:
    """Route of one pooling node whose input is (a view of) y (B, O, *Q)."""
    src = node._saved_self
    B, O = y.shape[0], conn.O
    if src.dim() != 4 or src.shape[0] != B or src.shape[1] != O or src[0, 0].numel() * O \
            != y[0].numel():
        raise RuntimeError(f"pooling input {tuple(src.shape)} is not the connection output "
                           f"{tuple(y.shape)} laid out as (B, O, ...)")
    grid = (src.shape[2], src.shape[3])
    if POOLS[_node_kind(node)] == "max":
        idx = node._saved_result1.detach()
        return Route("max", O, idx[0, 0].numel(), grid, idx=idx.reshape(B, O, -1))
    args = (tuple(node._saved_kernel_size), tuple(node._saved_stride or node._saved_kernel_size),
            tuple(node._saved_padding), node._saved_ceil_mode, node._saved_count_include_pad,
            node._saved_divisor_override)
    return Route("avg", O, 0, grid, args=args)


def find_route(cur: Tensor, y: Tensor, conn: Connection, y_t: Tensor | None = None,
               max_depth: int = 12) -> Route | None:
    """How the neuron input ``cur`` depends on the connection output ``y`` (see module
    docstring), or None if the autograd graph shows no such path.

    ``y_t`` is this step's slice of y when the connection ran once on a whole (T, B, ...)
    sequence (default: y itself). The path may pass through add (other additive terms are
    allowed), view/select/copy nodes and at most one max- or average-pooling node. Without
    a graph (``no_grad``) only identity is recognised: as many elements as y_t.
    """
    y_t = y if y_t is None else y_t
    O = conn.O

    def identity():
        return Route("id", O, conn.canon(y_t).shape[2]) if cur.numel() == y_t.numel() else None

    if cur is y_t or y.grad_fn is None:
        if y.grad_fn is None and cur.grad_fn is not None and conn.weight.requires_grad:
            return None               # a trainable connection without graph cannot drive cur
        return identity()
    stack = [(cur.grad_fn, 0, None)]
    while stack:
        node, depth, pool = stack.pop()
        if node is None or depth > max_depth:
            continue
        if node is y.grad_fn:
            return identity() if pool is None else _pool_route(pool, conn, y_t)
        kind = _node_kind(node)
        if kind in PASS_THROUGH or (kind in POOLS and pool is None):
            nxt = node if kind in POOLS else pool
            stack.extend((n, depth + 1, nxt) for n, _ in node.next_functions)
    return None


def route_from_module(pool: nn.Module, y: Tensor, conn: Connection) -> Route:
    """The same route, recomputed from a pooling module (used when there is no graph)."""
    B, O = y.shape[0], conn.O
    y4 = y.reshape(B, O, 1, -1) if y.dim() == 3 else y
    grid = (y4.shape[2], y4.shape[3])
    one = (1,) if y.dim() == 3 else ()

    def two(v):
        v = v if isinstance(v, tuple) else (v,) * (1 if one else 2)
        return (*one, *v) if one else v

    if isinstance(pool, (nn.MaxPool1d, nn.MaxPool2d)):
        k = two(pool.kernel_size)
        s = two(pool.stride if pool.stride is not None else pool.kernel_size)
        _, idx = F.max_pool2d(y4, k, s, two(pool.padding), two(pool.dilation),
                              pool.ceil_mode, return_indices=True)
        return Route("max", O, idx[0, 0].numel(), grid, idx=idx.reshape(B, O, -1))
    k = two(pool.kernel_size)
    s = two(pool.stride if pool.stride is not None else pool.kernel_size)
    div = getattr(pool, "divisor_override", None)
    return Route("avg", O, 0, grid, args=(k, s, two(pool.padding), pool.ceil_mode,
                                          pool.count_include_pad, div))
