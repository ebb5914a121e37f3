"""Temporal-contrast codes: delta, ADM (level crossing), multi-threshold ADM, and decoders.

Symbols: T time steps, C channels, n_θ thresholds, fs steps per second, θ threshold,
TV(x) = Σ_t ``|x_t − x_{t−1}|`` total variation of one channel.

Layout: ``out[..., :C]`` ON (up) spikes and ``out[..., C:]`` OFF (down) spikes, each in
{0, 1}; with ``signed=True`` the output is ON − OFF in {−1, 0, +1} with the input's shape.

    >>> x = torch.tensor([[0.0], [0.3], [0.6], [0.2]])
    >>> adm(x, 0.25).T.tolist()      # ON channel, then OFF channel
    [[0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
    >>> adm_decode(adm(x, 0.25), 0.25, init=0.0).squeeze(-1).tolist()
    [0.0, 0.25, 0.5, 0.25]
    >>> multi_adm(x, [0.25, 0.5]).T.tolist()   # θ = 0.25 (ON, OFF), then θ = 0.5 (ON, OFF)
    [[0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from bimsnn.encoding._checks import _check_threshold, _check_x, _init, _onoff

__all__ = ["delta", "delta_decode", "adm", "adm_decode", "multi_adm",
           "DeltaEncoder", "ADMEncoder", "MultiADMEncoder"]


# --------------------------------------------------------------------------- delta
def delta(x: Tensor, threshold: float, *, init=None, signed: bool = False) -> Tensor:
    """Temporal-contrast (delta) coding of consecutive samples, as snnTorch's ``spikegen.delta``.

    ON at t when x_t − x_{t−1} ≥ θ, OFF when x_t − x_{t−1} ≤ −θ (x_{−1} := ``init``,
    default x_0). Changes below θ per step are never signalled; see :func:`adm` for
    an encoder that tracks slow drifts.

    Args:
        x: (T, ..., C) time-major signal.
    Returns:
        (T, ..., 2C) in {0, 1} (ON then OFF), or (T, ..., C) in {−1, 0, 1} if ``signed``.

    Spike rate: each spike needs ``|Δx|`` ≥ θ within one step, so per channel the count is
    ≤ min(T, TV(x)/θ) and the rate ≤ min(fs, max|dx/dt|/θ) spikes/s.
    """
    x = _check_x(x, min_dim=2)
    th = _check_threshold(threshold)
    prev = torch.cat([_init(x, init).unsqueeze(0), x[:-1]], dim=0)
    d = x - prev
    return _onoff(d >= th, d <= -th, signed, x.dtype)


def _split(spikes: Tensor, signed: bool) -> Tensor:
    """ON − OFF as a float tensor (T, ..., C)."""
    spikes = _check_x(spikes, min_dim=2, name="spikes")
    if signed:
        return spikes
    if spikes.shape[-1] % 2:
        raise ValueError(f"spikes: last dim must be 2C (ON then OFF), got {spikes.shape[-1]}")
    on, off = spikes.chunk(2, dim=-1)
    return on - off


def delta_decode(spikes: Tensor, threshold: float, *, init=0.0, signed: bool = False) -> Tensor:
    """Inverse of :func:`delta` up to quantisation: x̂_t = init + θ·Σ_{s≤t}(ON_s − OFF_s).

    Exact when every step changes x by 0 or ±θ (and ``init`` = x_{−1}); otherwise
    sub-threshold changes are lost and larger ones are rounded to θ, so errors accumulate.

    Args:
        spikes: (T, ..., 2C) or signed (T, ..., C).
    Returns:
        (T, ..., C) reconstruction.
    """
    th = _check_threshold(threshold)
    s = _split(spikes, signed)
    return (_init(s.double(), init) + th * s.double().cumsum(0)).to(s.dtype)


# --------------------------------------------------------------------------- ADM
def adm(x: Tensor, threshold: float, *, init=None, signed: bool = False) -> Tensor:
    """Asynchronous delta modulation (level crossing with a tracking reference).

    A reference r (r_{−1} = ``init``, default x_0) follows the signal: at each step, ON if
    x_t − r ≥ θ (then r += θ), OFF if x_t − r ≤ −θ (then r −= θ), at most one spike per
    step and channel. The decoder replays r, so ``|x_t − x̂_t|`` < θ at every step whenever
    ``|x_t − x_{t−1}|`` ≤ θ (no slope overload; pick fs ≥ max|dx/dt|/θ). Faster changes are
    tracked at θ per step, as in hardware delta modulators.

    Args:
        x: (T, ..., C) time-major signal.
    Returns:
        (T, ..., 2C) in {0, 1} (up then down), or (T, ..., C) in {−1, 0, 1} if ``signed``.

    Spike rate: per channel the count is ≤ min(T, (TV(x) + ``|x_0 − init|``)/θ), so the rate is
    ≤ min(fs, max|dx/dt|/θ) spikes/s (each run of k same-sign spikes needs x to move ≥ kθ).
    """
    x = _check_x(x, min_dim=2)
    th = _check_threshold(threshold)
    # numpy loop: the recurrence is sequential and numpy's per-op cost is ~5x below torch's
    xs = x.detach().cpu().double().numpy()
    ref = _init(x, init).detach().cpu().double().numpy().copy()
    up = np.zeros(xs.shape, dtype=bool)
    down = np.zeros(xs.shape, dtype=bool)
    for t in range(xs.shape[0]):
        d = xs[t] - ref
        np.greater_equal(d, th, out=up[t])
        np.less_equal(d, -th, out=down[t])
        ref += th * (up[t].astype(np.float64) - down[t])
    on, off = torch.from_numpy(up).to(x.device), torch.from_numpy(down).to(x.device)
    return _onoff(on, off, signed, x.dtype)


def adm_decode(spikes: Tensor, threshold: float, *, init=0.0, signed: bool = False) -> Tensor:
    """Replay the ADM reference: x̂_t = init + θ·Σ_{s≤t}(UP_s − DOWN_s).

    Pass the encoder's ``init`` (x_0 when it was left as None) for the error bound of
    :func:`adm` to hold.

    Args:
        spikes: (T, ..., 2C) or signed (T, ..., C).
    Returns:
        (T, ..., C).
    """
    return delta_decode(spikes, threshold, init=init, signed=signed)


def multi_adm(x: Tensor, thresholds: Sequence[float], *, init=None, signed: bool = False
              ) -> Tensor:
    """ADM of every channel at several thresholds, side by side.

    Small θ resolve low-amplitude detail (e.g. ECG P/T waves); large θ follow steep slopes
    (QRS) without the slope overload of a small θ, since ADM sends ≤ 1 spike per step and
    channel. Each θ is an independent :func:`adm` (same ``init``).

    Args:
        x: (T, ..., C) time-major signal.
        thresholds: the n_θ thresholds, in output order.
    Returns:
        (T, ..., 2·C·n_θ) in {0, 1}: for each θ in order, its C ON then C OFF channels
        (``out[..., 2Ck : 2C(k+1)] == adm(x, thresholds[k])``); or (T, ..., C·n_θ) in
        {−1, 0, 1} if ``signed``.

    Spike rate: the sum of :func:`adm`'s bound over the thresholds, ≤ n_θ·fs per channel.
    """
    thresholds = [_check_threshold(th) for th in thresholds]
    if not thresholds:
        raise ValueError("multi_adm: thresholds is empty")
    return torch.cat([adm(x, th, init=init, signed=signed) for th in thresholds], dim=-1)


# --------------------------------------------------------------------------- transforms
class DeltaEncoder(nn.Module):
    """Transform wrapping :func:`delta`: (T, ..., C) → (T, ..., 2C)."""

    def __init__(self, threshold: float, signed: bool = False):
        super().__init__()
        self.threshold, self.signed = _check_threshold(threshold), signed

    def forward(self, x: Tensor) -> Tensor:
        return delta(x, self.threshold, signed=self.signed)

    def decode(self, spikes: Tensor, init=0.0) -> Tensor:
        return delta_decode(spikes, self.threshold, init=init, signed=self.signed)


class ADMEncoder(nn.Module):
    """Transform wrapping :func:`adm` (level crossing): (T, ..., C) → (T, ..., 2C)."""

    def __init__(self, threshold: float, signed: bool = False):
        super().__init__()
        self.threshold, self.signed = _check_threshold(threshold), signed

    def forward(self, x: Tensor) -> Tensor:
        return adm(x, self.threshold, signed=self.signed)

    def decode(self, spikes: Tensor, init=0.0) -> Tensor:
        return adm_decode(spikes, self.threshold, init=init, signed=self.signed)


class MultiADMEncoder(nn.Module):
    """Transform wrapping :func:`multi_adm`: (T, ..., C) → (T, ..., 2·C·n_θ)."""

    def __init__(self, thresholds: Sequence[float] = (0.03, 0.1, 0.3), signed: bool = False):
        super().__init__()
        self.thresholds = tuple(_check_threshold(th) for th in thresholds)
        self.signed = signed

    def forward(self, x: Tensor) -> Tensor:
        return multi_adm(x, self.thresholds, signed=self.signed)
