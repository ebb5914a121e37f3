"""Audio datasets (FSDD, Speech Commands, LibriSpeech, class folders) with one log-mel pipeline.

Symbols: N waveform samples, T frames (one per hop), F mel bands, B batch.

Pipeline (:class:`LogMel`): soundfile read -> mono check -> torchaudio ``Resample`` when the file
rate differs -> optional pad/trim to a fixed duration -> torchaudio ``MelSpectrogram`` (power) ->
``log(mel + eps)`` -> ``(T, F)`` time-major -> optional ``encoder``. Audio is read with soundfile
only (``torchaudio.load`` needs FFmpeg/torchcodec). Each dataset follows torchaudio:
``Dataset(root, ..., download=False)``; ``__getitem__`` returns ``(features, label, meta)``.
Bad files raise :class:`~bimsnn.data.DataError` naming the file and the problem.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch
import torchaudio
from torch.utils.data import Dataset

from bimsnn.data.errors import DataError
from bimsnn.encoding import LogMelSpectrogram

Encoder = Callable[[torch.Tensor], torch.Tensor]


def read_audio(path: str | Path, mono: str = "require", start: int = 0, frames: int = -1):
    """Read ``path`` with soundfile as float32.

    Args:
        mono: ``"require"`` (more than one channel is an error) or ``"mix"`` (average channels).
        start, frames: optional excerpt, in file samples (``frames=-1``: to the end).
    Returns:
        ``(wave, sample_rate)``, wave ``(N,)`` float32 numpy in [-1, 1].
    Raises:
        DataError: unreadable file, sampling rate ≤ 0, no samples, several channels under
        ``"require"``, non-finite samples.
    """
    path = Path(path)
    try:
        with sf.SoundFile(str(path)) as f:
            channels, rate, total = f.channels, f.samplerate, f.frames
            if rate <= 0:
                raise DataError(path, f"sampling rate {rate} Hz must be > 0")
            if total == 0:
                raise DataError(path, "empty audio file (0 samples)")
            if channels > 1 and mono == "require":
                raise DataError(path, f"{channels} channels; mono audio required")
            f.seek(start)
            wave = f.read(frames, dtype="float32", always_2d=True)  # (N, channels)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise DataError(path, f"unreadable audio ({err})") from err
    if len(wave) == 0:
        raise DataError(path, f"no samples at offset {start}")
    if not np.isfinite(wave).all():
        raise DataError(path, "non-finite samples")
    return wave.mean(axis=1), rate


class LogMel:
    """File -> log-mel features ``(T, F)``; see the module docstring for the steps.

    Args:
        sample_rate: rate every file is resampled to.
        n_mels: F. win_ms / hop_ms: STFT window and hop; ``n_fft`` = next power of two >= window.
        f_min, f_max: mel range in Hz (``f_max=None``: Nyquist).
        eps: floor inside the log (silence -> log(eps)).
        mono: as :func:`read_audio`.
        duration_s: zero-pad or trim every waveform to this length (fixed T); None keeps it.
    """

    def __init__(self, sample_rate: int = 16000, n_mels: int = 40, win_ms: float = 25.0,
                 hop_ms: float = 10.0, f_min: float = 20.0, f_max: float | None = None,
                 eps: float = 1e-6, mono: str = "require", duration_s: float | None = None):
        if mono not in ("require", "mix"):
            raise ValueError(f"mono must be 'require' or 'mix', got {mono!r}")
        self.sample_rate, self.eps, self.mono, self.duration_s = sample_rate, eps, mono, duration_s
        win = round(win_ms * sample_rate / 1000)
        # the one log-mel (bimsnn.encoding): natural log, FFT zero-padded to a power of two
        self.logmel = LogMelSpectrogram(sample_rate, n_mels, win_ms, hop_ms,
                                        n_fft=1 << (win - 1).bit_length(), f_min=f_min,
                                        f_max=f_max, scale="ln", eps=eps)
        self.hop, self.win_length = self.logmel.hop, win   # win: shortest analysable input
        self._resamplers: dict[int, torch.nn.Module] = {}

    def load(self, path, start: int = 0, frames: int = -1, gain: float = 1.0) -> torch.Tensor:
        """Waveform ``(N,)`` float32 at ``sample_rate`` (resampled, scaled, padded/trimmed)."""
        wave, rate = read_audio(path, self.mono, start, frames)
        x = torch.from_numpy(wave) * gain
        if rate != self.sample_rate:
            if rate not in self._resamplers:
                self._resamplers[rate] = torchaudio.transforms.Resample(rate, self.sample_rate)
            x = self._resamplers[rate](x)
        if self.duration_s is not None:
            n = round(self.duration_s * self.sample_rate)
            x = torch.nn.functional.pad(x[:n], (0, max(0, n - len(x))))
        return x

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        """``(N,)`` waveform -> ``(T, F)`` log-mel, T = 1 + N // hop."""
        with torch.no_grad():
            return self.logmel(wave)

    def __call__(self, path, start: int = 0, frames: int = -1, gain: float = 1.0) -> torch.Tensor:
        return self.features(self.load(path, start, frames, gain))


