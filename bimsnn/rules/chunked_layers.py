"""Per-layer machinery of the chunked rules: the boundary injection and the layer handlers.

Symbols: K chunk length, B batch (leading dims flattened), N Linear in_features, H Leaky
width, E SSM channels, Ns SSM state size, θ a layer's own recurrent parameters.

A layer's state s_0 entering a chunk is detached and passed through :class:`ChunkInject`,
an identity whose backward also adds g_0·e_0 to θ's gradients (eq. 8 at the boundary),
g_0 = ∂L_chunk/∂s_0 being what autograd computes inside the chunk, e_0 = ∂s_0/∂θ the
eligibility trace (eq. 7) carried from earlier chunks. Then e_0 is advanced to e_K in
closed form (:mod:`bimsnn.rules.scan_traces`, :mod:`bimsnn.rules.chunked_ssm`): Leaky
traces (small) right after the chunk's forward, out of place, since the pending backward
still reads e_0; SSM traces (large) in place after the chunk's backward, or out of place
when the next chunk starts first.

Hook points (restored exactly by ``remove()``)::

    LeakyChunkTap   wraps ``leaky.multi_step`` on the instance + a forward hook on the
                    paired ``nn.Linear`` recording its (K, B, N) input.
    SSMChunkRTRL    (in bimsnn.rules.chunked_ssm) wraps ``ssm.forward(u, h0)``.
    StateDetacher   wraps ``forward_seq`` / a stateful block's ``forward`` so the incoming
                    state (any NamedTuple tree) carries no graph from the previous chunk.
"""

from __future__ import annotations

from collections.abc import Callable

import snntorch as snn
import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from bimsnn.rules import scan_traces as st
from bimsnn.rules.base import accumulate_grad
from bimsnn.rules.connections import PASS_THROUGH
from bimsnn.rules.dynamics import check_traceable, spec_of
from bimsnn.rules.traces import decay_from_tau
from bimsnn.state import detach_tree


def _feeds_additively(cur: Tensor, y: Tensor, fc: nn.Module, max_depth: int = 8) -> bool:
    """True if ``cur`` is ``y`` plus terms that do not depend on it, by the autograd graph
    (the structural check of the per-step rules; under no_grad only shapes are checked)."""
    if cur is y:
        return True
    if y.grad_fn is None:
        return cur.grad_fn is None or not fc.weight.requires_grad
    stack = [(cur.grad_fn, 0)]
    while stack:
        node, depth = stack.pop()
        if node is None or depth > max_depth:
            continue
        if node is y.grad_fn:
            return True
        if node.name().rstrip("0123456789") in PASS_THROUGH:
            stack.extend((n, depth + 1) for n, _ in node.next_functions)
    return False


class ChunkInject(torch.autograd.Function):
    """``apply(s, contract, *params) -> s`` (a copy); backward adds ``contract(g, need)``.

    ``contract(g, need) -> tuple`` returns Σ g·e_0 for each param (None where not needed).
    Its backward is by design not the derivative of its forward (the forward is evaluated
    at θ = θ_0, where e_0·(θ − θ_0) = 0): it is the derivative of the tangent model
    :func:`chunk_inject_ref`, against which the tests compare it (gradcheck covers s).
    """

    @staticmethod
    def forward(ctx, s: Tensor, contract: Callable, *params: Tensor) -> Tensor:
        ctx.contract = contract
        return s.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        grads = ctx.contract(g, ctx.needs_input_grad[2:])
        return (g if ctx.needs_input_grad[0] else None, None, *grads)


def chunk_inject_ref(s: Tensor, tangent: Callable, *params: Tensor) -> Tensor:
    """Reference twin of :class:`ChunkInject`: ``s + tangent(θ − sg θ)`` (value = s)."""
    return s + tangent(*(None if p is None else p - p.detach() for p in params))


def _wrap(obj: nn.Module, name: str, fn: Callable) -> Callable:
    """Install ``fn`` as an instance attribute; returns the restore function."""
    had_own = name in obj.__dict__
    orig = obj.__dict__.get(name)

    def restore() -> None:
        if obj.__dict__.get(name) is fn:
            if had_own:
                setattr(obj, name, orig)
            else:
                delattr(obj, name)
    setattr(obj, name, fn)
    return restore


