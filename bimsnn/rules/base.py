"""The Rule interface shared by RTRL, STDP, Hybrid (and pruning).

A rule observes an unmodified model through forward (pre-)hooks, keeps per-layer
state in *handlers*, and writes ``.grad`` so that any torch optimizer applies it.

Usage, once per sequence::

    rule.reset(batch_size)
    for t in range(T):
        out_t = ...                      # the user's own per-step forward
        rule.backward(loss_t)            # loss_t may be None (pure STDP)
    opt.step(); opt.zero_grad()
    rule.remove()                        # detaches every hook; the model is as before
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn


class Handler(Protocol):
    """Per-layer state of a rule: hooks and traces for one layer (or one SSM)."""

    def reset(self, batch_size: int) -> None: ...

    def after_backward(self) -> None:
        """Called by :meth:`Rule.backward` once per step, after ``loss_t.backward()``."""
        ...

    def remove(self) -> None: ...


class Rule:
    """Base class: owns handlers and forwards reset/backward/remove to them."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.handlers: list[Handler] = []

    def reset(self, batch_size: int) -> None:
        for h in self.handlers:
            h.reset(batch_size)

    def backward(self, loss_t: Tensor | None) -> None:
        if loss_t is not None:
            loss_t.backward()
        for h in self.handlers:
            h.after_backward()

    def remove(self) -> None:
        for h in self.handlers:
            h.remove()
        self.handlers.clear()

    @torch.no_grad()
    def _accumulate(self, param: Tensor, value: Tensor) -> None:
        if param.grad is None:
            param.grad = value.detach().clone()
        else:
            param.grad.add_(value)