def pad_time_major(batch, value: float = 0.0):
    """``collate_fn`` for variable-length items: pads ``(T_i, ...)`` features with ``value``.

    0 suits spikes (no spike). For raw log-mel, pad with ``math.log(eps)`` (silence) via
    ``functools.partial``, or mask with ``lengths``.
    Returns ``(x, labels, metas, lengths)``: x ``(T_max, B, ...)``; labels a long tensor when
    they are ints (else a list); lengths ``(B,)`` long.
    """
    xs, labels, metas = zip(*batch)
    lengths = torch.tensor([len(x) for x in xs])
    x = torch.nn.utils.rnn.pad_sequence(list(xs), padding_value=value)  # (T_max, B, ...)
    if all(isinstance(y, int) for y in labels):
        labels = torch.tensor(labels)
    return x, labels if isinstance(labels, torch.Tensor) else list(labels), list(metas), lengths


def audio_info(path: str | Path):
    """soundfile header of ``path`` (no samples read); DataError naming an unreadable file."""
    try:
        return sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise DataError(path, f"unreadable audio header ({err})") from err


def check_analysis_window(path: str | Path, wave: torch.Tensor, pipeline) -> None:
    """DataError naming ``path`` if ``wave`` (N,) is shorter than one analysis window of
    ``pipeline`` (its ``win_length``, or its ``mel.win_length``; no check if it has neither).
    Call it between ``pipeline.load`` and ``pipeline.features`` when bypassing a dataset."""
    win = next((n for obj in (pipeline, getattr(pipeline, "mel", None))
                if isinstance(n := getattr(obj, "win_length", None), int)), None)
    if win is not None and len(wave) < win:
        raise DataError(path, f"{len(wave)} samples (after resampling) is shorter than one "
                              f"{win}-sample analysis window; pad it with duration_s=")


class _AudioDataset(Dataset):
    """Items are ``(path, label, meta, segment)``; segment None or (start, frames, gain).

    ``skipped`` lists ``(path, reason)`` of what a subclass left out loudly (``strict=True``
    raises instead). A waveform shorter than one analysis window is a DataError naming the file
    (torch's STFT would fail deep inside otherwise).
    """

    def __init__(self, pipeline: LogMel, encoder: Encoder | None, strict: bool = False):
        self.pipeline, self.encoder, self.strict = pipeline, encoder, bool(strict)
        self.items: list[tuple[Path, object, dict, tuple | None]] = []
        self.skipped: list[tuple[Path, str]] = []

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, n: int):
        path, label, meta, segment = self.items[n]
        wave = self.pipeline.load(path, *(segment or ()))  # (N,) at the pipeline's rate
        check_analysis_window(path, wave, self.pipeline)
        try:
            x = self.pipeline.features(wave)  # (T, F)
        except RuntimeError as err:  # the STFT's own length and shape errors
            raise DataError(path, f"no log-mel features ({err})") from err
        return (self.encoder(x) if self.encoder else x), label, dict(meta)

    def headers(self) -> pd.DataFrame:
        """soundfile header of every file (fast: no samples read): path, samplerate, channels,
        frames. Raises DataError for an unreadable file."""
        rows = []
        for path in dict.fromkeys(p for p, *_ in self.items):
            info = audio_info(path)
            rows.append({"path": path, "samplerate": info.samplerate,
                         "channels": info.channels, "frames": info.frames})
        return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ FSDD
FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")


def fsdd_split(speakers: Sequence[str], takes: Sequence[int], by: str = "takes",
               test_speakers: Sequence[str] | None = None, test_size: float = 0.25,
               seed: int = 0) -> np.ndarray:
    """Boolean test mask over recordings.

    ``by="takes"``: takes 0-4 are test, 5-49 train (FSDD README). ``by="speakers"``: the
    ``test_speakers`` (or, if None, a seeded sklearn ``GroupShuffleSplit`` drawing ``test_size``
    of the speakers) are test, so no speaker is in both.

    >>> fsdd_split(["theo", "theo", "jackson"], [3, 7, 1]).tolist()
    [True, False, True]
    >>> fsdd_split(["theo", "theo", "jackson"], [3, 7, 1], "speakers", ["theo"]).tolist()
    [True, True, False]
    """
    if by == "takes":
        return np.asarray(takes) <= 4
    if by != "speakers":
        raise ValueError(f"by must be 'takes' or 'speakers', got {by!r}")
    speakers = np.asarray(speakers)
    if test_speakers is None:
        from sklearn.model_selection import GroupShuffleSplit

        gss = GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
        _, test_idx = next(gss.split(speakers, groups=speakers))
        test_speakers = np.unique(speakers[test_idx])
    return np.isin(speakers, list(test_speakers))


