"""Log-mel → fixed-length, normalised, spike-coded speech features (keyword spotting, ASR).

Symbols: N items, T frames (one per hop), F mel bands, L thermometer levels,
C = F·L (+ 2F with delta) spike afferents, a speed-perturbation factor.

Steps (:func:`load_features`): optional speed perturbation of the waveform (torchaudio
``Resample``: pitch, formants and duration all scale, a new "voice", Ko et al. 2015) →
log-mel (:class:`bimsnn.data.audio.LogMel`) → normalisation (:func:`normalise`) → fixed
length (:func:`fix_length`) → per item, :class:`SpikeSet` applies augmentation and the
:class:`~bimsnn.encoding.SpikeCode` thermometer (:func:`bimsnn.encoding.thermometer`).

Normalisation modes, from least to most speaker-robust on FSDD (benchmarks/speech.py)::

    global   per utterance: subtract the mean over all bins (loudness), divide by their std;
    cmn      per utterance: subtract each band's mean over time (channel and spectral tilt);
    speaker  per speaker: subtract each band's mean over *all* that speaker's frames and
             divide by its std (speaker-level CMVN as in Kaldi). Unlike cmn it keeps each
             word's own spectral shape. It needs unlabelled audio of the speaker at test
             time (the speaker's test items themselves: transductive, no labels used).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torchaudio
from torch import Tensor
from torch.utils.data import Dataset

from bimsnn.data.audio import check_analysis_window
from bimsnn.encoding import SpikeCode  # noqa: F401  (re-export: moved to bimsnn.encoding)

NORMS = ("global", "cmn", "speaker")
FITS = ("crop", "stretch")


def normalise(logmel: Tensor, mode: str = "global",
              stats: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Normalise one (T, F) log-mel; see the module docstring for ``mode``.

    ``stats`` = (mean (F,), std (F,)) of the item's speaker, needed by ``"speaker"``
    (:func:`speaker_stats`).
    """
    if mode == "speaker":
        if stats is None:
            raise ValueError("normalise(mode='speaker') needs the speaker's (mean, std) stats")
        return (logmel - stats[0]) / stats[1].clamp_min(1e-3)
    if mode not in NORMS:
        raise ValueError(f"normalisation must be one of {NORMS}, got {mode!r}")
    z = logmel - (logmel.mean() if mode == "global" else logmel.mean(0))
    return z / z.std().clamp_min(1e-3)


def speaker_stats(logmels: Sequence[Tensor], speakers: Sequence) -> dict:
    """{speaker: (mean (F,), std (F,))} over all frames of each speaker's (T_i, F) items."""
    out = {}
    for s in dict.fromkeys(speakers):
        frames = torch.cat([m for m, k in zip(logmels, speakers) if k == s])
        out[s] = (frames.mean(0), frames.std(0))
    return out


def fix_length(z: Tensor, frames: int, fill: float, mode: str = "crop") -> Tensor:
    """(T, F) → (frames, F). ``"crop"``: centre-crop, or pad the front with ``fill`` (the
    clip ends where the readout reads); ``"stretch"``: linear resampling in time (speaking
    rate normalised; needs the whole utterance, so not for streaming)."""
    if mode == "stretch":
        return torch.nn.functional.interpolate(z.T[None], size=frames, mode="linear",
                                               align_corners=True)[0].T
    if mode != "crop":
        raise ValueError(f"fit must be one of {FITS}, got {mode!r}")
    if len(z) >= frames:
        s = (len(z) - frames) // 2
        return z[s: s + frames]
    return torch.cat([torch.full((frames - len(z), z.shape[1]), fill), z])


def _interp(z: Tensor, pos: Tensor, dim: int) -> Tensor:
    """Linear interpolation of z (T, F) at fractional positions ``pos`` along ``dim``."""
    pos = pos.clamp(0, z.shape[dim] - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=z.shape[dim] - 1)
    w = (pos - lo).unsqueeze(1 - dim)                              # broadcast over the other dim
    a, b = z.index_select(dim, lo), z.index_select(dim, hi)
    return a + (b - a) * w


