"""Argument checks and on/off layout shared by the encoders (internal)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _check_x(x: Tensor, min_dim: int = 1, name: str = "x") -> Tensor:
    """x as a float tensor with ≥ ``min_dim`` dims, T > 0 and finite values."""
    if not isinstance(x, Tensor):
        x = torch.as_tensor(x)
    if not x.is_floating_point():
        x = x.float()
    if x.dim() < min_dim or (x.dim() > 0 and x.shape[0] == 0):
        raise ValueError(f"{name}: expected at least {min_dim} dims with T > 0, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return x


def _check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not (math.isfinite(threshold) and threshold > 0):
        raise ValueError(f"threshold must be a finite number > 0, got {threshold}")
    return threshold


def _init(x: Tensor, init) -> Tensor:
    """Reference value before t = 0: x[0] (no spike at t = 0) or a given number/tensor."""
    if init is None:
        return x[0]
    return torch.as_tensor(init, dtype=x.dtype).expand_as(x[0])


def _onoff(on: Tensor, off: Tensor, signed: bool, dtype) -> Tensor:
    """(T, ..., C) ON and OFF masks → (T, ..., 2C) ON then OFF, or ON − OFF if ``signed``."""
    if signed:
        return on.to(dtype) - off.to(dtype)
    return torch.cat([on, off], dim=-1).to(dtype)