class LeakyChunkTap:
    """Chunk-level observer of one Linear→Leaky pair (``fc=None``: a Leaky only detached).

    After each ``multi_step`` it holds, detached: ``x`` (K, B, N) the Linear's input, ``m0``
    (B, H) the membrane entering the chunk, ``mem`` and ``spk`` (K, B, H). Subscribers:
    ``injector(m0, fresh) -> m0'`` (RTRL) and ``listeners`` (``on_chunk(tap)``).
    """

    def __init__(self, fc: nn.Linear | None, lif: nn.Module, check: bool = True,
                 name: str = "", plastic_without_grad: bool = False):
        if getattr(lif.__dict__.get("multi_step"), "_chunk_tap", None) is not None:
            raise RuntimeError(f"{name}: this Leaky already has a chunked rule attached: "
                               "call remove() on the other rule first")
        if not (isinstance(lif, snn.Leaky) and callable(getattr(lif, "multi_step", None))):
            raise TypeError(f"{name}: chunked rules support bimsnn.Leaky neurons (with "
                            f"multi_step), got {type(lif).__name__}; use the per-step rules")
        if fc is not None and not isinstance(fc, nn.Linear):
            raise TypeError(f"{name}: chunked rules support nn.Linear → Leaky pairs, got "
                            f"{type(fc).__name__}; use the per-step rules")
        self.fc, self.lif, self.check, self.name = fc, lif, check, name
        self.plastic_without_grad = plastic_without_grad
        self.injector: Callable | None = None
        self.listeners: list = []
        self.x = self.m0 = self.mem = self.spk = None
        self.steps = 0                                  # plastic steps seen since reset
        self._xs = self._y = None
        self._orig = lif.multi_step

        def multi_step(cur_seq: Tensor, mem0: Tensor | None = None):
            return self._multi_step(cur_seq, mem0)
        multi_step._chunk_tap = self
        self._restore = _wrap(lif, "multi_step", multi_step)
        self._hook = fc.register_forward_hook(self._fc_hook) if fc is not None else None

    def reset(self, batch_size: int) -> None:
        self.x = self.m0 = self.mem = self.spk = None
        self.steps = 0

    def after_backward(self) -> None:
        pass

    def remove(self) -> None:
        self._restore()
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self.x = self.m0 = self.mem = self.spk = self._xs = self._y = None

    def _active(self) -> bool:
        return self.lif.training and (self.plastic_without_grad or torch.is_grad_enabled())

    def _fc_hook(self, fc: nn.Module, args: tuple, out: Tensor) -> None:
        self._xs, self._y = args[0].detach(), out

    def _take_input(self, cur: Tensor) -> Tensor:
        y, xs = self._y, self._xs
        self._xs = self._y = None                       # one Linear call per chunk
        if y is None:
            raise RuntimeError(f"{self.name}: multi_step ran without a fresh call of its "
                               "paired Linear; pass layers=[(fc, lif), ...]")
        if y.shape != cur.shape:
            raise RuntimeError(f"{self.name}: Leaky input {tuple(cur.shape)} is not its paired "
                               f"Linear's output {tuple(y.shape)}")
        if self.check and not _feeds_additively(cur, y, self.fc):
            raise RuntimeError(f"{self.name}: the Leaky's input is not its paired Linear's "
                               "output (plus an additive residual); pass layers=... or check=False")
        return xs.reshape(cur.shape[0], -1, xs.shape[-1])

    def _multi_step(self, cur_seq: Tensor, mem0: Tensor | None):
        fresh = mem0 is None
        m0 = torch.zeros_like(cur_seq[0]) if fresh else mem0.detach()      # online: no graph
        if not self._active():
            return self._orig(cur_seq, m0)
        x = self._take_input(cur_seq) if self.fc is not None else None
        m_in = m0
        if self.injector is not None and torch.is_grad_enabled():
            m_in = self.injector(m0, fresh)
        spk, mem = self._orig(cur_seq, m_in)
        K, H = cur_seq.shape[0], cur_seq.shape[-1]
        self.x, self.m0 = x, m0.reshape(-1, H)
        self.mem, self.spk = mem.detach().reshape(K, -1, H), spk.detach().reshape(K, -1, H)
        self.steps += K
        for listener in self.listeners:
            listener.on_chunk(self)
        return spk, mem


