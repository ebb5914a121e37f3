"""LayerTap: the hooks on one connection → neuron pair, and what they record per step.

Symbols: B batch, S per-sample neuron state shape, N / ``(C, *in)`` presynaptic shape.

The tap hooks the connection's forward (records its input x and output y) and the neuron's
forward-pre and forward hooks. At each neuron call it

1. finds this step's presynaptic input ``x`` and :class:`~bimsnn.rules.connections.Route`
   (the structural check; see :mod:`bimsnn.rules.base`);
2. detaches every incoming state of ``spec.slots`` (argument, keyword or ``init_hidden``
   buffer) and records it in ``prev`` (None where the neuron starts fresh);
3. lets its ``injector`` (one, RTRL) rewrite the carried states ``spec.states``;
4. after the call records ``spk`` and the neuron's reset ``reset_sig`` and calls every
   listener's ``on_step(tap)``.

Everything recorded is detached. Plasticity runs only while the neuron is in train mode
and grad mode is on (or ``plastic_without_grad``, pure STDP).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from torch import Tensor, nn

from bimsnn.rules.connections import (
    Connection,
    LinearConn,
    Route,
    connection,
    find_route,
    route_from_module,
)
from bimsnn.rules.dynamics import NeuronSpec, spec_of

# Neurons currently tapped: two rules on one neuron would inject traces twice.
_TAPPED: weakref.WeakSet = weakref.WeakSet()


class LayerTap:
    """Hooks on one connection→neuron pair (``fc=None``: a neuron that is only detached).

    Args:
        fc: nn.Linear / nn.Conv1d / nn.Conv2d, or None.
        lif: a supported snnTorch neuron (TypeError otherwise, see
            :func:`~bimsnn.rules.dynamics.spec_of`).
        check: run the structural check every step.
        pool: a pooling module registered between fc and lif, used to recompute the route
            when there is no autograd graph (pure STDP under ``no_grad``).
    Attributes (per step, detached): ``x`` presynaptic input, ``route``, ``prev`` {slot:
        incoming state or None}, ``spk`` output spikes, ``reset_sig`` the reset r_t;
        ``conn`` / ``rec`` the feed-forward and recurrent :class:`Connection` (or None).
    """

    def __init__(self, fc: nn.Module | None, lif: nn.Module, check: bool = True,
                 name: str = "", plastic_without_grad: bool = False,
                 pool: nn.Module | None = None):
        self.spec: NeuronSpec = spec_of(lif, name)
        if lif in _TAPPED:
            raise RuntimeError(f"{name or type(lif).__name__} already has a rule attached: "
                               "call remove() on the other rule first")
        self.fc, self.lif, self.check, self.name, self.pool = fc, lif, check, name, pool
        self.conn: Connection | None = None if fc is None else connection(fc)
        self.rec: Connection | None = (connection(lif.recurrent)
                                       if self.spec.recurrent in ("linear", "conv") else None)
        self.plastic_without_grad = plastic_without_grad
        self.injector: Callable[[dict], dict] | None = None
        self.listeners: list = []
        self.x: Tensor | None = None
        self.route: Route | None = None
        self.prev: dict[str, Tensor | None] = {}
        self.spk: Tensor | None = None
        self.reset_sig: Tensor | None = None
        self.cur: Tensor | None = None     # this step's input current (detached)
        self._xs: Tensor | None = None     # last connection input
        self._y: Tensor | None = None      # last connection output (kept for the check)
        self._k = 0                        # neuron calls since that connection call
        self.steps = 0                     # plastic neuron calls since reset()
        _TAPPED.add(lif)
        self._hooks = [lif.register_forward_pre_hook(self._pre, with_kwargs=True),
                       lif.register_forward_hook(self._post)]
        if fc is not None:
            self._hooks.append(fc.register_forward_hook(self._fc_hook))

    @property
    def mem_prev(self) -> Tensor | None:
        return self.prev.get("mem")

    def zeros(self) -> Tensor:
        """Zeros like this step's input current (a fresh state)."""
        return torch.zeros_like(self.cur)

    def state(self, slot: str) -> Tensor:
        """Incoming state ``slot`` of this step; zeros where the neuron started fresh."""
        v = self.prev.get(slot)
        return self.zeros() if v is None else v.to(self.cur.dtype)

    # -- Handler protocol -------------------------------------------------------------
    def reset(self, batch_size: int) -> None:
        self.x = self.route = self.spk = self.reset_sig = None
        self.prev = {}
        self.steps = 0

    def after_backward(self) -> None:
        pass

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        _TAPPED.discard(self.lif)
        self.x = self.spk = self._xs = self._y = self.cur = self.route = None
        self.prev = {}

    # -- hooks ------------------------------------------------------------------------
    def _active(self) -> bool:
        return self.lif.training and (self.plastic_without_grad or torch.is_grad_enabled())

    def _fc_hook(self, fc: nn.Module, args: tuple, out: Tensor) -> None:
        self._xs, self._y, self._k = args[0].detach(), out, 0

    def _step_input(self, cur: Tensor) -> tuple[Tensor, Route]:
        y, x, y_t = self._y, self._xs, self._y
        what = type(self.fc).__name__
        if y is None:
            raise RuntimeError(f"{self.name}: the neuron ran before its paired {what}; pair "
                               "explicitly with layers=[(fc, lif), ...]")
        if (isinstance(self.conn, LinearConn) and y.dim() == cur.dim() + 1
                and y.shape[1:] == cur.shape):                    # Linear ran on (T, ...)
            if self._k >= y.shape[0]:
                raise RuntimeError(f"{self.name}: neuron called more often than the Linear's "
                                   f"sequence length {y.shape[0]}")
            x, y_t = self._xs[self._k], y[self._k]
            self._k += 1
        if not self.check and cur.shape == y_t.shape:
            return x, Route("id", self.conn.O, self.conn.canon(y_t).shape[2])
        route = find_route(cur, y, self.conn, y_t)
        if route is None and self.pool is not None and y.grad_fn is None:
            route = route_from_module(self.pool, y_t, self.conn)
        if route is None:
            raise RuntimeError(
                f"{self.name}: the neuron's input is not its paired {what}'s output (reshaped, "
                "pooled at most once, plus an additive residual); pass layers=[(fc, lif), ...]"
                " or check=False")
        if isinstance(self.conn, LinearConn) and route.kind != "id":
            raise RuntimeError(f"{self.name}: pooling between a Linear and its neuron is not "
                               "supported")
        return x, route

    def _pre(self, lif: nn.Module, args: tuple, kwargs: dict):
        cur = args[0] if args else kwargs["input_"]
        self.cur = cur.detach()
        active = self._active()
        if self.conn is not None and active:
            self.x, self.route = self._step_input(cur)
        args, where, new = list(args), {}, {}
        for i, slot in enumerate(self.spec.slots):
            if len(args) > i + 1 and args[i + 1] is not None:
                where[slot], v = i + 1, args[i + 1]
            elif kwargs.get(slot) is not None:
                where[slot], v = "kw", kwargs[slot]
            else:
                where[slot], v = "buf", getattr(lif, slot, None)
            if isinstance(v, Tensor):
                new[slot] = v.detach()                     # online: cut the link to t−1
        self.prev = {s: (v if v.shape == cur.shape else None) for s, v in new.items()}
        carried = {s: self.prev.get(s) for s in self.spec.states}
        if (self.injector is not None and active and torch.is_grad_enabled()
                and any(v is not None for v in carried.values())):
            new.update(self.injector(carried))
        for slot, v in new.items():
            if where[slot] == "kw":
                kwargs = {**kwargs, slot: v}
            elif where[slot] == "buf":
                setattr(lif, slot, v)
            else:
                args[where[slot]] = v
        return tuple(args), kwargs

    def _post(self, lif: nn.Module, args: tuple, out) -> None:
        spk = out[0] if isinstance(out, tuple) else out
        self.spk = spk.detach()
        r = getattr(lif, "reset", None)
        self.reset_sig = (r.detach() if isinstance(r, Tensor) and r.shape == spk.shape
                          else None)
        if self._active():
            self.steps += 1
            for listener in self.listeners:
                listener.on_step(self)
