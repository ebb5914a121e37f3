"""Helpers for explicit model state: nested NamedTuples / tuples / lists / dicts of tensors.

Models that run step by step (``init_state(B)``, ``step(x_t, state)``) carry their state
explicitly, e.g. :class:`bimsnn.ssm.MambaNetState`. Online learning hands it from one step
(or chunk) to the next *detached*, so that no autograd graph links them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor


def tree_map(fn: Callable[[Tensor], Tensor], s: Any) -> Any:
    """Apply ``fn`` to every tensor of a (nested NamedTuple / tuple / list / dict) state;
    anything else (ints, None) is returned as it is.

    >>> import torch
    >>> tree_map(lambda t: t * 2, {"a": (torch.ones(1), 3)})
    {'a': (tensor([2.]), 3)}
    """
    if isinstance(s, Tensor):
        return fn(s)
    if isinstance(s, tuple) and hasattr(s, "_fields"):                # NamedTuple
        return type(s)(*(tree_map(fn, v) for v in s))
    if isinstance(s, (tuple, list)):
        return type(s)(tree_map(fn, v) for v in s)
    if isinstance(s, dict):
        return {k: tree_map(fn, v) for k, v in s.items()}
    return s


def detach_tree(s: Any) -> Any:
    """``tree_map(Tensor.detach, s)``: the same state with no autograd history."""
    return tree_map(Tensor.detach, s)