class LeakyChunkRTRL:
    """RTRL traces of one Linear→Leaky pair, advanced per chunk (a Handler)."""

    def __init__(self, tap: LeakyChunkTap):
        check_traceable(tap.lif, spec_of(tap.lif, tap.name), tap.name)   # per-step limits
        self.tap = tap
        lif = tap.lif
        self.mode = int(lif.reset_mechanism_val)
        params = {"weight": tap.fc.weight, "bias": tap.fc.bias, "beta": lif.beta,
                  "threshold": lif.threshold}
        self.params = {k: p for k, p in params.items()
                       if isinstance(p, Tensor) and p.requires_grad
                       and not (k == "threshold" and self.mode != st.SUBTRACT)}
        self.traces: dict | None = None
        self._pending: tuple | None = None     # the last chunk, not yet advanced over
        tap.injector = self.inject
        tap.listeners.append(self)

    def numel(self) -> int:
        return sum(t.numel() for t in (self.traces or {}).values() if t is not None)

    def inject(self, m0: Tensor, fresh: bool) -> Tensor:
        if fresh:
            self.traces = self._pending = None
        self._advance()
        if self.traces is None or not self.params:
            return m0
        if next(iter(self.traces.values())).shape[0] != m0.reshape(-1, m0.shape[-1]).shape[0]:
            raise ValueError(f"{self.tap.name}: batch changed; call rule.reset(batch_size)")
        e, names = self.traces, list(self.params)
        shapes = {k: p.shape for k, p in self.params.items()}

        def contract(g: Tensor, need: tuple) -> tuple:
            res = st.leaky_contract(g.reshape(-1, g.shape[-1]), e, shapes)
            return tuple(res[k] if n else None for k, n in zip(names, need))
        return ChunkInject.apply(m0, contract, *self.params.values())

    def on_chunk(self, tap: LeakyChunkTap) -> None:
        """Keep what the advance over this chunk needs; it runs when (if) a next chunk of
        the same sequence starts, so the last chunk of a sequence costs nothing."""
        if self.params:
            lif = tap.lif
            self._pending = (tap.x, tap.m0, tap.mem, lif.beta.detach().clone(),
                             lif.threshold.detach().clone())

    @torch.no_grad()
    def _advance(self) -> None:
        if self._pending is None:
            return
        x, m0, mem, beta, thr = self._pending
        self._pending = None
        e = self.traces if self.traces is not None else dict.fromkeys(self.params)
        self.traces = st.leaky_advance(e, x, m0, mem, beta, thr, self.mode)

    def reset(self, batch_size: int) -> None:
        self.traces = self._pending = None

    def after_backward(self) -> None:
        pass

    def remove(self) -> None:
        if self.tap.injector == self.inject:
            self.tap.injector = None
        if self in self.tap.listeners:
            self.tap.listeners.remove(self)
        self.traces = self._pending = None


class ChunkSTDPLayer:
    """Pair-based STDP (eq. 5-6) of one pair, summed per chunk by :func:`stdp_chunk`.

    Same numbers as rules/stdp.py's per-step STDPLayer: Ω averaged over the batch, soft
    bounds with the weight at the chunk, ``.grad -= scale·Ω`` at each ``after_backward``.
    """

    def __init__(self, tap: LeakyChunkTap, cfg):
        self.tap, self.cfg = tap, cfg
        self.d_plus, self.d_minus = decay_from_tau(cfg.tau_plus), decay_from_tau(cfg.tau_minus)
        self.pre = self.post = None                       # x̄ (B, N), ȳ (B, H)
        self.omega = torch.zeros_like(tap.fc.weight, requires_grad=False)   # since reset
        self.pending = torch.zeros_like(self.omega)                          # since flush
        self.scale = 1.0
        tap.listeners.append(self)

    @property
    def weight(self) -> Tensor:
        return self.tap.fc.weight

    @torch.no_grad()
    def on_chunk(self, tap: LeakyChunkTap) -> None:
        c = self.cfg
        x, s = tap.x, tap.spk.to(tap.x.dtype)                              # (K, B, N), (K, B, H)
        B = x.shape[1]
        if self.pre is not None and self.pre.shape[0] != B:               # new batch: restart
            self.pre = self.post = None
        ltp, ltd, self.pre, self.post = st.stdp_chunk(x, s, self.pre, self.post,
                                                      self.d_plus, self.d_minus)
        ltp, ltd = ltp / B, ltd / B
        if c.bound == "soft":
            w = tap.fc.weight.detach()
            ltp, ltd = (c.w_max - w) * ltp, (w - c.w_min) * ltd
        dw = (c.A_plus * ltp - c.A_minus * ltd).to(self.omega.dtype)
        self.omega += dw
        self.pending += dw

    def reset(self, batch_size: int) -> None:
        self.pre = self.post = None
        self.omega.zero_()
        self.pending.zero_()

    def after_backward(self) -> None:
        if self.scale != 0.0:
            accumulate_grad(self.tap.fc.weight, -self.scale * self.pending)
        self.pending.zero_()

    def remove(self) -> None:
        if self in self.tap.listeners:
            self.tap.listeners.remove(self)


class StateDetacher:
    """Wraps ``module.<method>(x, state, ...)`` so the incoming state carries no graph."""

    def __init__(self, module: nn.Module, method: str):
        orig = getattr(module, method)

        def wrapped(x, state=None, *args, **kwargs):
            return orig(x, detach_tree(state), *args, **kwargs)
        self._restore = _wrap(module, method, wrapped)

    def reset(self, batch_size: int) -> None:
        pass

    def after_backward(self) -> None:
        pass

    def remove(self) -> None:
        self._restore()