class SpikeSet(Dataset):
    """Normalised fixed-length log-mel in memory; spikes are coded per item (so that
    augmentation acts on the log-mel). Items: ``(spikes (T, C), label, meta)``.

    Augmentation (training only; torch's global RNG, seeded by ``fit``): one resampling of
    the (T, F) plane with a random time shift (± ``max_shift`` frames), time stretch
    (speaking rate ×[1 − stretch, 1 + stretch], anchored at the clip end) and mel-axis
    scaling (×[1 − warp, 1 + warp], a vocal-tract-length perturbation).
    """

    SILENCE = -10.0  # value of padded frames: below every level, so they carry no spikes

    def __init__(self, feats: Tensor, labels: list[int], metas: list[dict], code: SpikeCode,
                 augment: bool = False, max_shift: int = 8, stretch: float = 0.15,
                 warp: float = 0.1):
        self.feats, self.labels, self.metas = feats, labels, metas   # feats (N, T, F)
        self.code, self.augment = code, augment
        self.max_shift, self.stretch, self.warp = max_shift, stretch, warp

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        z = self.feats[i].float()
        if self.augment:
            T, F = z.shape
            shift, rate, alpha = torch.rand(3) * 2 - 1
            t = torch.arange(T, dtype=z.dtype)
            pos = (T - 1) - (T - 1 - t) * (1 + self.stretch * rate) + self.max_shift * shift
            outside = (pos < 0) | (pos > T - 1)
            z = _interp(z, pos, 0)
            z[outside] = self.SILENCE
            z = _interp(z, torch.arange(F, dtype=z.dtype) * (1 + self.warp * alpha), 1)
        return self.code(z), self.labels[i], self.metas[i]


def _logmel(ds, i: int, resample: torch.nn.Module | None) -> Tensor:
    """(T, F) log-mel of item i of an audio dataset, the waveform first resampled.

    Raises:
        DataError: naming the file, if the (resampled) waveform is shorter than one
            analysis window (:func:`bimsnn.data.audio.check_analysis_window`).
    """
    if resample is None:
        return ds[i][0]  # the dataset checks the window itself
    path, _, _, segment = ds.items[i]
    with torch.no_grad():
        wave = resample(ds.pipeline.load(path, *(segment or ())))    # (N,)
        check_analysis_window(path, wave, ds.pipeline)
        return ds.pipeline.features(wave)


def speed_resampler(sample_rate: int, factor: float) -> tuple[torch.nn.Module | None, float]:
    """A ``Resample`` that speeds audio up by ≈ ``factor`` when played back at
    ``sample_rate`` (factor < 1 slows it: lower pitch and formants, longer), and the
    exact factor. The new rate is rounded to 100 Hz so that the polyphase filter stays
    small (8 kHz → 8.9 kHz: 80/89 phases)."""
    if factor <= 0:
        raise ValueError(f"speed factor must be > 0, got {factor}")
    new = max(100, round(sample_rate / factor / 100) * 100)
    if new == sample_rate:
        return None, 1.0
    return torchaudio.transforms.Resample(sample_rate, new), sample_rate / new


def load_features(ds: Dataset, idx, frames: int, norm: str = "global", fit: str = "crop",
                  speed: float = 1.0) -> Tensor:
    """(N, frames, F) normalised fixed-length log-mel of ``ds`` items ``idx``, read once.

    ``speed`` ≠ 1 speed-perturbs every waveform first. ``norm="speaker"`` computes each
    speaker's stats over the items given here (so over the perturbed copies when
    ``speed`` ≠ 1: they count as other voices); items need ``meta["speaker"]``.

    Raises:
        DataError: naming the file, for audio shorter than one analysis window (checked
            after speed perturbation, before the log-mel) or unreadable audio.
    """
    if norm not in NORMS:
        raise ValueError(f"normalisation must be one of {NORMS}, got {norm!r}")
    idx = [int(i) for i in np.asarray(idx).reshape(-1)]
    if not idx:
        return torch.zeros(0, frames, 1)
    rs, _ = speed_resampler(ds.pipeline.sample_rate, speed) if speed != 1.0 else (None, 1.0)
    mels = [_logmel(ds, i, rs) for i in idx]
    stats, speakers = None, None
    if norm == "speaker":
        speakers = [ds.items[i][2].get("speaker") for i in idx]
        if any(s is None for s in speakers):
            raise ValueError("norm='speaker' needs meta['speaker'] on every item")
        stats = speaker_stats(mels, speakers)
    out = [fix_length(normalise(m, norm, stats[speakers[k]] if stats else None), frames,
                      SpikeSet.SILENCE, fit) for k, m in enumerate(mels)]
    return torch.stack(out)
