"""Log-mel features and their spike codes (thermometer, level crossings).

Symbols: N samples, T frames (one per hop), F mel bands, L levels per band, fs frame rate
(1000 / hop_ms frames per second).

One log-mel (:class:`LogMelSpectrogram`, :func:`log_mel`) for every caller: torchaudio
``MelSpectrogram`` (power 2, Hann window), then ``scale="db"`` (10·log10, floored at
max − ``top_db``; torchaudio ``AmplitudeToDB``) or ``scale="ln"`` (ln(mel + eps), what
:class:`bimsnn.data.audio.LogMel` feeds the speech recipes).

    >>> SpikeCode(levels=2)(torch.tensor([[-2.0], [0.0], [2.0]])).tolist()
    [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bimsnn.encoding._checks import _check_x
from bimsnn.encoding.contrast import delta as delta_code

__all__ = ["SCALES", "log_mel", "LogMelSpectrogram", "thermometer", "SpikeCode",
           "mel_threshold", "MelThresholdEncoder"]

SCALES = ("db", "ln")


# --------------------------------------------------------------------------- log-mel
class LogMelSpectrogram(nn.Module):
    """Waveform → log-mel spectrogram, time-major; the mel filterbank is built once.

    Args:
        sample_rate: Hz of the waveform.
        n_mels: F. win_ms / hop_ms: STFT window and hop, rounded to samples.
        n_fft: FFT size, ≥ the window; None: the window length (no zero padding).
        f_min, f_max: mel range in Hz (``f_max=None``: Nyquist).
        scale: ``"db"``: 10·log10(max(mel, 1e-10)), floored at (max − ``top_db``) per item;
            ``"ln"``: ln(mel + ``eps``) (silence → ln eps).

    ``forward(waveform)``: (N,) or (channels, N) samples (channels are averaged) →
    (T, F), T = 1 + N // hop frames (centred STFT).
    """

    def __init__(self, sample_rate: int, n_mels: int = 40, win_ms: float = 25.0,
                 hop_ms: float = 10.0, *, n_fft: int | None = None, f_min: float = 0.0,
                 f_max: float | None = None, scale: str = "db", top_db: float | None = 80.0,
                 eps: float = 1e-6):
        import torchaudio  # local: keeps ``import bimsnn.encoding`` light

        super().__init__()
        if sample_rate <= 0 or n_mels < 1 or hop_ms <= 0 or win_ms <= 0:
            raise ValueError("sample_rate, n_mels, win_ms and hop_ms must be positive")
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
        win = int(round(sample_rate * win_ms / 1000))
        self.sample_rate, self.scale, self.eps = sample_rate, scale, eps
        self.hop = max(1, int(round(sample_rate * hop_ms / 1000)))
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate, n_fft=n_fft or win, win_length=win, hop_length=self.hop,
            f_min=f_min, f_max=f_max, n_mels=n_mels, power=2.0)
        self.to_db = torchaudio.transforms.AmplitudeToDB("power", top_db=top_db)

    def forward(self, waveform: Tensor) -> Tensor:
        w = _check_x(waveform, name="waveform")
        if w.dim() == 2:
            w = w.mean(0)
        mel = self.mel(w)                                            # (F, T) power
        out = self.to_db(mel) if self.scale == "db" else torch.log(mel + self.eps)
        return out.T.contiguous()                                    # (T, F)


def log_mel(waveform: Tensor, sample_rate: int, *, n_mels: int = 40, win_ms: float = 25.0,
            hop_ms: float = 10.0, n_fft: int | None = None, f_min: float = 0.0,
            f_max: float | None = None, scale: str = "db", top_db: float | None = 80.0,
            eps: float = 1e-6) -> Tensor:
    """Log-mel spectrogram of one waveform: :class:`LogMelSpectrogram` built and applied once
    (build the module instead when many waveforms share the settings).

    Args:
        waveform: (N,) or (channels, N) samples (channels are averaged).
    Returns:
        (T, F) with F = n_mels and T = 1 + N // hop frames (frame rate 1000 / hop_ms Hz).
    """
    return LogMelSpectrogram(sample_rate, n_mels, win_ms, hop_ms, n_fft=n_fft, f_min=f_min,
                             f_max=f_max, scale=scale, top_db=top_db, eps=eps)(waveform)


# --------------------------------------------------------------------------- thermometer
def thermometer(z: Tensor, levels: int = 4, *, lo: float = -1.5, hi: float = 1.5,
                delta: float | None = None) -> Tensor:
    """Thermometer code of normalised features: encodes each band's level, frame by frame.

    Afferent (f, l) is on while band f ≥ level l, the L levels evenly spaced in [lo, hi]
    (one level at 0 when L = 1). ``delta`` adds :func:`bimsnn.encoding.delta` ON/OFF
    afferents that fire when a band rises / falls by at least ``delta`` in one frame.

    Args:
        z: (T, ..., F) normalised log-mel (e.g. zero mean, unit variance).
    Returns:
        (T, ..., F·L [+ 2F]) float32 in {0, 1}: ``out[..., f·L + l]`` level afferents, then
        F ON and F OFF delta afferents.

    Spike rate: ≤ fs per afferent (a level afferent may stay on for the whole window).
    """
    z = _check_x(z, min_dim=2, name="z")
    if int(levels) < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    lv = torch.linspace(lo, hi, levels) if levels > 1 else torch.zeros(1)
    out = [(z.unsqueeze(-1) >= lv).flatten(-2).float()]            # (T, ..., F·L)
    if delta:
        out.append(delta_code(z, delta).float())                     # (T, ..., 2F)
    return torch.cat(out, -1)


@dataclass
class SpikeCode:
    """Transform wrapping :func:`thermometer`: normalised log-mel (T, F) → spikes
    (T, F·L [+ 2F]) in {0, 1}; ``n_channels(F)`` gives the output width."""

    levels: int = 4
    delta: float | None = None
    lo: float = -1.5
    hi: float = 1.5

    def n_channels(self, n_mels: int) -> int:
        return n_mels * self.levels + (2 * n_mels if self.delta else 0)

    def __call__(self, z: Tensor) -> Tensor:
        return thermometer(z, self.levels, lo=self.lo, hi=self.hi, delta=self.delta)


# --------------------------------------------------------------------------- level crossings
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
    ≤ ``|Δx_t|``/Δ + 1 spikes per step for levels spaced ≥ Δ apart, and ≤ TV/Δ + T per window;
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
