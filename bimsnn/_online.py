"""Per-step (online) training and evaluation readouts for :mod:`bimsnn.train`.

Symbols: T time, B batch, C channels, K classes, W loss-window steps.

A model trained online exposes ``init_state(B)`` and ``step(x_t (B, C), state) ->
(logits_t (B, K), state)`` with an explicit (NamedTuple) state. One sequence is::

    rule.reset(B); state = model.init_state(B)
    for t in range(T):
        logits_t, state = model.step(x[t], state); state = detach(state)
        rule.backward(loss_t)     # loss_t = loss(logits_t, y) / W on the last W steps, else None

so the objective is the mean per-step loss over the window, each step's backward covers
that step only, and memory does not grow with T. :func:`make_rule` / :func:`make_pruner`
turn a TrainConfig's ``rule`` / ``prune`` fields into :mod:`bimsnn.rules` objects.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn


def make_rule(model: nn.Module, cfg):
    """The online rule named by ``cfg.rule`` (a TrainConfig), hooked onto ``model``; None
    for bptt. Hybrid gets ``lam=cfg.lam``, ``balance=cfg.balance`` and a default ``STDP()``."""
    if cfg.rule == "bptt":
        return None
    from bimsnn import rules  # lazy: bptt-only users need not import the rules

    if cfg.rule == "rtrl":
        return rules.RTRL(model)
    if cfg.rule == "stdp":
        return rules.STDP(model)
    return rules.Hybrid(model, lam=cfg.lam, balance=cfg.balance)


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


def tree_map(fn: Callable[[Tensor], Tensor], s: Any) -> Any:
    """Apply ``fn`` to every tensor of a (NamedTuple / tuple / list / dict) state."""
    if isinstance(s, Tensor):
        return fn(s)
    if isinstance(s, tuple) and hasattr(s, "_fields"):
        return type(s)(*(tree_map(fn, v) for v in s))
    if isinstance(s, (tuple, list)):
        return type(s)(tree_map(fn, v) for v in s)
    if isinstance(s, dict):
        return {k: tree_map(fn, v) for k, v in s.items()}
    return s


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


def online_loss(model: nn.Module, rule, x: Tensor, y: Tensor, loss_window: float,
                loss_fn: Callable[[Tensor, Tensor], Tensor],
                head: list[Tensor] | None = None) -> Tensor:
    """Run one batch x (T, B, C) step by step; ``rule`` writes ``.grad``.

    Args:
        head: None → ``rule.backward(loss_t)``. A parameter list (rule "stdp") →
            ``rule.backward(None)`` (unsupervised) and, separately, ∂loss_t/∂head only,
            added to ``head``'s ``.grad``: the readout's supervised signal.
    Returns:
        the summed (windowed-mean) loss, detached, a 0-d tensor.
    """
    T, B = x.shape[:2]
    W = window(T, loss_window)
    rule.reset(B)
    state = tree_map(lambda t: t.to(x.device), model.init_state(B))
    total = x.new_zeros(())
    for t in range(T):
        logits_t, state = model.step(x[t], state)
        state = tree_map(Tensor.detach, state)  # online: no graph from step t into t+1
        loss_t = loss_fn(logits_t, y) / W if t >= T - W else None
        if head is None:
            rule.backward(loss_t)
        else:
            rule.backward(None)
            if loss_t is not None:
                grads = torch.autograd.grad(loss_t, head, allow_unused=True)
                with torch.no_grad():
                    for p, g in zip(head, grads):
                        if g is not None:
                            p.grad = g if p.grad is None else p.grad.add_(g)
        if loss_t is not None:
            total += loss_t.detach()
    return total
