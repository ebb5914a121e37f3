"""Rate and latency codes, and the spike-rate measure every encoder's bound is stated in.

Symbols: T time steps, fs steps per second, p per-step firing probability.

    >>> latency(torch.tensor([1.0, 0.5, 0.0]), 5).T.tolist()   # x = 0 stays silent
    [[1.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]]
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from bimsnn.encoding._checks import _check_x

__all__ = ["rate", "latency", "spike_rate", "RateEncoder", "LatencyEncoder"]


def rate(x: Tensor, *, gain: float = 1.0, num_steps: int | None = None, mode: str = "bernoulli",
         generator: torch.Generator | None = None) -> Tensor:
    """Rate coding: each step spikes independently with probability p(x); encodes intensity.

    Args:
        x: (T, ...) time-major intensities (usually in [0, 1]); or a static (...) array
            repeated over ``num_steps`` when ``num_steps`` is given.
        gain: scales x before the probability.
        mode: ``"bernoulli"``: p = clamp(gain·x, 0, 1). ``"poisson"``: p = 1 − exp(−gain·x⁺),
            the probability of ≥ 1 event of a Poisson process of mean gain·x per step.
    Returns:
        (T, ...) or (num_steps, ...) spikes in {0, 1}, dtype of x.

    Spike rate: E[spikes/s] = fs·p per channel, hence ≤ fs·min(1, gain·max x).
    """
    x = _check_x(x, min_dim=0 if num_steps is not None else 1)
    if gain <= 0 or not math.isfinite(gain):
        raise ValueError(f"gain must be > 0, got {gain}")
    if num_steps is not None:
        if int(num_steps) < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        x = x.unsqueeze(0).expand(int(num_steps), *x.shape)
    if mode == "bernoulli":
        p = (gain * x).clamp(0.0, 1.0)
    elif mode == "poisson":
        p = -torch.expm1(-gain * x.clamp(min=0.0))
    else:
        raise ValueError(f"mode must be 'bernoulli' or 'poisson', got {mode!r}")
    return torch.bernoulli(p, generator=generator)


def latency(x: Tensor, num_steps: int, *, threshold: float = 0.0) -> Tensor:
    """Time-to-first-spike coding of a static array: larger values fire earlier.

    Args:
        x: (...) intensities in [0, 1] (values outside are clamped).
        num_steps: window length T.
        threshold: features with x ≤ threshold stay silent.
    Returns:
        (T, ...) in {0, 1}; feature i fires once, at t_i = round((1 − x_i)·(T − 1)).

    Spike rate: at most one spike per feature per window, i.e. ≤ fs / T spikes/s.
    """
    x = _check_x(x, min_dim=0).clamp(0.0, 1.0)
    if int(num_steps) < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    T = int(num_steps)
    t_fire = torch.round((1.0 - x) * (T - 1)).long()                 # (...)
    steps = torch.arange(T).view(T, *([1] * x.dim()))               # (T, 1, ...)
    return ((steps == t_fire) & (x > threshold)).to(x.dtype)


def spike_rate(spikes: Tensor, fs: float) -> Tensor:
    """Mean spikes per second of each afferent: (T, ..., K) → (..., K); counts ``|s|`` for ±1."""
    spikes = _check_x(spikes, name="spikes")
    if fs <= 0:
        raise ValueError(f"fs must be > 0, got {fs}")
    return spikes.abs().sum(0) * (fs / spikes.shape[0])


class RateEncoder(nn.Module):
    """Transform wrapping :func:`rate`: (T, ...) → (T, ...) spikes; see it for the rate."""

    def __init__(self, gain: float = 1.0, mode: str = "bernoulli", num_steps: int | None = None):
        super().__init__()
        self.gain, self.mode, self.num_steps = gain, mode, num_steps

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return rate(x, gain=self.gain, mode=self.mode, num_steps=self.num_steps,
                    generator=generator)


class LatencyEncoder(nn.Module):
    """Transform wrapping :func:`latency`: static (...) → (num_steps, ...) spikes.

    >>> LatencyEncoder(3)(torch.tensor([0.0, 1.0])).tolist()
    [[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]
    """

    def __init__(self, num_steps: int, threshold: float = 0.0):
        super().__init__()
        self.num_steps, self.threshold = num_steps, threshold

    def forward(self, x: Tensor) -> Tensor:
        return latency(x, self.num_steps, threshold=self.threshold)
