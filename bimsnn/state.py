"""Nested recurrent states: apply a function to every tensor in them.

A model's state is a tensor, or a (nested) NamedTuple / tuple / list / dict of tensors
(``MambaBlockState``, ``MambaNetState``, snnTorch's ``(syn, mem)``). These two helpers are the
one copy that the training loop and the rules use to carry or detach such states.

Example:
    >>> import torch
    >>> from typing import NamedTuple
    >>> class S(NamedTuple):
    ...     mem: torch.Tensor
    ...     extra: list
    >>> s = S(torch.ones(2, requires_grad=True) * 2, [torch.zeros(1), None])
    >>> d = detach_tree(s)
    >>> type(d).__name__, d.mem.requires_grad, d.extra[1] is None
    ('S', False, True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

__all__ = ["detach_tree", "tree_map"]


def tree_map(fn: Callable[[Tensor], Any], state: Any) -> Any:
    """``fn`` applied to every tensor in a (nested) NamedTuple / tuple / list / dict.

    Containers keep their type (a NamedTuple stays that NamedTuple); anything that is not a
    tensor or a container (None, numbers, strings) is returned unchanged.
    """
    if isinstance(state, Tensor):
        return fn(state)
    if isinstance(state, tuple) and hasattr(state, "_fields"):           # NamedTuple
        return type(state)(*(tree_map(fn, v) for v in state))
    if isinstance(state, (tuple, list)):
        return type(state)(tree_map(fn, v) for v in state)
    if isinstance(state, dict):
        return {k: tree_map(fn, v) for k, v in state.items()}
    return state


def detach_tree(state: Any) -> Any:
    """Every tensor of ``state`` detached (``tree_map(Tensor.detach, state)``)."""
    return tree_map(Tensor.detach, state)
