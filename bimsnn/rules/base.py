"""The Rule interface shared by RTRL, STDP and Hybrid, and how a model's layers are paired.

Symbols: B batch, N Linear in_features, H neuron width, T time.

A rule observes an *unmodified* model through forward (pre-)hooks on its connections
(``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d``) and snnTorch neurons (``Leaky``, ``Synaptic``,
``Alpha``, ``RLeaky``, ``RSynaptic``; ``bimsnn.Leaky``/``Synaptic`` subclass the first two),
keeps per-layer state in *handlers*, and writes ``.grad`` so that any torch optimizer
applies it. Usage, once per sequence::

    rule.reset(batch_size)
    for t in range(T):
        out_t = ...                      # the user's own per-step forward
        rule.backward(loss_t)            # loss_t may be None (pure STDP)
    opt.step(); opt.zero_grad()
    rule.remove()                        # detaches every hook; the model is as before

If the model's ``forward`` runs the whole time loop itself (snnTorch tutorials 5-7), call
``rule.backward(loss)`` once after it: each step's graph is still separate (the carried
state is detached), so the gradient is the same as with per-step calls; only the user's
stacked outputs and each step's traces are then kept for T steps.

Pairing (:func:`find_pairs`): each neuron is paired with the connection registered most
recently before it (module registration order; a neuron's own ``recurrent`` layer does not
count), except that a module holding both ``out_proj`` (Linear) and ``lif`` (Leaky)
attributes, a SpikingMamba block, pairs those two. In an ``nn.Sequential`` the modules
between a connection and its neuron may only be pooling, ``Flatten`` or ``Identity``;
anything else (Dropout, BatchNorm, ...) is a TypeError at attach time: put it *after* the
neuron, where it only changes the next connection's input, which the hooks record. At
every step a structural check (:func:`bimsnn.rules.connections.find_route`) confirms from
the autograd graph that the neuron's input current is the connection's output, reshaped,
pooled at most once (max or average), plus terms that do not depend on it (a residual into
the membrane, as in SpikingMamba). The Linear may run per step, once on a whole (T, B, N)
sequence before a per-step neuron loop, or once for a constant current.
``layers=[(fc, lif), ...]`` overrides the pairing; ``check=False`` skips the check when
shapes agree (you then assert that ∂cur/∂fc.weight = ∂fc(x)/∂fc.weight).

Online: the neuron's forward-pre hook (:class:`~bimsnn.rules.taps.LayerTap`) replaces every
incoming state (``mem``, ``syn``, ..., and a recurrent neuron's ``spk``), passed as an
argument or held in the module's own buffer (``init_hidden=True``), by a detached copy, so
no autograd graph links step t to step t−1. Plasticity (traces, STDP's Ω) advances only
while the neuron is in train mode and, for rules with a gradient part (RTRL, Hybrid), grad
mode is enabled: evaluation under ``model.eval()`` or ``torch.no_grad()`` leaves it
untouched (hooks then just detach). Pure STDP also learns under ``no_grad``.

Scope: module hooks see per-step calls only. A fused ``multi_step`` or a parallel-scan
``forward`` bypasses them (``backward`` then warns once): stream with ``model.step``. Any
other snnTorch neuron in the model is a TypeError at attach time. SSM and conv state of
SpikingMamba nets is detached by the handlers of :mod:`bimsnn.rules.ssm_rtrl` (RTRL,
Hybrid with ``grad="rtrl"``); with pure STDP or ``grad="autograd"`` the caller detaches it.

Extending (e.g. chunked learning): a handler subscribes to taps, as ``tap.injector`` (at most
one: rewrites the incoming carried states, :class:`~bimsnn.rules.rtrl.LayerRTRL`) and/or in
``tap.listeners`` (``on_step(tap)`` after each plastic neuron call, reading ``tap.x``,
``tap.route``, ``tap.prev``, ``tap.spk``, ``tap.reset_sig``), and implements
:class:`Handler`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor, nn

from bimsnn.rules.connections import CONNECTIONS
from bimsnn.rules.dynamics import is_neuron
from bimsnn.rules.taps import LayerTap

Pair = tuple[nn.Module, nn.Module]          # (connection, neuron)

_ROUTING = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.Flatten, nn.Identity)
_POOLING = _ROUTING[:4]


class Handler(Protocol):
    """Per-layer state of a rule: hooks and traces for one layer (or one SSM)."""

    def reset(self, batch_size: int) -> None: ...

    def after_backward(self) -> None:
        """Called by :meth:`Rule.backward` once per step, after ``loss_t.backward()``."""
        ...

    def remove(self) -> None: ...


def _inside_neurons(model: nn.Module) -> set[int]:
    """ids of modules owned by a neuron (RLeaky's ``recurrent``): never a pairing source."""
    return {id(sub) for m in model.modules() if is_neuron(m)
            for sub in m.modules() if sub is not m}


def find_pairs(model: nn.Module, layers: Sequence[Pair] | None = None
               ) -> tuple[list[Pair], list[nn.Module]]:
    """Connection→neuron pairs of ``model`` (see module docstring) and the unpaired neurons.

    Raises:
        ValueError: no pair found, or a bad ``layers`` entry.
    """
    owned = _inside_neurons(model)
    neurons = [m for m in model.modules() if is_neuron(m) and id(m) not in owned]
    if layers is not None:
        pairs = []
        for fc, lif in layers:
            if not isinstance(fc, CONNECTIONS) or not is_neuron(lif):
                raise ValueError("layers entries must be (nn.Linear | nn.Conv1d | nn.Conv2d, "
                                 f"snnTorch neuron), got ({type(fc).__name__}, "
                                 f"{type(lif).__name__})")
            pairs.append((fc, lif))
        paired = {id(lif) for _, lif in pairs}
        return pairs, [m for m in neurons if id(m) not in paired]
    preset: dict[int, nn.Module] = {}
    for m in model.modules():                          # SpikingMamba: out_proj → lif
        fc, lif = getattr(m, "out_proj", None), getattr(m, "lif", None)
        if isinstance(fc, nn.Linear) and lif is not None and is_neuron(lif):
            preset[id(lif)] = fc
    preset_fc = {id(fc) for fc in preset.values()}
    pairs, unpaired, last = [], [], None
    for m in model.modules():
        if id(m) in owned:
            continue
        if is_neuron(m):
            fc = preset.get(id(m), last)
            if fc is not None:
                pairs.append((fc, m))
            else:
                unpaired.append(m)
            last = None
        elif isinstance(m, CONNECTIONS) and id(m) not in preset_fc:
            last = m
    if not pairs:
        raise ValueError(
            f"no nn.Linear/nn.Conv1d/nn.Conv2d → neuron pair found in {type(model).__name__}: "
            "rules need a connection registered before each neuron, or pass "
            "layers=[(fc, lif), ...]")
    return pairs, unpaired


def _feeder_check(model: nn.Module, lif: nn.Module, names: dict) -> None:
    """An unpaired neuron in a Sequential must not be fed by a layer with weights that is not
    a supported connection (ConvTranspose2d, Conv3d, LSTM, ...): TypeError."""
    for seq in model.modules():
        kids = list(seq) if isinstance(seq, nn.Sequential) else []
        if lif not in kids:
            continue
        for mid in reversed(kids[:kids.index(lif)]):
            if is_neuron(mid):
                return
            if any(True for _ in mid.parameters()):
                raise TypeError(
                    f"bimsnn.rules: {names.get(id(mid))} ({type(mid).__name__}) feeds neuron "
                    f"{names.get(id(lif))} but is not a connection the rules can trace "
                    "(nn.Linear, nn.Conv1d, nn.Conv2d); use one of those, or attach the rule "
                    "to a submodule without it")


def _between(model: nn.Module, fc: nn.Module, lif: nn.Module, names: dict) -> nn.Module | None:
    """Check the Sequential siblings between fc and lif (TypeError); return a pooling one."""
    for seq in model.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        kids = list(seq)
        ids = [id(k) for k in kids]
        if id(fc) not in ids or id(lif) not in ids:
            continue
        i, j = ids.index(id(fc)), ids.index(id(lif))
        pool = None
        for mid in kids[i + 1:j]:
            if not isinstance(mid, _ROUTING):
                hint = (" Dropout before a neuron masks its input current; place it after the "
                        "neuron." if isinstance(mid, nn.Dropout) else "")
                raise TypeError(
                    f"bimsnn.rules: {names.get(id(mid))} ({type(mid).__name__}) sits between "
                    f"{names.get(id(fc))} and its neuron {names.get(id(lif))}; only pooling, "
                    "Flatten or Identity may (the input current must be the connection's "
                    "output, pooled at most once). Move it after the neuron, or pair "
                    f"explicitly with layers=[(fc, lif), ...].{hint}")
            if isinstance(mid, _POOLING):
                if pool is not None:
                    raise TypeError(f"bimsnn.rules: two pooling layers between "
                                    f"{names.get(id(fc))} and {names.get(id(lif))}")
                pool = mid
        return pool
    return None


class Rule:
    """Base class: owns handlers and forwards reset/backward/remove to them.

    Subclasses call :meth:`_attach_taps` to hook every connection→neuron pair. ``pairs``
    lists them in order. A rule is also a context manager that calls :meth:`remove` on exit.
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
        names = {id(m): n for n, m in self.model.named_modules()}
        try:
            pairs, unpaired = find_pairs(self.model, layers)
        except ValueError:
            if layers is None:              # a more useful error: what feeds the neurons
                for m in self.model.modules():
                    if is_neuron(m):
                        _feeder_check(self.model, m, names)
            raise
        taps: list[LayerTap] = []
        try:
            for fc, lif in pairs:
                pool = None if layers is not None else _between(self.model, fc, lif, names)
                taps.append(LayerTap(fc, lif, check, f"{names.get(id(fc))}→{names.get(id(lif))}",
                                     self.plastic_without_grad, pool=pool))
            for lif in unpaired:
                if layers is None:
                    _feeder_check(self.model, lif, names)
                taps.append(LayerTap(None, lif, check, names.get(id(lif), ""),
                                     self.plastic_without_grad))
                warnings.warn(f"{names.get(id(lif))} ({type(lif).__name__}) has no paired "
                              "connection: its state is detached but it gets no trace",
                              stacklevel=3)
        except Exception:
            for t in taps:
                t.remove()
            raise
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
        """Warn once if a paired neuron ran no per-step call since reset (e.g. a fused
        ``multi_step`` or parallel ``forward`` bypasses module hooks: use ``model.step``)."""
        blind = [t.name for t in self.taps if t.fc is not None and t.steps == 0]
        if blind and not self._warned_blind:
            self._warned_blind = True
            warnings.warn(f"{type(self).__name__}: no per-step neuron call seen for {blind} "
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


@torch.no_grad()
def accumulate_grad(param: Tensor, value: Tensor) -> None:
    """``param.grad += value`` (creating ``.grad`` if absent)."""
    if param.grad is None:
        param.grad = value.detach().to(param.dtype).clone()
    else:
        param.grad.add_(value)
