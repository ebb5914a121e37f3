"""Filterbank ADM: band-limited log-envelopes of a signal, coded by ADM (EEG rhythms).

Symbols: S input samples, T = ⌊S / hop⌋ frames, C channels, Nb bands, fs input sampling
rate (Hz), θ ADM threshold (decades of the envelope).

Per band: zero-phase Butterworth band-pass (``sosfiltfilt`` over the window), envelope =
RMS over ``env_s`` centred on each frame, sampled every ``hop_s``, ``log10`` (of the input
unit, e.g. µV), then :func:`bimsnn.encoding.adm` with threshold θ and reference starting at
``floor``. Starting from a fixed floor (not x_0) makes the first steps an ON burst whose
length codes the band's absolute level (ADM slope overload, ≤ 1 spike/step); afterwards the
channel tracks changes. Σ(ON − OFF)·θ recovers the final level, ON + OFF its total variation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from bimsnn.encoding._checks import _check_threshold, _check_x
from bimsnn.encoding.contrast import adm

__all__ = ["EEG_BANDS", "filterbank_envelope", "filterbank_adm", "FilterbankADMEncoder"]

# delta, theta, alpha, low beta, high beta, low gamma (Hz)
EEG_BANDS = ((0.5, 4.0), (4.0, 8.0), (8.0, 13.0), (13.0, 20.0), (20.0, 30.0), (30.0, 40.0))


def _frames(fs: float, hop_s: float, env_s: float) -> tuple[int, int]:
    """(hop, env) in samples, each ≥ 1."""
    return max(1, int(round(hop_s * fs))), max(1, int(round(env_s * fs)))


def filterbank_envelope(x: Tensor, fs: float, *, bands: Sequence[tuple[float, float]] = EEG_BANDS,
                        hop_s: float = 0.125, env_s: float = 0.5, order: int = 4) -> Tensor:
    """Log10 RMS envelope of each band of each channel.

    Args:
        x: (S, ..., C) time-major signal sampled at ``fs`` Hz.
        bands: Nb (low, high) pass bands in Hz, each below fs / 2.
        hop_s: frame hop (s); env_s: RMS window (s), centred on each frame.
        order: Butterworth order (applied twice: zero phase).
    Returns:
        (T, ..., C·Nb) float64, T = ⌊S / hop⌋, bands fastest (``out[..., c·Nb + b]``);
        log10(RMS + 1e-3) in the input's unit.
    """
    from scipy.signal import butter, sosfiltfilt

    xs = _check_x(x, min_dim=2).detach().cpu().double().numpy()
    hop, env = _frames(fs, hop_s, env_s)
    S = xs.shape[0]
    T = S // hop
    centre = np.arange(T) * hop + hop // 2                                    # (T,)
    lo = np.clip(centre - env // 2, 0, S)
    hi = np.clip(centre + (env + 1) // 2, 0, S)
    n = np.maximum(hi - lo, 1).reshape(T, *[1] * (xs.ndim - 1))             # (T, 1, ..., 1)
    out = []
    for band in bands:
        sos = butter(order, band, btype="band", fs=fs, output="sos")
        xb = sosfiltfilt(sos, xs, axis=0)                                     # (S, ..., C)
        cs = np.cumsum(xb ** 2, axis=0)
        cs = np.concatenate([np.zeros_like(cs[:1]), cs], axis=0)              # (S+1, ..., C)
        rms = np.sqrt(np.maximum(cs[hi] - cs[lo], 0) / n)                     # (T, ..., C)
        out.append(np.log10(rms + 1e-3))
    env_db = np.stack(out, axis=-1)                                           # (T, ..., C, Nb)
    return torch.from_numpy(env_db.reshape(*env_db.shape[:-2], -1))


def filterbank_adm(x: Tensor, fs: float, *, bands: Sequence[tuple[float, float]] = EEG_BANDS,
                   hop_s: float = 0.125, env_s: float = 0.5, theta: float = 0.15,
                   floor: float = 0.5, order: int = 4) -> Tensor:
    """Band log-envelopes coded by ADM: encodes each band's level and its changes.

    Args:
        x: (S, ..., C) time-major signal (e.g. EEG in µV) sampled at ``fs`` Hz.
        theta: ADM threshold in decades of the envelope; floor: ADM reference at t = −1
            (log10 of the input unit). Others as :func:`filterbank_envelope`.
    Returns:
        (T, ..., 2·C·Nb) in {0, 1}, dtype of x (float32 for integer input): ON for all
        C·Nb envelopes (bands fastest), then OFF.

    Spike rate: ≤ 1 spike per frame and afferent, i.e. ≤ 1 / hop_s spikes/s; the initial
    burst is ⌈(level − floor)/θ⌉ spikes long.
    """
    x = _check_x(x, min_dim=2)
    env = filterbank_envelope(x, fs, bands=bands, hop_s=hop_s, env_s=env_s, order=order)
    return adm(env, _check_threshold(theta), init=floor).to(x.dtype)


class FilterbankADMEncoder(nn.Module):
    """Transform wrapping :func:`filterbank_adm`: (S, ..., C) → (T, ..., 2·C·Nb).

    ``hop`` is the frame hop in input samples (frame rate fs / hop).
    """

    def __init__(self, fs: float, bands: Sequence[tuple[float, float]] = EEG_BANDS,
                 hop_s: float = 0.125, env_s: float = 0.5, theta: float = 0.15,
                 floor: float = 0.5, order: int = 4):
        super().__init__()
        self.fs, self.bands = float(fs), tuple(tuple(b) for b in bands)
        self.hop_s, self.env_s, self.order = hop_s, env_s, order
        self.theta, self.floor = _check_threshold(theta), floor
        self.hop, self.env = _frames(self.fs, hop_s, env_s)

    def forward(self, x: Tensor) -> Tensor:
        return filterbank_adm(x, self.fs, bands=self.bands, hop_s=self.hop_s, env_s=self.env_s,
                              theta=self.theta, floor=self.floor, order=self.order)