class FSDD(_AudioDataset):
    """Free Spoken Digit Dataset: ``{digit}_{speaker}_{take}.wav``, 8 kHz mono.

    Args:
        root: folder of the WAVs, or one holding them in ``recordings/``.
        subset: None (all), ``"train"`` or ``"test"`` under ``split``.
        split, test_speakers, seed: as :func:`fsdd_split` (``"takes"`` or ``"speakers"``).
        sample_rate, n_mels, duration_s: :class:`LogMel` settings (``pipeline`` overrides them).
        encoder: optional callable on the ``(T, F)`` log-mel.

    ``__getitem__(n)`` returns ``(features, digit, meta)``: features ``(T, F)`` float32 log-mel
    (T = 1 + N // hop, varies with clip length; see :func:`pad_time_major`) or
    ``encoder(features)``; digit int 0-9; meta dict ``path``, ``speaker``, ``take``.
    """

    def __init__(self, root: str | Path, subset: str | None = None, split: str = "takes",
                 test_speakers: Sequence[str] | None = None, seed: int = 0,
                 sample_rate: int = 8000, n_mels: int = 40, duration_s: float | None = None,
                 encoder: Encoder | None = None, pipeline: LogMel | None = None,
                 download: bool = False):
        super().__init__(pipeline or LogMel(sample_rate, n_mels, duration_s=duration_s), encoder)
        if download:
            raise NotImplementedError("clone github.com/Jakobovski/free-spoken-digit-dataset")
        root = Path(root)
        folder = root / "recordings" if (root / "recordings").is_dir() else root
        if not folder.is_dir():
            raise DataError(root, "FSDD folder not found")
        for path in sorted(folder.glob("*.wav")):
            m = FSDD_NAME.match(path.name)
            if m is None:
                raise DataError(path, "file name is not {digit}_{speaker}_{take}.wav")
            self.items.append((path, int(m[1]), {"path": str(path), "speaker": m[2],
                                                 "take": int(m[3])}, None))
        if not self.items:
            raise DataError(folder, "no FSDD .wav files")
        if subset is not None:
            if subset not in ("train", "test"):
                raise ValueError(f"subset must be None, 'train' or 'test', got {subset!r}")
            test = self.split_mask(split, test_speakers, seed)
            self.items = [it for it, t in zip(self.items, test) if t == (subset == "test")]
        self.classes = list(range(10))

    def split_mask(self, by: str = "takes", test_speakers=None, seed: int = 0) -> np.ndarray:
        """Test mask over this dataset's items (:func:`fsdd_split`)."""
        return fsdd_split([m["speaker"] for _, _, m, _ in self.items],
                          [m["take"] for _, _, m, _ in self.items], by, test_speakers, seed=seed)

    def split(self, by: str = "takes", test_speakers=None, seed: int = 0):
        """(train, test) index arrays for ``torch.utils.data.Subset``."""
        test = self.split_mask(by, test_speakers, seed)
        return np.flatnonzero(~test), np.flatnonzero(test)


# ---------------------------------------------------------------------------------- AudioFolder
class AudioFolder(_AudioDataset):
    """``root/<class>/*.wav|flac|ogg``: class = subfolder name (sorted, like torchvision's
    ImageFolder). ``__getitem__`` returns ``(features, class index, meta)`` with meta ``path`` and
    ``class``. Multi-channel files are averaged to mono by default (``mono="require"`` refuses)."""

    def __init__(self, root: str | Path, extensions: Sequence[str] = (".wav", ".flac", ".ogg"),
                 sample_rate: int = 16000, n_mels: int = 40, mono: str = "mix",
                 duration_s: float | None = None, encoder: Encoder | None = None,
                 pipeline: LogMel | None = None):
        super().__init__(pipeline or LogMel(sample_rate, n_mels, mono=mono, duration_s=duration_s),
                         encoder)
        root = Path(root)
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        for k, name in enumerate(self.classes):
            for path in sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in extensions):
                self.items.append((path, k, {"path": str(path), "class": name}, None))
        if not self.items:
            raise DataError(root, f"no {'/'.join(extensions)} files in class subfolders")


# Speech Commands and LibriSpeech live in their own modules; re-exported here (one audio
# namespace). Imported last: they build on the classes above.
from bimsnn.data.librispeech import LibriSpeech  # noqa: E402
from bimsnn.data.speechcommands import SC_WORDS_10, SILENCE, UNKNOWN, SpeechCommands  # noqa: E402

__all__ = ["read_audio", "audio_info", "check_analysis_window", "LogMel", "pad_time_major", "FSDD", "fsdd_split",
           "AudioFolder", "SpeechCommands", "LibriSpeech", "SC_WORDS_10", "SILENCE", "UNKNOWN"]
