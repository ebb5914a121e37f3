"""MIT-BIH-style beat datasets: WFDB records with ``.atr`` beat annotations, one window per beat.

Symbols: T time samples, W beat-window samples, C leads kept per beat.

``MITBIH(root, ..., download=False)`` follows torchaudio; ``__getitem__`` returns
``(window (W, C), class index, meta)``. Every annotation is checked against its signal
(:func:`~bimsnn.data.wfdb_io.read_annotations`); records without usable beats are skipped
loudly and listed in ``ds.skipped``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from math import gcd
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from bimsnn.data.errors import DataError, skip
from bimsnn.data.wfdb_io import _wfdb, read_annotations, read_wfdb

__all__ = ["MITBIH", "AAMI_CLASSES", "AAMI_MAP", "DS1", "DS2"]

Encoder = Callable[[torch.Tensor], torch.Tensor]

# ANSI/AAMI EC57 beat classes from MIT-BIH beat symbols, as tabulated by de Chazal et al.,
# IEEE TBME 51(7):1196, 2004 (Table I). Any other annotation symbol is not a beat (rhythm '+',
# noise '~', isolated QRS-like artefact '|', non-conducted P 'x', comment '"', flutter '[ ! ]'...)
# and is dropped; each dataset counts what it dropped in ``dropped_symbols``.
AAMI_CLASSES = ("N", "S", "V", "F", "Q")
AAMI_MAP = {"N": "N", "L": "N", "R": "N", "e": "N", "j": "N",
            "A": "S", "a": "S", "J": "S", "S": "S",
            "V": "V", "E": "V", "F": "F", "/": "Q", "f": "Q", "Q": "Q"}
# de Chazal's inter-patient split of the 44 non-paced MIT-BIH records (paced 102, 104, 107, 217
# excluded): train on DS1, test on DS2.
DS1 = ("101", "106", "108", "109", "112", "114", "115", "116", "118", "119", "122", "124",
       "201", "203", "205", "207", "208", "209", "215", "220", "223", "230")
DS2 = ("100", "103", "105", "111", "113", "117", "121", "123", "200", "202", "210", "212",
       "213", "214", "219", "221", "222", "228", "231", "232", "233", "234")


def highpass_sos(fs: float, l_freq: float) -> np.ndarray:
    """Second-order sections (n, 6) of the causal Butterworth high-pass (order 2) that
    :class:`MITBIH` applies with ``l_freq`` (designed by ``mne.filter.create_filter``)."""
    from bimsnn.data.stream import _iir

    return _iir(fs, l_freq, None, 2, "butter")


def highpass(sig: np.ndarray, fs: float, l_freq: float) -> np.ndarray:
    """``sig`` (T, C) high-passed causally from a zero state (float32 out): the offline form
    of :class:`bimsnn.monitor.Monitor`'s streaming filter (same sections, same rounding)."""
    from scipy.signal import sosfilt

    return sosfilt(highpass_sos(fs, l_freq), np.asarray(sig, np.float32), axis=0).astype(np.float32)


