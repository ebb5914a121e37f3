"""The Rule interface shared by RTRL, STDP and Hybrid, and the hooks they observe through.

Symbols: B batch (leading dims flattened), N Linear in_features, H Leaky width, T time.

A rule observes an *unmodified* model through forward (pre-)hooks on ``nn.Linear`` and
``snntorch.Leaky`` (``bimsnn.Leaky`` is a subclass), keeps per-layer state in *handlers*,
and writes ``.grad`` so that any torch optimizer applies it. Usage, once per sequence::

    rule.reset(batch_size)
    for t in range(T):
        out_t = ...                      # the user's own per-step forward
        rule.backward(loss_t)            # loss_t may be None (pure STDP)
    opt.step(); opt.zero_grad()
    rule.remove()                        # detaches every hook; the model is as before

If the model's ``forward`` runs the whole time loop itself (snnTorch tutorial 5), call
``rule.backward(sum_t loss_t)`` once after it: each step's graph is still separate (the
carried state is detached), so the result is the same as per-step calls, only the user's
stacked outputs keep T steps in memory.

Pairing (:func:`find_pairs`): each Leaky is paired with the ``nn.Linear`` registered most
recently before it (module registration order), except that a module holding both
``out_proj`` (Linear) and ``lif`` (Leaky) attributes, a SpikingMamba block, pairs those two.
At every step a structural check asserts that the Leaky's input current *is* that Linear's
output, possibly plus additive terms that do not depend on the Linear (a residual into the
membrane, as in SpikingMamba), by walking the autograd graph of the current through add/select/view/copy nodes only.
(Under ``no_grad`` there is no graph and only shapes are checked.) The Linear may run per
step, once on a whole (T, B, N) sequence before a per-step Leaky loop, or once for a
constant current. ``layers=[(fc, lif), ...]`` overrides the pairing; ``check=False`` skips
the check (you then assert that ∂cur/∂fc.weight = ∂fc(x)/∂fc.weight).

Online: the Leaky's forward-pre hook replaces the incoming membrane (the ``mem`` argument,
or the module's own ``mem`` buffer when none is passed) by a detached copy, so no autograd
graph links step t to step t−1. Plasticity (traces, STDP's Ω) advances only while the
Leaky is in train mode and, for rules with a gradient part (RTRL, Hybrid), grad mode is
enabled: evaluation under ``model.eval()`` or ``torch.no_grad()`` leaves it untouched
(hooks then just detach). Pure STDP also learns under ``no_grad`` (``plastic_without_grad``).

Scope: module hooks see per-step calls ``lif(cur, mem)`` only. A fused ``multi_step`` or a
parallel-scan ``forward`` bypasses them (``backward`` then warns once): stream with
``model.step``. Other snnTorch neurons (Synaptic, RLeaky, ...) are not handled (warning):
their state is not detached. SSM and conv state of SpikingMamba nets is detached by the
handlers of :mod:`bimsnn.rules.ssm_rtrl` (RTRL, Hybrid with ``grad="rtrl"``); with pure
STDP or ``grad="autograd"`` the caller detaches it (as :mod:`bimsnn.train` does).
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Protocol

import snntorch as snn
import torch
from torch import Tensor, nn


class Handler(Protocol):
    """Per-layer state of a rule: hooks and traces for one layer (or one SSM)."""

    def reset(self, batch_size: int) -> None: ...

    def after_backward(self) -> None:
        """Called by :meth:`Rule.backward` once per step, after ``loss_t.backward()``."""
        ...

    def remove(self) -> None: ...


Pair = tuple[nn.Linear, snn.Leaky]

# Leaky modules currently tapped: two rules on one Leaky would inject traces twice.
_TAPPED: weakref.WeakSet = weakref.WeakSet()
# Graph nodes through which the Linear output may reach the Leaky input unchanged (∂=I).
_PASS_THROUGH = {"AddBackward", "UnbindBackward", "SelectBackward", "ToCopyBackward",
                 "CloneBackward", "ViewBackward", "UnsafeViewBackward",
                 "ReshapeAliasBackward", "AliasBackward"}


def find_pairs(model: nn.Module, layers: Sequence[Pair] | None = None
               ) -> tuple[list[Pair], list[snn.Leaky]]:
    """Linear→Leaky pairs of ``model`` (see module docstring) and the unpaired Leakies.

    Raises:
        ValueError: no pair found, or a bad ``layers`` entry.
    """
    if layers is not None:
        pairs = []
        for fc, lif in layers:
            if not isinstance(fc, nn.Linear) or not isinstance(lif, snn.Leaky):
                raise ValueError(f"layers entries must be (nn.Linear, snntorch.Leaky), got "
                                 f"({type(fc).__name__}, {type(lif).__name__})")
            pairs.append((fc, lif))
        paired = {id(lif) for _, lif in pairs}
        unpaired = [m for m in model.modules() if isinstance(m, snn.Leaky) and id(m) not in paired]
    else:
        preset: dict[int, nn.Linear] = {}
        for m in model.modules():                      # SpikingMamba: out_proj → lif
            fc, lif = getattr(m, "out_proj", None), getattr(m, "lif", None)
            if isinstance(fc, nn.Linear) and isinstance(lif, snn.Leaky):
                preset[id(lif)] = fc
        preset_fc = {id(fc) for fc in preset.values()}
        pairs, unpaired, last = [], [], None
        for m in model.modules():
            if isinstance(m, snn.Leaky):
                fc = preset.get(id(m), last)
                if fc is not None:
                    pairs.append((fc, m))
                else:
                    unpaired.append(m)
                last = None
            elif isinstance(m, nn.Linear) and id(m) not in preset_fc:
                last = m
    if not pairs:
        raise ValueError(
            f"no nn.Linear → snntorch.Leaky pair found in {type(model).__name__}: rules need "
            "a Linear registered before each Leaky, or pass layers=[(fc, lif), ...]")
    return pairs, unpaired


def _feeds_additively(cur: Tensor, y: Tensor, fc: nn.Linear, max_depth: int = 8) -> bool:
    """True if ``cur`` is ``y`` (or a slice of it) plus other terms, by the autograd graph."""
    if cur is y:
        return True
    if y.grad_fn is None:
        # No graph for y: fine if there is none for cur either (no_grad, frozen net); but a
        # trainable fc that ran without grad cannot be what drives a cur that has a graph.
        return cur.grad_fn is None or not fc.weight.requires_grad
    stack = [(cur.grad_fn, 0)]
    while stack:
        node, depth = stack.pop()
        if node is None or depth > max_depth:
            continue
        if node is y.grad_fn:
            return True
        if node.name().rstrip("0123456789") in _PASS_THROUGH:
            stack.extend((n, depth + 1) for n, _ in node.next_functions)
    return False


class LayerTap:
    """Hooks on one Linear→Leaky pair (``fc=None``: a Leaky that is only detached).

    Per step it records, detached: ``x`` (B, N) the Linear input feeding this step,
    ``mem_prev`` (B, H) the incoming membrane (None at the first step: zeros), ``spk``
    (B, H). Subscribers: ``injector(mem_prev) -> mem`` (one, RTRL) rewrites the incoming
    membrane; each of ``listeners`` gets ``on_step(tap)`` after the Leaky ran.
    """

    def __init__(self, fc: nn.Linear | None, lif: snn.Leaky, check: bool = True, name: str = "",
                 plastic_without_grad: bool = False):
        if lif in _TAPPED:
            raise RuntimeError(f"{name or type(lif).__name__} already has a rule attached: "
                               "call remove() on the other rule first")
        _TAPPED.add(lif)
        self.fc, self.lif, self.check, self.name = fc, lif, check, name
        self.plastic_without_grad = plastic_without_grad
        self.injector: Callable[[Tensor], Tensor] | None = None
        self.listeners: list = []
        self.x: Tensor | None = None
        self.mem_prev: Tensor | None = None
        self.spk: Tensor | None = None
        self._xs: Tensor | None = None     # last Linear input (N,) / (B, N) / (T, B, N)
        self._y: Tensor | None = None      # last Linear output (kept for the check)
        self._k = 0                        # Leaky calls since that Linear call
        self.steps = 0                     # plastic Leaky calls since reset()
        self._hooks = [lif.register_forward_pre_hook(self._pre, with_kwargs=True),
                       lif.register_forward_hook(self._post)]
        if fc is not None:
            self._hooks.append(fc.register_forward_hook(self._fc_hook))

    # -- Handler protocol -------------------------------------------------------------
    def reset(self, batch_size: int) -> None:
        self.x = self.mem_prev = self.spk = None
        self.steps = 0

    def after_backward(self) -> None:
        pass

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        _TAPPED.discard(self.lif)
        self.x = self.mem_prev = self.spk = self._xs = self._y = None

    # -- hooks ------------------------------------------------------------------------
    def _active(self) -> bool:
        return self.lif.training and (self.plastic_without_grad or torch.is_grad_enabled())

    def _fc_hook(self, fc: nn.Module, args: tuple, out: Tensor) -> None:
        self._xs, self._y, self._k = args[0].detach(), out, 0

    def _step_input(self, cur: Tensor) -> Tensor:
        y = self._y
        if y is None:
            raise RuntimeError(f"{self.name}: the Leaky ran before its paired Linear; pair "
                               "explicitly with layers=[(fc, lif), ...]")
        if y.shape == cur.shape:
            x = self._xs
        elif y.dim() == cur.dim() + 1 and y.shape[1:] == cur.shape:   # Linear ran on (T, ...)
            if self._k >= y.shape[0]:
                raise RuntimeError(f"{self.name}: Leaky called more often than the Linear's "
                                   f"sequence length {y.shape[0]}")
            x = self._xs[self._k]
            self._k += 1
        else:
            raise RuntimeError(f"{self.name}: Leaky input {tuple(cur.shape)} does not match "
                               f"its paired Linear output {tuple(y.shape)}; pass layers=...")
        if self.check and not _feeds_additively(cur, y, self.fc):
            raise RuntimeError(
                f"{self.name}: the Leaky's input is not its paired Linear's output (plus an "
                "additive residual); pass layers=[(fc, lif), ...] or check=False")
        return x

    def _pre(self, lif: nn.Module, args: tuple, kwargs: dict):
        cur = args[0] if args else kwargs["input_"]
        active = self._active()
        if self.fc is not None and active:
            self.x = self._step_input(cur)
        if len(args) > 1 and args[1] is not None:
            mem, slot = args[1], "arg"
        elif kwargs.get("mem") is not None:
            mem, slot = kwargs["mem"], "kw"
        else:
            mem, slot = getattr(lif, "mem", None), "buf"
        if not isinstance(mem, Tensor):
            self.mem_prev = None
            return None
        new = mem.detach()                                 # online: cut the link to t−1
        self.mem_prev = new if new.shape == cur.shape else None   # else Leaky zero-inits
        if (self.mem_prev is not None and self.injector is not None and active
                and torch.is_grad_enabled()):    # (no graph, nothing to inject into)
            new = self.injector(new)
        if slot == "arg":
            args = (args[0], new, *args[2:])
        elif slot == "kw":
            kwargs = {**kwargs, "mem": new}
        else:
            lif.mem = new
        return args, kwargs

    def _post(self, lif: nn.Module, args: tuple, out) -> None:
        spk = out[0] if isinstance(out, tuple) else out
        self.spk = spk.detach()
        if self._active():
            self.steps += 1
            for listener in self.listeners:
                listener.on_step(self)


class Rule:
    """Base class: owns handlers and forwards reset/backward/remove to them.

    Subclasses call :meth:`_attach_taps` to hook every Linear→Leaky pair. ``pairs`` lists
    them in order. A rule is also a context manager that calls :meth:`remove` on exit.
    """

    def __init__(self, model: nn.Module | None):
        self.model = model
        self.handlers: list[Handler] = []
        self.taps: list[LayerTap] = []
        self._warned_blind = False

    @property
    def pairs(self) -> list[Pair]:
        return [(t.fc, t.lif) for t in self.taps if t.fc is not None]

    plastic_without_grad = False      # True for rules with no gradient part (STDP)

    def _attach_taps(self, layers: Sequence[Pair] | None = None, check: bool = True
                     ) -> list[LayerTap]:
        pairs, unpaired = find_pairs(self.model, layers)
        names = {id(m): n for n, m in self.model.named_modules()}
        taps: list[LayerTap] = []
        try:
            for fc, lif in pairs:
                taps.append(LayerTap(fc, lif, check, f"{names.get(id(fc))}→{names.get(id(lif))}",
                                     self.plastic_without_grad))
            for lif in unpaired:
                warnings.warn(f"Leaky {names.get(id(lif))} has no paired Linear: its state is "
                              "detached but it gets no trace", stacklevel=3)
                taps.append(LayerTap(None, lif, check, names.get(id(lif), ""),
                                     self.plastic_without_grad))
        except Exception:
            for t in taps:
                t.remove()
            raise
        for n, m in self.model.named_modules():
            if isinstance(m, snn.SpikingNeuron) and not isinstance(m, snn.Leaky):
                warnings.warn(f"{n} ({type(m).__name__}) is not supported by bimsnn.rules: "
                              "its state is not detached between steps", stacklevel=3)
        self.taps = taps
        return taps

    def reset(self, batch_size: int) -> None:
        for h in self.handlers:
            h.reset(batch_size)

    def backward(self, loss_t: Tensor | None) -> None:
        self._warn_if_blind()
        if loss_t is not None:
            loss_t.backward()
        for h in self.handlers:
            h.after_backward()

    def _warn_if_blind(self) -> None:
        """Warn once if a paired Leaky ran no per-step call since reset (e.g. a fused
        ``multi_step`` or parallel ``forward`` bypasses module hooks: use ``model.step``)."""
        blind = [t.name for t in self.taps if t.fc is not None and t.steps == 0]
        if blind and not self._warned_blind:
            self._warned_blind = True
            warnings.warn(f"{type(self).__name__}: no per-step Leaky call seen for {blind} "
                          "since reset(): those layers get no traces (a fused multi_step "
                          "or model.eval() bypasses the hooks)", stacklevel=3)

    def remove(self) -> None:
        for h in self.handlers:
            h.remove()
        self.handlers.clear()
        for t in self.taps:                 # taps may not be handlers of every rule
            t.remove()
        self.taps = []

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def _accumulate(self, param: Tensor, value: Tensor) -> None:
        accumulate_grad(param, value)


@torch.no_grad()
def accumulate_grad(param: Tensor, value: Tensor) -> None:
    """``param.grad += value`` (creating ``.grad`` if absent)."""
    if param.grad is None:
        param.grad = value.detach().to(param.dtype).clone()
    else:
        param.grad.add_(value)
