"""Connected spoken digits built from any FSDD folder: "three one four" utterances for CTC.

Symbols: N waveform samples, T frames, F mel bands, n digits in an utterance.

Each utterance is 2-7 (``n_digits``) recordings of ONE speaker, ``{digit}_{speaker}_{take}.wav``
(FSDD, 8 kHz), concatenated with a random 50-300 ms (``gap_ms``) pause before and between
the digits. A pause is not digital zero: it is Gaussian noise at the recordings' own floor
(the std of the quieter 10 ms edge of the neighbouring recordings), so a pause looks like
the silences inside FSDD files and not like a cleaner, easier-to-spot boundary.

The utterance ends with its last recording (whose own edge is a short silence): no trailing
pause. With one, a pause would mean "a space follows" everywhere but at the end, which a
causal model cannot tell apart until the next digit starts; a causal LSTM trained with a
trailing pause merged neighbouring words ("TWOONE") in a third of its word errors.

Everything (speaker, digits, takes, pause lengths, noise) is drawn at construction from
``numpy.random.default_rng((seed, split))``: the same arguments give the same utterances.

Splits (which recordings each split may use):

- ``by="takes"`` (held-out takes, every speaker): test takes 0-4 (the FSDD README's test
  takes), val takes 5-9, train takes ≥ 10;
- ``by="speaker"``: test = ``test_speakers`` (default: one speaker drawn with ``seed``); val =
  takes 0-4 of the other speakers; train = their takes ≥ 5;
- ``split=None``: every recording.

``per_file=True`` makes every recording one single-digit utterance (``--eval-only`` on an
FSDD folder scores each file once), after a pause.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torchaudio
from torch.utils.data import Dataset

from bimsnn.data.audio import check_analysis_window, read_audio
from bimsnn.data.errors import DataError

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")
SPLITS = ("train", "val", "test")
_EDGE_S = 0.010                       # edge length whose std sets a pause's noise floor


def digits_text(digits: Sequence[int]) -> str:
    """Transcript of a digit string.

    >>> digits_text([3, 1, 4])
    'three one four'
    """
    return " ".join(DIGIT_WORDS[d] for d in digits)


def fsdd_files(root: str | Path) -> list[tuple[Path, int, str, int]]:
    """Sorted ``(path, digit, speaker, take)`` of the FSDD WAVs in ``root`` or ``root/recordings``.

    Raises:
        DataError naming the folder when it holds no ``{digit}_{speaker}_{take}.wav`` file.
    """
    root = Path(root)
    folder = root / "recordings" if (root / "recordings").is_dir() else root
    files = []
    for path in sorted(folder.glob("*.wav")) if folder.is_dir() else []:
        m = _NAME.match(path.name)
        if m:
            files.append((path, int(m[1]), m[2], int(m[3])))
    if not files:
        raise DataError(folder, "no FSDD files ({digit}_{speaker}_{take}.wav) in this folder")
    return files


def split_files(files: list, split: str | None, by: str = "takes",
                test_speakers: Sequence[str] | None = None, seed: int = 0) -> list:
    """The recordings ``split`` may use (module docstring); ``files`` as :func:`fsdd_files`."""
    if split is None:
        return list(files)
    if split not in SPLITS:
        raise ValueError(f"split must be None or one of {SPLITS}, got {split!r}")
    if by == "takes":
        keep = {"test": lambda s, t: t <= 4, "val": lambda s, t: 5 <= t <= 9,
                "train": lambda s, t: t >= 10}[split]
    elif by == "speaker":
        speakers = sorted({f[2] for f in files})
        held = set(test_speakers or [speakers[np.random.default_rng(seed).integers(len(speakers))]])
        keep = {"test": lambda s, t: s in held, "val": lambda s, t: s not in held and t <= 4,
                "train": lambda s, t: s not in held and t >= 5}[split]
    else:
        raise ValueError(f"by must be 'takes' or 'speaker', got {by!r}")
    return [f for f in files if keep(f[2], f[3])]


class FSDDStrings(Dataset):
    """Digit-string utterances of one speaker each, composed from FSDD recordings.

    Args:
        root: FSDD folder (the WAVs, or a folder holding them in ``recordings/``).
        n_utts: utterances to compose (ignored with ``per_file``).
        split, by, test_speakers: which recordings (module docstring); ``split=None``: all.
        n_digits: (min, max) digits per utterance, inclusive.
        gap_ms: (min, max) pause before each digit, uniform.
        seed: draws everything; the split's name is mixed in, so splits differ.
        per_file: one utterance per recording (a single digit), in file order.
        sample_rate: output rate (FSDD is 8 kHz; other rates are resampled).
        pipeline: optional :class:`~bimsnn.data.LogMel` (or any object with ``features``):
            items then carry ``pipeline.features(wave)`` (T, F) instead of the wave.
        download: not supported (clone github.com/Jakobovski/free-spoken-digit-dataset).

    ``__getitem__(n)`` returns ``(x, transcript, meta)``: x the waveform ``(N,)`` float32 at
    ``sample_rate`` (or its ``(T, F)`` features with a ``pipeline``); transcript e.g.
    ``"three one four"``; meta dict ``speaker``, ``digits`` (list of int), ``files`` (paths),
    ``gaps_ms`` (n pauses before the digits, ms), ``sample_rate``, ``text`` (the transcript).

    Example:
        >>> import tempfile, numpy as np, soundfile as sf
        >>> root = Path(tempfile.mkdtemp())
        >>> for d in range(3):
        ...     sf.write(root / f"{d}_ann_0.wav", np.full(800, 0.1, np.float32), 8000)
        >>> ds = FSDDStrings(root, n_utts=4, seed=1)
        >>> wave, text, meta = ds[0]
        >>> text == digits_text(meta["digits"]), len(meta["gaps_ms"]) == len(meta["digits"])
        (True, True)
    """

    def __init__(self, root: str | Path, n_utts: int = 1000, split: str | None = None,
                 by: str = "takes", test_speakers: Sequence[str] | None = None,
                 n_digits: tuple[int, int] = (2, 7), gap_ms: tuple[float, float] = (50.0, 300.0),
                 seed: int = 0, per_file: bool = False, sample_rate: int = 8000,
                 pipeline=None, download: bool = False):
        if download:
            raise NotImplementedError("clone github.com/Jakobovski/free-spoken-digit-dataset")
        if not 1 <= n_digits[0] <= n_digits[1]:
            raise ValueError(f"n_digits must be (min, max) with 1 <= min <= max, got {n_digits}")
        if not 0 <= gap_ms[0] <= gap_ms[1]:
            raise ValueError(f"gap_ms must be (min, max) with 0 <= min <= max, got {gap_ms}")
        self.root, self.sample_rate, self.pipeline = Path(root), sample_rate, pipeline
        self.files = split_files(fsdd_files(root), split, by, test_speakers, seed)
        if not self.files:
            raise DataError(self.root, f"no FSDD files left for split {split!r} (by {by!r})")
        rng = np.random.default_rng((seed, SPLITS.index(split) + 1 if split else 0))
        by_key: dict[tuple[str, int], list[int]] = {}
        for i, (_, digit, speaker, _) in enumerate(self.files):
            by_key.setdefault((speaker, digit), []).append(i)
        if per_file:
            plans = [[i] for i in range(len(self.files))]
        else:
            speakers = sorted({s for s, _ in by_key})
            plans = []
            for _ in range(n_utts):
                spk = speakers[rng.integers(len(speakers))]
                have = sorted(d for s, d in by_key if s == spk)      # digits this speaker has
                digits = rng.choice(have, int(rng.integers(n_digits[0], n_digits[1] + 1)))
                plans.append([int(rng.choice(by_key[spk, int(d)])) for d in digits])
        # (file indices, pause lengths in samples, seed of the pause noise)
        self.utts = [(p, rng.uniform(*gap_ms, len(p)) / 1000.0, int(rng.integers(2**31)))
                     for p in plans]
        self._resamplers: dict[int, torch.nn.Module] = {}

    def __len__(self) -> int:
        return len(self.utts)

    def _load(self, path: Path) -> np.ndarray:
        """(N,) float32 at ``sample_rate``."""
        wave, rate = read_audio(path)
        if rate != self.sample_rate:
            if rate not in self._resamplers:
                self._resamplers[rate] = torchaudio.transforms.Resample(rate, self.sample_rate)
            wave = self._resamplers[rate](torch.from_numpy(wave)).numpy()
        return wave

    def __getitem__(self, n: int):
        idx, gaps_s, noise_seed = self.utts[n]
        waves = [self._load(self.files[i][0]) for i in idx]
        edge = max(1, round(_EDGE_S * self.sample_rate))
        floors = [min(w[:edge].std(), w[-edge:].std()) for w in waves]   # each file's floor
        rng = np.random.default_rng(noise_seed)
        parts = []
        for k, (g, w) in enumerate(zip(gaps_s, waves)):
            near = floors[max(0, k - 1): k + 1]                      # the 1-2 neighbours
            parts.append((min(near) * rng.standard_normal(round(g * self.sample_rate))
                          ).astype(np.float32))
            parts.append(w)
        wave = torch.from_numpy(np.concatenate(parts))               # (N,)
        digits = [self.files[i][1] for i in idx]
        text = digits_text(digits)
        meta = {"speaker": self.files[idx[0]][2], "digits": digits,
                "files": [str(self.files[i][0]) for i in idx],
                "gaps_ms": [float(1000 * g) for g in gaps_s], "sample_rate": self.sample_rate,
                "text": text}
        if self.pipeline is None:
            return wave, text, meta
        check_analysis_window(meta["files"][0], wave, self.pipeline)
        return self.pipeline.features(wave), text, meta