class MITBIH(Dataset):
    """Annotated beats of MIT-BIH-style WFDB records (``<record>.hea/.dat/.atr``).

    Args:
        root: folder with the records.
        records: record names (default: every ``*.atr`` in ``root``, sorted; a ``.hea`` record
            there without ``.atr`` is skipped loudly). A named record without ``.atr`` is a
            DataError.
        classes: ``"aami"`` (N, S, V, F, Q via :data:`AAMI_MAP`), ``"symbols"`` (one class per
            raw beat symbol of :data:`AAMI_MAP`), or a dict ``{symbol: class}``.
        window_s: seconds kept (before, after) each annotated R peak; W = round(fs * before) +
            round(fs * after).
        lead: signal index or name, or a sequence of them (C = how many).
        fs: resample every record to this rate first (e.g. 360 to pool 128 Hz SVDB with
            360 Hz MIT-BIH; polyphase anti-aliased, ``scipy.signal.resample_poly``); None: native.
        l_freq: causal high-pass edge (Hz) applied to each whole record at its own rate,
            before resampling (Butterworth, order 2, designed by mne; removes baseline wander, which adds
            spurious level crossings to ADM spikes), or None: unfiltered. Causal, so that
            :class:`bimsnn.monitor.Monitor` replays it sample by sample.
        edge: ``"drop"`` beats whose window would cross a record edge (counted per symbol in
            ``edge_dropped``), or ``"pad"`` them by repeating the edge sample.
        encoder: optional callable applied to each ``(W, C)`` window.
        download: fetch missing records from PhysioNet ``database`` with ``wfdb.dl_database``.
        strict: turn every skip into a DataError.

    Checked: sampling rates (> 0, integer), annotation codes (all defined by WFDB) and times
    (inside the signal). A record with no beat of the requested classes is skipped loudly
    (:class:`~bimsnn.data.DataWarning`, listed in ``ds.skipped`` as ``(path, reason)``); no
    beat at all is a DataError.

    ``__getitem__(i)`` returns ``(window, label, meta)``: window ``(W, C)`` float32 in mV (raw,
    or high-passed with ``l_freq``) or ``encoder(window)``; label int index into ``classes``; meta dict with
    ``record``, ``symbol``, ``sample`` (R peak at the output rate), ``time_s`` and ``fs``.
    """

    def __init__(self, root: str | Path, records: Sequence[str | int] | None = None,
                 classes: str | dict[str, str] = "aami", window_s: tuple[float, float] = (0.25, 0.45),
                 lead: int | str | Sequence[int | str] = 0, fs: int | None = None,
                 edge: str = "drop", encoder: Encoder | None = None, download: bool = False,
                 database: str = "mitdb", strict: bool = False, l_freq: float | None = None):
        self.root, self.encoder, self.edge = Path(root), encoder, edge
        if l_freq is not None and not (l_freq > 0 and np.isfinite(l_freq)):
            raise ValueError(f"l_freq must be a positive frequency in Hz or None, got {l_freq!r}")
        self.l_freq = l_freq
        self.strict, self.skipped = bool(strict), []
        if fs is not None and not (fs > 0 and fs == int(fs)):
            raise DataError(self.root, f"resampling target fs={fs} Hz must be a positive integer")
        if edge not in ("drop", "pad"):
            raise ValueError(f"edge must be 'drop' or 'pad', got {edge!r}")
        if classes == "aami":
            self.mapping, self.classes = dict(AAMI_MAP), list(AAMI_CLASSES)
        elif classes == "symbols":
            self.mapping = {s: s for s in AAMI_MAP}
            self.classes = sorted(self.mapping)
        elif isinstance(classes, dict):
            self.mapping, self.classes = dict(classes), sorted(set(classes.values()))
        else:
            raise ValueError(f"classes must be 'aami', 'symbols' or a dict, got {classes!r}")
        if download:  # PhysioNet via wfdb (needs network; not exercised by the tests)
            with _wfdb() as wfdb:
                wfdb.dl_database(database, str(self.root), annotators=["atr"],
                                 records=[str(r) for r in records] if records else "all")
        if records is None:
            records = sorted(p.stem for p in self.root.glob("*.atr"))
            for hea in sorted(self.root.glob("*.hea")):
                if hea.stem not in records:
                    skip(self.skipped, hea.with_suffix(""), "no .atr annotation file", self.strict)
            if not records:
                raise DataError(self.root, "no .atr annotation files")
        names = [str(r) for r in records]
        if len(set(names)) < len(names):
            raise DataError(self.root, f"records listed twice: {sorted({r for r in names if names.count(r) > 1})}")
        leads = [lead] if isinstance(lead, int | str) else list(lead)
        self.target_fs, self.fs = fs, fs
        self.signals: list[np.ndarray] = []  # one (T, C) array per record, at the output rate
        self.dropped_symbols: Counter = Counter()
        self.edge_dropped: Counter = Counter()
        rec_idx, samples, symbols, self.records = [], [], [], []
        for name in names:
            sig, ann_samples, ann_symbols, rate = self._load(self.root / name, leads)
            self.fs = rate if self.fs is None else self.fs
            if rate != self.fs:
                raise DataError(self.root / name, f"sampled at {rate} Hz, others at {self.fs} Hz; "
                                                  "pass fs= to resample to a common rate")
            self.pre, self.post = round(window_s[0] * rate), round(window_s[1] * rate)
            is_beat = np.array([s in self.mapping for s in ann_symbols], bool)
            self.dropped_symbols.update(np.asarray(ann_symbols)[~is_beat].tolist())
            inside = (ann_samples - self.pre >= 0) & (ann_samples + self.post <= len(sig))
            if edge == "drop":
                self.edge_dropped.update(np.asarray(ann_symbols)[is_beat & ~inside].tolist())
                is_beat &= inside
            else:  # pad once per record so every window is an in-bounds slice
                sig = np.pad(sig, ((self.pre, self.post), (0, 0)), mode="edge")
            if not is_beat.any():
                seen = dict(Counter(ann_symbols).most_common(5))
                skip(self.skipped, self.root / name, f"no beat of classes {self.classes} "
                                                     f"(annotations: {seen})", self.strict)
                continue
            self.signals.append(sig)
            self.records.append(name)
            rec_idx.append(np.full(int(is_beat.sum()), len(self.records) - 1))
            samples.append(ann_samples[is_beat])
            symbols += [s for s, b in zip(ann_symbols, is_beat) if b]
        if not self.records:
            raise DataError(self.root, f"0 beats of classes {self.classes} in records {names}")
        self.beat_record = np.concatenate(rec_idx)  # (n_beats,) index into self.records
        self.beat_sample = np.concatenate(samples)  # (n_beats,) R peak, output-rate samples
        self.beat_symbol = symbols
        col = {c: k for k, c in enumerate(self.classes)}
        self.targets = np.array([col[self.mapping[s]] for s in symbols], np.int64)

    def _load(self, path: Path, leads):
        sig, fields = read_wfdb(path, leads)  # (T, C)
        rate = int(fields["fs"])
        if rate != fields["fs"] or rate <= 0:
            raise DataError(path, f"sampling rate {fields['fs']} Hz: need a positive integer")
        samples, ann_symbols = read_annotations(path, len(sig))
        if self.l_freq is not None:  # before resampling: the monitor filters raw samples too
            if not self.l_freq < rate / 2:
                raise DataError(path, f"high-pass edge l_freq={self.l_freq} Hz is not below "
                                      f"half the sampling rate ({rate} Hz)")
            sig = highpass(sig, rate, self.l_freq)
        target = self.target_fs
        if target is not None and target != rate:
            from scipy.signal import resample_poly

            g = gcd(int(target), rate)
            sig = resample_poly(sig, target // g, rate // g, axis=0).astype(np.float32)
            samples = np.round(samples * target / rate).astype(np.int64)
            rate = int(target)
        return sig, samples, ann_symbols, rate

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        r, s = int(self.beat_record[i]), int(self.beat_sample[i])
        start = s - self.pre + (self.pre if self.edge == "pad" else 0)  # pad shifted by pre
        x = torch.from_numpy(self.signals[r][start:start + self.pre + self.post])  # (W, C)
        meta = {"record": self.records[r], "symbol": self.beat_symbol[i], "sample": s,
                "time_s": s / self.fs, "fs": self.fs}
        return (self.encoder(x) if self.encoder else x), int(self.targets[i]), meta

    def beat_counts(self, by: str = "class") -> Counter:
        """Kept beats per class name (``by="class"``) or per raw annotation symbol (``"symbol"``)."""
        if by == "symbol":
            return Counter(self.beat_symbol)
        if by == "class":
            return Counter(self.classes[t] for t in self.targets)
        raise ValueError(f"by must be 'class' or 'symbol', got {by!r}")

    def split_by_record(self, test_records: Sequence[str | int] | None = None,
                        test_size: float = 0.5, seed: int = 0):
        """Inter-patient split: (train, test) beat indices; no record contributes to both.

        ``test_records`` picks the test records (e.g. :data:`DS2`, after training on :data:`DS1`);
        otherwise sklearn's ``GroupShuffleSplit`` draws ``test_size`` of the records.
        """
        if test_records is not None:
            test = np.isin(np.asarray(self.records)[self.beat_record], [str(r) for r in test_records])
            return np.flatnonzero(~test), np.flatnonzero(test)
        from sklearn.model_selection import GroupShuffleSplit

        gss = GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
        train, test = next(gss.split(self.targets, groups=self.beat_record))
        return np.sort(train), np.sort(test)

    def split_by_time(self, train_frac: float = 0.8):
        """Intra-patient, time-ordered split: (train, test) beat indices.

        Within each record the first ``train_frac`` of beats train and later ones test (no
        shuffling: neighbouring beats are near-duplicates). Test beats whose window overlaps the
        last training window are left out of both, so no sample is shared.
        """
        if not 0.0 < train_frac < 1.0:
            raise ValueError(f"train_frac must be in (0, 1), got {train_frac}")
        train, test = [], []
        for r in range(len(self.records)):
            idx = np.flatnonzero(self.beat_record == r)
            idx = idx[np.argsort(self.beat_sample[idx], kind="stable")]
            cut = int(round(train_frac * len(idx)))
            end = self.beat_sample[idx[cut - 1]] + self.post if cut else -np.inf  # train end
            train.append(idx[:cut])
            test.append(idx[cut:][self.beat_sample[idx[cut:]] - self.pre >= end])
        return np.concatenate(train), np.concatenate(test)
