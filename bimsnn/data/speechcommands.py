"""Google Speech Commands v2 (Warden 2018): one-second words, ``<word>/<speaker>_nohash_<n>.wav``.

Symbols: T frames, F mel bands.

``SpeechCommands(root, ..., download=False)`` follows torchaudio's layout and subsets;
``__getitem__`` returns ``(features (T, F), label, meta)`` through :class:`~bimsnn.data.audio.LogMel`.
``download=True`` fetches the archive, checks its SHA-256 (also when it was already there) and
extracts it through ``tarfile``'s ``"data"`` filter (:mod:`bimsnn.data.files`).
"""

from __future__ import annotations

import math
from pathlib import Path, PurePosixPath

import numpy as np

from bimsnn.data.audio import Encoder, LogMel, _AudioDataset, audio_info
from bimsnn.data.errors import DataError, skip
from bimsnn.data.files import extract_tar, fetch, read_text

__all__ = ["SpeechCommands", "SC_WORDS_10", "SILENCE", "UNKNOWN", "SC_URL", "SC_SHA256"]

SC_WORDS_10 = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SILENCE, UNKNOWN = "_silence_", "_unknown_"
SC_URL = "https://storage.googleapis.com/download.tensorflow.org/data/speech_commands_v0.02.tar.gz"
# Published with torchaudio's SPEECHCOMMANDS (the same file as download.tensorflow.org's).
SC_SHA256 = "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58"
_LAYOUT = ("SpeechCommands", "speech_commands_v0.02")


def _read_list(path: Path) -> list[str]:
    """Entries ``<word>/<file>.wav`` of a split list, checked: relative, one folder deep."""
    if not path.is_file():
        raise DataError(path, "Speech Commands split list not found")
    out = []
    for k, line in enumerate(read_text(path, "Speech Commands split list").splitlines(), 1):
        entry = line.strip()
        if not entry:
            continue
        parts = PurePosixPath(entry).parts
        if len(parts) != 2 or ".." in parts or not entry.lower().endswith(".wav"):
            raise DataError(path, f"line {k}: {entry[:80]!r} is not '<word>/<file>.wav'")
        out.append(entry)
    return out


