"""Spike encoders (signal → time-major spikes) and decoders (spikes → signal).

Symbols: T time steps, B batch, C channels, F mel bands, L threshold levels,
fs input sampling rate (steps per second), D = T / fs duration in seconds,
θ threshold, TV(x) = Σ_t |x_t − x_{t−1}| total variation of one channel.

Layout of on/off encoders (``delta``, ``adm``, ``mel_threshold``): the output
concatenates along the last axis, ``out[..., :K]`` ON (up) spikes and
``out[..., K:]`` OFF (down) spikes, each in {0, 1}. With ``signed=True``
``delta``/``adm`` return ON − OFF in {−1, 0, +1} with the input's shape.

Functional encoders are pure (the only randomness is the optional
``generator``); the ``*Encoder`` modules are thin transforms over them, in the
torchaudio style, so datasets can take ``encoder=ADMEncoder(0.1)``.

    >>> x = torch.tensor([[0.0], [0.3], [0.6], [0.2]])
    >>> adm(x, 0.25).T.tolist()      # ON channel, then OFF channel
    [[0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
    >>> adm_decode(adm(x, 0.25), 0.25, init=0.0).squeeze(-1).tolist()
    [0.0, 0.25, 0.5, 0.25]
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "rate", "latency", "delta", "delta_decode", "adm", "adm_decode", "level_crossing",
    "mel_threshold", "log_mel", "spike_rate",
    "RateEncoder", "LatencyEncoder", "DeltaEncoder", "ADMEncoder", "MelThresholdEncoder",
]


def _check_x(x: Tensor, min_dim: int = 1, name: str = "x") -> Tensor:
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
    if signed:
        return on.to(dtype) - off.to(dtype)
    return torch.cat([on, off], dim=-1).to(dtype)


# --------------------------------------------------------------------------- rate / latency
def rate(x: Tensor, *, gain: float = 1.0, num_steps: int | None = None, mode: str = "bernoulli",
         generator: torch.Generator | None = None) -> Tensor:
    """Rate coding: each step spikes independently with probability p(x).

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

    Spike rate: each spike needs |Δx| ≥ θ within one step, so per channel the count is
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
    step and channel. The decoder replays r, so |x_t − x̂_t| < θ at every step whenever
    |x_t − x_{t−1}| ≤ θ (no slope overload; pick fs ≥ max|dx/dt|/θ). Faster changes are
    tracked at θ per step, as in hardware delta modulators.

    Args:
        x: (T, ..., C) time-major signal.
    Returns:
        (T, ..., 2C) in {0, 1} (up then down), or (T, ..., C) in {−1, 0, 1} if ``signed``.

    Spike rate: per channel the count is ≤ min(T, (TV(x) + |x_0 − init|)/θ), so the rate is
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


level_crossing = adm


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


# --------------------------------------------------------------------------- log-mel thresholds
def mel_threshold(logmel: Tensor, levels: Tensor) -> Tensor:
    """Threshold-crossing code of log-mel bands (Gütig & Sompolinsky 2009, PLoS Biol).

    Each band f has L levels; afferent (f, l, up) spikes at t when the band rises
    through level l (x_{t−1} < λ_l ≤ x_t), (f, l, down) when it falls through it
    (x_{t−1} ≥ λ_l > x_t); x_{−1} := x_0, so nothing fires at t = 0.

    Args:
        logmel: (T, ..., F) log-mel power (e.g. dB).
        levels: (L,) levels shared by all bands, or (F, L) per band.
    Returns:
        (T, ..., 2·F·L) in {0, 1}: ``out[..., f·L + l]`` up, ``out[..., F·L + f·L + l]`` down.

    Spike rate: a step crosses the levels inside [x_{t−1}, x_t], so a band emits
    ≤ |Δx_t|/Δ + 1 spikes per step for levels spaced ≥ Δ apart, and ≤ TV/Δ + T per window;
    each afferent fires ≤ once per step, so its rate is ≤ fs (frame rate).
    """
    x = _check_x(logmel, min_dim=2, name="logmel")
    F = x.shape[-1]
    lev = torch.as_tensor(levels, dtype=x.dtype, device=x.device)
    if lev.dim() == 1:
        lev = lev.unsqueeze(0).expand(F, -1)
    if lev.dim() != 2 or lev.shape[0] != F or lev.shape[1] == 0:
        raise ValueError(f"levels: expected (L,) or ({F}, L), got {tuple(lev.shape)}")
    if not torch.isfinite(lev).all():
        raise ValueError("levels: contains NaN or inf")
    prev = torch.cat([x[:1], x[:-1]], dim=0).unsqueeze(-1)          # (T, ..., F, 1)
    cur = x.unsqueeze(-1)
    up = (prev < lev) & (cur >= lev)                                 # (T, ..., F, L)
    down = (prev >= lev) & (cur < lev)
    return torch.cat([up.flatten(-2), down.flatten(-2)], dim=-1).to(x.dtype)


