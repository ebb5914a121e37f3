"""Bonn EEG (Andrzejak et al. 2001): sets Z/O/N/F/S of 100 single-channel text segments.

Symbols: T samples per window, fs sampling rate (173.61 Hz).

Follows torchaudio like :class:`bimsnn.data.eeg.CHBMIT`: ``Bonn(root, ..., download=False)``
and ``ds[i] -> (x (T, 1), label, meta)``; label 1 = ictal (set S) / 0 = not. The split
helpers of :mod:`bimsnn.data.eeg` group windows by segment.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from bimsnn.data.errors import DataError
from bimsnn.data.files import read_text

__all__ = ["Bonn"]

_BONN_HELP = ("the Bonn EEG set is not downloaded automatically: get Z.zip, O.zip, N.zip, F.zip, "
              "S.zip from the UPF NTSA downloads page (Andrzejak et al. 2001) and unzip them to "
              "root/{Z,O,N,F,S}/ (see datasets/README.md)")


# --------------------------------------------------------------------------- Bonn
class Bonn(Dataset):
    """Bonn EEG (Andrzejak et al. 2001): 5 sets × 100 single-channel 23.6 s segments.

    Layout: ``root/{Z,O,N,F,S}/*.txt`` (or ``*.TXT``), one sample per line, 173.61 Hz.
    Label 1 for set S (ictal), 0 otherwise; ``meta["set"]`` keeps the set. Every segment must
    hold exactly :attr:`N_SAMPLES` = 4097 finite numbers (the published specification): a
    shorter or longer file is a DataError naming it, never a reason to cut the others.

    Args:
        window_s, stride_s: None = the whole segment (4097 samples).
        l_freq, h_freq: band-pass through ``mne.filter.filter_data``.
        sfreq: output rate through ``mne.filter.resample`` (0 < sfreq ≤ 173.61).
        normalize: ``"segment"`` z-score per segment, ``"window"``, or None (µV).
    ``ds[i] -> (x (T, 1) or encoder(x), label, dict(set, segment, start_s))``.
    """

    FS = 173.61
    N_SAMPLES = 4097
    SETS = ("Z", "O", "N", "F", "S")

    def __init__(self, root, sets: Sequence[str] = SETS, window_s: float | None = None,
                 stride_s: float | None = None, encoder: Callable | None = None,
                 l_freq: float | None = None, h_freq: float | None = None,
                 sfreq: float | None = None, normalize: str | None = "segment",
                 download: bool = False):
        import mne

        self.root = Path(root)
        if download:
            raise DataError(self.root, _BONN_HELP)
        if normalize not in ("segment", "window", None):
            raise DataError(self.root, f"normalize must be 'segment', 'window' or None, got {normalize!r}")
        self.encoder, self.normalize = encoder, normalize
        self.skipped: list = []      # as every loader's; Bonn never skips a segment
        self.sfreq = self.FS if sfreq is None else float(sfreq)
        if not 0 < self.sfreq <= self.FS:
            raise DataError(self.root, f"impossible resampling target sfreq={sfreq} Hz "
                                       f"(must be in (0, {self.FS}]; no upsampling)")
        segs, names, set_of = [], [], []
        for s in sets:
            if s not in self.SETS:
                raise DataError(self.root, f"unknown set {s!r}; expected one of {self.SETS}")
            d = next((p for p in (self.root / s, self.root / s.lower()) if p.is_dir()), None)
            files = [] if d is None else sorted(p for p in d.iterdir() if p.suffix.lower() == ".txt")
            if not files:
                raise DataError(self.root / s, f"no *.txt segments. {_BONN_HELP}")
            stems = [p.stem.upper() for p in files]
            if len(set(stems)) < len(stems):
                dup = sorted({n for n in stems if stems.count(n) > 1})
                raise DataError(d, f"segments {dup} appear twice (names differ only in case)")
            for p in files:
                segs.append(self._read(p))
                names.append(p.stem.upper())
                set_of.append(s)
        data = np.stack(segs)                                       # (S, N) µV
        if l_freq is not None or h_freq is not None:
            data = mne.filter.filter_data(data, self.FS, l_freq, h_freq, verbose="error")
        if self.sfreq != self.FS:
            data = mne.filter.resample(data, up=self.sfreq / self.FS, verbose="error")
        if normalize == "segment":
            data = (data - data.mean(1, keepdims=True)) / data.std(1, keepdims=True).clip(1e-12)
        self.data = torch.from_numpy(data.astype(np.float32))
        n = self.data.shape[1]
        win = n if window_s is None else int(round(window_s * self.sfreq))
        hop = win if stride_s is None else int(round(stride_s * self.sfreq))
        if not 0 < win <= n or hop <= 0:
            raise DataError(self.root, f"window {win} samples must be in (0, {n}] and stride > 0")
        starts = np.arange(0, n - win + 1, hop)
        seg = np.repeat(np.arange(len(names)), len(starts))
        self.meta = pd.DataFrame(dict(
            segment=np.array(names)[seg], set=np.array(set_of)[seg], seg_index=seg,
            start=np.tile(starts, len(names)), start_s=np.tile(starts, len(names)) / self.sfreq,
            label=(np.array(set_of)[seg] == "S").astype(np.int64)))
        self.meta["recording"] = self.meta["segment"]     # Bonn has no subject ids
        self.labels = self.meta["label"].to_numpy()
        self._win = win

    @classmethod
    def _read(cls, path: Path) -> np.ndarray:
        text = read_text(path, "Bonn segment")
        try:
            x = np.array(text.split(), dtype=np.float64)
        except ValueError as e:
            raise DataError(path, f"unreadable segment ({e})") from e
        if x.size == 0:
            raise DataError(path, "empty segment")
        if not np.isfinite(x).all():
            raise DataError(path, f"{int((~np.isfinite(x)).sum())} NaN/inf samples "
                                  f"(first at line {int(np.argmax(~np.isfinite(x))) + 1})")
        if x.size != cls.N_SAMPLES:
            raise DataError(path, f"{x.size} samples; Bonn segments hold {cls.N_SAMPLES} "
                                  f"({cls.N_SAMPLES / cls.FS:.1f} s at {cls.FS} Hz)")
        return x

    def __len__(self) -> int:
        return len(self.meta)

    def __getitem__(self, k: int):
        row = self.meta.iloc[k]
        s = int(row["start"])
        x = self.data[int(row["seg_index"]), s:s + self._win].unsqueeze(-1).clone()  # (T, 1)
        if self.normalize == "window":
            x = (x - x.mean(0)) / x.std(0).clamp_min(1e-12)
        if self.encoder is not None:
            x = self.encoder(x)
        return x, int(row["label"]), dict(set=row["set"], segment=row["segment"],
                                          start_s=float(row["start_s"]))