class SpeechCommands(_AudioDataset):
    """Google Speech Commands v2 (Warden 2018): ``<word>/<speaker>_nohash_<n>.wav``, 16 kHz, 1 s.

    Args:
        root: the extracted folder (holding ``validation_list.txt``), or torchaudio's layout
            ``root/SpeechCommands/speech_commands_v0.02``.
        subset: None (all), ``"training"``, ``"validation"`` or ``"testing"``; validation/testing
            from the official lists, training = the rest (as torchaudio).
        classes: ``"all35"``: one class per word folder (35 in v2), sorted. ``"v2_12"``: the
            12-class KWS task of the TensorFlow recipe: ``[_silence_, _unknown_, yes, no, up, down,
            left, right, on, off, stop, go]``; the other words become ``_unknown_``, subsampled to
            ``unknown_percentage`` % of the 10-word item count, and ``silence_percentage`` % silence
            items are added: a random 1-s excerpt of a random ``_background_noise_`` clip scaled by
            a random gain in [0, 1] (the TF recipe mixes noise at run time instead). Both draws are
            seeded, so a subset is fixed.
        duration_s: clips are zero-padded to 1 s by default (fixed T = 101 at 10 ms hops).
        download: fetch :data:`SC_URL` into torchaudio's layout unless extracted there already.
        strict: turn every skip into a DataError.

    The split lists must be UTF-8 ``<word>/<file>.wav`` lines, and no file may be in both.
    List entries whose file is missing are skipped loudly (one
    :class:`~bimsnn.data.DataWarning` per list, ``(list, reason)`` in ``ds.skipped``).

    ``__getitem__(n)`` returns ``(features, label, meta)``: features ``(T, F)`` log-mel or
    ``encoder(features)``; label int index into ``classes``; meta ``path``, ``word``, ``speaker``,
    ``utterance`` (None for silence).
    """

    def __init__(self, root: str | Path, subset: str | None = None, classes: str = "all35",
                 silence_percentage: float = 10.0, unknown_percentage: float = 10.0,
                 seed: int = 0, sample_rate: int = 16000, n_mels: int = 40,
                 duration_s: float | None = 1.0, encoder: Encoder | None = None,
                 pipeline: LogMel | None = None, download: bool = False, strict: bool = False):
        super().__init__(pipeline or LogMel(sample_rate, n_mels, duration_s=duration_s), encoder,
                         strict)
        root = Path(root)
        base = root
        if not (base / "validation_list.txt").is_file():
            base = root.joinpath(*_LAYOUT)
            if download and not (base / "validation_list.txt").is_file():
                archive = fetch(SC_URL, base.with_name(base.name + ".tar.gz"), SC_SHA256)
                extract_tar(archive, base)
        lists = {name: _read_list(base / f"{name}_list.txt") for name in ("validation", "testing")}
        both = set(lists["validation"]) & set(lists["testing"])
        if both:
            raise DataError(base / "testing_list.txt", f"{len(both)} files also in validation_list.txt "
                                                       f"(e.g. {sorted(both)[0]})")
        for name, entries in lists.items():
            absent = [e for e in entries if not (base / e).is_file()]
            if absent:
                skip(self.skipped, base / f"{name}_list.txt", f"{len(absent)} of {len(entries)} "
                     f"listed files are missing (e.g. {absent[0]})", self.strict)
        where_of = {e: k for k, v in lists.items() for e in v}
        if subset not in (None, "training", "validation", "testing"):
            raise ValueError(f"subset must be None/'training'/'validation'/'testing', got {subset!r}")
        words = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("_"))
        if classes == "all35":
            self.classes = words
        elif classes == "v2_12":
            self.classes = [SILENCE, UNKNOWN, *SC_WORDS_10]
        else:
            raise ValueError(f"classes must be 'all35' or 'v2_12', got {classes!r}")
        known, unknown = [], []
        for word in words:
            for path in sorted((base / word).glob("*.wav")):
                where = where_of.get(f"{word}/{path.name}", "training")
                if subset is not None and where != subset:
                    continue
                speaker, _, utt = path.stem.partition("_nohash_")
                meta = {"path": str(path), "word": word, "speaker": speaker,
                        "utterance": int(utt) if utt.isdigit() else None}
                if word in self.classes:
                    known.append((path, self.classes.index(word), meta, None))
                else:
                    unknown.append((path, self.classes.index(UNKNOWN), meta, None))
        self.items = list(known)
        if classes == "v2_12":  # TF recipe sizes: a percentage of the 10-word item count
            rng = np.random.default_rng([seed, ("all", "training", "validation",
                                                "testing").index(subset or "all")])
            n_unk = math.ceil(len(known) * unknown_percentage / 100)
            self.items += [unknown[i] for i in sorted(rng.permutation(len(unknown))[:n_unk])]
            self.items += self._silence(base, math.ceil(len(known) * silence_percentage / 100), rng)
        if not self.items:
            raise DataError(base, f"no .wav files in word folders for subset {subset!r}")

    def _silence(self, base: Path, n: int, rng: np.random.Generator) -> list:
        if n == 0:
            return []
        noise = sorted((base / "_background_noise_").glob("*.wav"))
        if not noise:
            raise DataError(base / "_background_noise_", "no noise clips for _silence_ items")
        infos = [audio_info(p) for p in noise]
        items = []
        for _ in range(n):
            k = int(rng.integers(len(noise)))
            frames = min(infos[k].samplerate, infos[k].frames)  # 1 s at the file's rate
            start = int(rng.integers(0, infos[k].frames - frames + 1))
            gain = float(rng.uniform(0.0, 1.0))
            meta = {"path": str(noise[k]), "word": SILENCE, "speaker": None, "utterance": None}
            items.append((noise[k], 0, meta, (start, frames, gain)))
        return items