def log_mel(waveform: Tensor, sample_rate: int, *, n_mels: int = 40, win_ms: float = 25.0,
            hop_ms: float = 10.0, top_db: float = 80.0) -> Tensor:
    """Log-mel spectrogram in dB through torchaudio, time-major.

    Args:
        waveform: (N,) or (channels, N) samples (channels are averaged).
    Returns:
        (T, F) with F = n_mels and T ≈ N / hop frames (frame rate 1000 / hop_ms Hz).
    """
    import torchaudio  # local: keeps ``import bimsnn.encoding`` light

    w = _check_x(waveform, name="waveform")
    if w.dim() == 2:
        w = w.mean(0)
    if sample_rate <= 0 or n_mels < 1 or hop_ms <= 0 or win_ms <= 0:
        raise ValueError("sample_rate, n_mels, win_ms and hop_ms must be positive")
    n_fft = int(round(sample_rate * win_ms / 1000))
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate, n_fft=n_fft, hop_length=max(1, int(round(sample_rate * hop_ms / 1000))),
        n_mels=n_mels)(w)                                            # (F, T)
    return torchaudio.transforms.AmplitudeToDB("power", top_db=top_db)(mel).T.contiguous()


def spike_rate(spikes: Tensor, fs: float) -> Tensor:
    """Mean spikes per second of each afferent: (T, ..., K) → (..., K); counts |s| for ±1."""
    spikes = _check_x(spikes, name="spikes")
    if fs <= 0:
        raise ValueError(f"fs must be > 0, got {fs}")
    return spikes.abs().sum(0) * (fs / spikes.shape[0])


# --------------------------------------------------------------------------- transforms
class RateEncoder(nn.Module):
    """Transform wrapping :func:`rate`: (T, ...) → (T, ...) spikes; see it for the rate."""

    def __init__(self, gain: float = 1.0, mode: str = "bernoulli", num_steps: int | None = None):
        super().__init__()
        self.gain, self.mode, self.num_steps = gain, mode, num_steps

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return rate(x, gain=self.gain, mode=self.mode, num_steps=self.num_steps,
                    generator=generator)


class LatencyEncoder(nn.Module):
    """Transform wrapping :func:`latency`: (...) → (num_steps, ...)."""

    def __init__(self, num_steps: int, threshold: float = 0.0):
        super().__init__()
        self.num_steps, self.threshold = num_steps, threshold

    def forward(self, x: Tensor) -> Tensor:
        return latency(x, self.num_steps, threshold=self.threshold)


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


class MelThresholdEncoder(nn.Module):
    """Transform wrapping :func:`mel_threshold`: (T, F) log-mel → (T, 2·F·L) spikes.

    Args:
        levels: fixed (L,) or (F, L) levels (e.g. dB values), or None for ``n_levels``
            levels per band spread evenly strictly inside that band's [min, max] over
            the input (per-item adaptive: loudness-invariant, but item-dependent).
    """

    def __init__(self, levels: Tensor | None = None, n_levels: int = 8):
        super().__init__()
        if levels is None and n_levels < 1:
            raise ValueError(f"n_levels must be >= 1, got {n_levels}")
        self.levels = None if levels is None else torch.as_tensor(levels, dtype=torch.float32)
        self.n_levels = n_levels

    def forward(self, logmel: Tensor) -> Tensor:
        x = _check_x(logmel, min_dim=2, name="logmel")
        levels = self.levels
        if levels is None:
            lo = x.flatten(0, -2).amin(0)                            # (F,)
            hi = x.flatten(0, -2).amax(0)
            frac = torch.arange(1, self.n_levels + 1, dtype=x.dtype) / (self.n_levels + 1)
            levels = lo.unsqueeze(-1) + (hi - lo).unsqueeze(-1) * frac  # (F, L)
        return mel_threshold(x, levels)
