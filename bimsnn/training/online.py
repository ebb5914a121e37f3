"""The online step loop: what BIM trains with (paper eq. 4, 7-8), and its per-step targets.

Symbols: T time, B batch, C channels, K classes (or vocabulary V), W loss-window steps.

A model trained online exposes ``init_state(B)`` and ``step(x_t (B, C), state) ->
(logits_t (B, K), state)`` with an explicit (NamedTuple) state. One sequence is::

    rule.reset(B); state = model.init_state(B)
    for t in range(T):
        logits_t, state = model.step(x[t], state); state = detach(state)
        rule.backward(target.step_loss(t, logits_t))      # None: traces advance, no loss

so each step's backward covers that step only and memory does not grow with T. With a
chunked rule (``TrainConfig.chunk`` = K, :mod:`bimsnn.rules.chunked`) the loop runs over
chunks instead, ``logits_c, state = model.forward_seq(x[t0:t0 + K], state)`` through the
fused kernels, and ``rule.backward(target.chunk_loss(t0, logits_c))``: memory O(K).
The *target* says what each step is trained on:

* :class:`WindowTarget` (one label per sequence): ``loss(logits_t, y) / W`` on the last W
  steps, None before; the objective is the mean per-step loss over the window.
* :class:`SequenceTarget` (per-step outputs: CTC, next-token prediction): a sequence loss
  L(logits (T, B, V), target). CTC's needs the whole utterance (its alignment posterior),
  so it cannot come from step t alone: a first, no-grad pass computes g_t = ∂L/∂logits_t,
  and step t is trained on the surrogate ⟨g_t, logits_t⟩, whose gradient w.r.t. logits_t
  is exactly g_t. For per-step losses (LM) this equals each step's own loss.

:func:`make_rule` / :func:`make_pruner` turn a TrainConfig's ``rule`` / ``prune`` into
:mod:`bimsnn.rules` objects.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from bimsnn.state import detach_tree, tree_map


def make_rule(model: nn.Module, cfg):
    """The online rule named by ``cfg.rule`` (a TrainConfig), hooked onto ``model``; None
    for bptt. Hybrid gets ``lam``, ``balance``, ``grad=hybrid_grad`` and a default STDP().
    With ``cfg.chunk`` and a model that has ``forward_seq``, the chunked rule."""
    if cfg.rule == "bptt":
        return None
    from bimsnn import rules  # lazy: bptt-only users need not import the rules

    chunk = cfg.chunk if callable(getattr(model, "forward_seq", None)) else None
    traces = {"x_proj_traces": cfg.x_proj_traces} if chunk is not None else {}
    amp = {"A_plus": cfg.stdp_amp, "A_minus": 1.05 * cfg.stdp_amp}
    if cfg.rule == "rtrl":
        return rules.RTRL(model, chunk=chunk, **traces)
    if cfg.rule == "stdp":
        return rules.STDP(model, chunk=chunk, **amp)
    return rules.Hybrid(model, lam=cfg.lam, balance=cfg.balance, grad=cfg.hybrid_grad,
                        stdp=rules.STDP(**amp), chunk=chunk, **traces)


def make_pruner(model: nn.Module, cfg):
    """``AdaptivePruning`` for ``cfg.prune`` (None when pruning is off)."""
    if cfg.prune is None:
        return None
    from bimsnn.rules import AdaptivePruning

    return AdaptivePruning(model, target_sparsity=cfg.prune, beta=cfg.prune_beta,
                           gamma=cfg.prune_gamma, seed=cfg.seed)


def has_step(model: nn.Module) -> bool:
    """True when ``model`` can be run step by step (``init_state`` and ``step``)."""
    return callable(getattr(model, "step", None)) and callable(getattr(model, "init_state", None))


def readout_params(model: nn.Module) -> list[Tensor]:
    """Parameters of the readout: ``model.readout`` if it is a module, else the last
    ``nn.Linear`` in registration order (``out_fc`` in SpikingMambaNet)."""
    head = getattr(model, "readout", None)
    if not isinstance(head, nn.Module):
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise TypeError("rule='stdp' needs a readout: model.readout or an nn.Linear")
        head = linears[-1]
    return [p for p in head.parameters() if p.requires_grad]


def window(T: int, frac: float) -> int:
    """W = ceil(frac·T) clamped to [1, T] (rounded first: 0.3·10 gives 3, not 4)."""
    return max(1, min(T, math.ceil(round(frac * T, 6))))


def seq_logits(model: nn.Module, x: Tensor) -> Tensor:
    """Per-step logits (T, B, K) for x (T, B, C): ``forward_seq`` if present, else ``step``."""
    if callable(getattr(model, "forward_seq", None)):
        out = model.forward_seq(x)
        return out[0] if isinstance(out, tuple) else out
    if not has_step(model):
        raise TypeError(f"{type(model).__name__} has neither forward_seq nor step: use "
                        "eval_readout='forward'")
    state = tree_map(lambda t: t.to(x.device), model.init_state(x.shape[1]))
    outs = []
    for t in range(x.shape[0]):
        logits_t, state = model.step(x[t], state)
        outs.append(logits_t)
    return torch.stack(outs)


def eval_logits(model: nn.Module, x: Tensor, mode: str, loss_window: float) -> Tensor:
    """Logits (B, K): ``model(x)`` (mode "forward"), or the mean of the per-step logits over
    the last ``window(T, loss_window)`` steps (mode "window", what the online loss trains)."""
    if mode == "forward":
        return model(x)
    return seq_logits(model, x)[-window(x.shape[0], loss_window):].mean(0)


# ---------------------------------------------------------------- per-step targets
class WindowTarget:
    """One label per sequence: step t's loss is ``loss_fn(logits_t, y) / W`` on the last
    W = ``window(T, loss_window)`` steps, None before (the traces still advance).

    Args:
        y: labels (B,) or (B, K). loss_fn: ``(logits_t (B, K), y) -> scalar`` (mean over B).
    """

    def __init__(self, y: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor],
                 loss_window: float = 1.0):
        self.y, self.loss_fn, self.loss_window = y, loss_fn, loss_window
        self.T = self.W = 0
        self.total: Tensor | None = None

    def begin(self, model: nn.Module, x: Tensor) -> None:
        self.T = x.shape[0]
        self.W = window(self.T, self.loss_window)
        self.total = x.new_zeros(())

    def step_loss(self, t: int, logits_t: Tensor) -> Tensor | None:
        if t < self.T - self.W:
            return None
        loss_t = self.loss_fn(logits_t, self.y) / self.W
        self.total += loss_t.detach()
        return loss_t

    def chunk_loss(self, t0: int, logits: Tensor) -> Tensor | None:
        """Σ of the step losses of steps t0 .. t0 + k − 1, logits (k, B, K)."""
        losses = [self.step_loss(t0 + i, z) for i, z in enumerate(logits)]
        losses = [v for v in losses if v is not None]
        return torch.stack(losses).sum() if losses else None

    def loss(self) -> Tensor:
        """The objective over the whole sequence (mean per-step loss on the window)."""
        return self.total


class SequenceTarget:
    """A loss over per-step outputs, ``loss_fn(logits (T, B, V), target) -> scalar`` (CTC,
    next-token cross-entropy), trained step by step through g_t = ∂L/∂logits_t.

    :meth:`begin` runs the no-grad first pass in ``eval()`` mode, so no plasticity or
    trace advances there (see :mod:`bimsnn.rules.base`).
    """

    def __init__(self, target: Any, loss_fn: Callable[[Tensor, Any], Tensor]):
        self.target, self.loss_fn = target, loss_fn
        self.g: Tensor | None = None
        self._loss: Tensor | None = None

    def begin(self, model: nn.Module, x: Tensor) -> None:
        was = model.training
        model.eval()
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Leaky.multi_step bypasses")  # intended
                z = seq_logits(model, x)                                  # (T, B, V)
        finally:
            model.train(was)
        z.requires_grad_(True)
        with torch.enable_grad():
            loss = self.loss_fn(z, self.target)
            (self.g,) = torch.autograd.grad(loss, z)                     # (T, B, V)
        self._loss = loss.detach()

    def step_loss(self, t: int, logits_t: Tensor) -> Tensor:
        return (self.g[t] * logits_t).sum()

    def chunk_loss(self, t0: int, logits: Tensor) -> Tensor:
        return (self.g[t0:t0 + logits.shape[0]] * logits).sum()

    def loss(self) -> Tensor:
        return self._loss


def _add_head_grads(head: list[Tensor], loss_t: Tensor) -> None:
    """``.grad += ∂loss_t/∂p`` for the readout parameters only (rule "stdp")."""
    grads = torch.autograd.grad(loss_t, head, allow_unused=True)
    with torch.no_grad():
        for p, g in zip(head, grads):
            if g is not None:
                p.grad = g if p.grad is None else p.grad.add_(g)


def online_pass(model: nn.Module, rule, x: Tensor, target,
                head: list[Tensor] | None = None) -> Tensor:
    """Run one batch x (T, B, C) step by step; ``rule`` writes ``.grad`` (module docstring).

    Args:
        target: a :class:`WindowTarget`, :class:`SequenceTarget` or any object with
            ``begin(model, x)``, ``step_loss(t, logits_t) -> Tensor | None`` and ``loss()``.
        head: None → ``rule.backward(loss_t)``. A parameter list (rule "stdp") →
            ``rule.backward(None)`` (unsupervised) and, separately, ∂loss_t/∂head only,
            added to ``head``'s ``.grad``: the readout's supervised signal.
    Returns:
        ``target.loss()``, detached, a 0-d tensor.
    """
    T, B = x.shape[:2]
    target.begin(model, x)
    rule.reset(B)
    state = tree_map(lambda t: t.to(x.device), model.init_state(B))
    K = getattr(rule, "chunk", None)                 # chunked rule: K steps at a time
    for t0 in range(0, T, K or 1):
        if K is None:
            logits_t, state = model.step(x[t0], state)
            loss = target.step_loss(t0, logits_t)
        else:
            out = model.forward_seq(x[t0:t0 + K], state)
            logits, state = out if isinstance(out, tuple) else (out, None)
            loss = target.chunk_loss(t0, logits)
        state = detach_tree(state)  # online: no graph from one step (chunk) into the next
        if head is None:
            rule.backward(loss)
        else:
            rule.backward(None)
            if loss is not None:
                _add_head_grads(head, loss)
    return target.loss().detach()
