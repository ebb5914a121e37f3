"""CHB-MIT Scalp EEG (Shoeb 2009, PhysioNet ``chbmit``): EDF recordings + ``chbNN-summary.txt``.

Symbols: T samples per window, C channels, fs sampling rate after resampling (Hz).

``CHBMIT(root, ..., download=False)`` and ``ds[i] -> (x, label, meta)`` as torchaudio: x a
float32 window (T, C) (or ``encoder(x)``, e.g. spikes (T, 2C)), label 1 = ictal / 0 = not,
meta a dict naming the recording. ``ds.meta`` is a pandas DataFrame with one row per window;
the split helpers of :mod:`bimsnn.data.eeg` group windows by recording.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from bimsnn.data.edf import edf_channels, read_edf_header
from bimsnn.data.errors import DataError, DataWarning, skip
from bimsnn.data.files import atomic_write, read_text
from bimsnn.data.stream import CausalEEGChain, decimation_factor

#: normalize="running": time constant (s) of the causal amplitude estimate. Long against a
#: seizure (20–120 s), so an ictal amplitude rise is not normalised away while it lasts.
RUNNING_TAU_S = 120.0

__all__ = ["parse_chbmit_summary", "CHBMIT", "CHBMIT_CHANNELS_18"]

#: The 18 bipolar "double banana" channels present in every CHB-MIT recording.
CHBMIT_CHANNELS_18 = ("FP1-F7", "F7-T7", "T7-P7", "P7-O1", "FP1-F3", "F3-C3", "C3-P3", "P3-O1",
                      "FP2-F4", "F4-C4", "C4-P4", "P4-O2", "FP2-F8", "F8-T8", "T8-P8", "P8-O2",
                      "FZ-CZ", "CZ-PZ")

_CHBMIT_HELP = ("CHB-MIT is not downloaded automatically (42 GB, PhysioNet terms). Get it with "
                "`wget -r -N -c -np https://physionet.org/files/chbmit/1.0.0/` and pass "
                "root=.../chbmit/1.0.0, or write demo data: "
                "`python -m bimsnn.data.demo chbmit datasets/demo_chbmit` (see datasets/README.md)")

_NUM = r"(\d+(?:\.\d+)?)"
_RE_PATIENT = re.compile(r"^chb\d+[a-z]?$")
_RE_RATE = re.compile(rf"^Data Sampling Rate:\s*{_NUM}\s*Hz", re.I)
_RE_FILE = re.compile(r"^File Name:\s*(\S+)")
_RE_NSEIZ = re.compile(r"^Number of Seizures in File:\s*(\d+)")
_RE_START = re.compile(rf"^Seizure\s*(?:\d+\s*)?Start Time:\s*{_NUM}\s*(?:seconds?|s)?\s*$", re.I)
_RE_END = re.compile(rf"^Seizure\s*(?:\d+\s*)?End Time:\s*{_NUM}\s*(?:seconds?|s)?\s*$", re.I)


def _parse(path: Path) -> tuple[dict[str, list[tuple[float, float]]], float | None]:
    """(seizures per file, declared "Data Sampling Rate" or None); see parse_chbmit_summary."""
    lines = read_text(path, "CHB-MIT summary").splitlines()
    out: dict[str, list[tuple[float, float]]] = {}
    declared: dict[str, int] = {}
    current, start, rate = None, None, None
    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if m := _RE_RATE.match(line):
            rate = float(m.group(1))
            if rate <= 0:
                raise DataError(path, f"line {n}: sampling rate {rate:g} Hz must be > 0")
        elif m := _RE_FILE.match(line):
            current, start = m.group(1), None
            if current in out:
                raise DataError(path, f"line {n}: file {current} listed twice")
            if "/" in current or "\\" in current or not current.lower().endswith(".edf"):
                raise DataError(path, f"line {n}: {current!r} is not an .edf name in this folder")
            out[current] = []
        elif m := _RE_NSEIZ.match(line):
            if current is None:
                raise DataError(path, f"line {n}: seizure count before any 'File Name:'")
            declared[current] = int(m.group(1))
        elif line.lower().startswith("seizure") and "time" in line.lower():
            m_s, m_e = _RE_START.match(line), _RE_END.match(line)
            if current is None or not (m_s or m_e):
                raise DataError(path, f"line {n}: malformed seizure line {line!r}")
            if m_s:
                if start is not None:
                    raise DataError(path, f"line {n}: seizure start without end in {current}")
                start = float(m_s.group(1))
            else:
                if start is None:
                    raise DataError(path, f"line {n}: seizure end without start in {current}")
                end = float(m_e.group(1))
                if end <= start:
                    raise DataError(path, f"line {n}: seizure end {end} <= start {start}")
                if out[current] and start < out[current][-1][1]:
                    raise DataError(path, f"line {n}: seizure at {start} s overlaps the "
                                          f"previous one in {current}")
                out[current].append((start, end))
                start = None
    if not out:
        raise DataError(path, "no 'File Name:' entries: not a CHB-MIT summary")
    if start is not None:
        raise DataError(path, f"seizure start without end in {current}")
    for name, k in declared.items():
        if k != len(out[name]):
            raise DataError(path, f"{name}: declares {k} seizures but lists {len(out[name])}")
    return out, rate


def parse_chbmit_summary(path: str | Path) -> dict[str, list[tuple[float, float]]]:
    """Seizure intervals per file from a CHB-MIT ``chbNN-summary.txt``.

    Accepts "Seizure Start Time: 417 seconds" and "Seizure 1 Start Time: 2670 seconds";
    ignores the channel lists and "Channels changed" blocks. Files with no seizure map
    to ``[]``, in the summary's order.

    Returns:
        {"chb05_06.edf": [(417.0, 532.0)], "chb05_01.edf": [], ...} in seconds from file start.
    Raises:
        DataError: unreadable or non-UTF-8 file, no "File Name:" entries, a name that is not an
        ``.edf`` in the same folder, seizure lines outside a file entry, a start without an end,
        end ≤ start, overlapping seizures, a sampling rate ≤ 0, or a count that disagrees with
        "Number of Seizures in File".
    """
    return _parse(Path(path))[0]


class CHBMIT(Dataset):
    """CHB-MIT Scalp EEG (Shoeb 2009, PhysioNet ``chbmit``) as labelled windows.

    Layout: ``root/chbNN/chbNN_MM.edf`` and ``root/chbNN/chbNN-summary.txt``.

    Args:
        patients: e.g. ``["chb05", 8]``; None = every ``chbNN`` folder (each must hold its
            summary: a patient is never dropped silently).
        window_s, stride_s: window length and hop (default hop = window) in seconds,
            rounded to whole samples at the output rate.
        channels: None = names present in every selected file (order of the first file;
            depends on the patients chosen), ``"standard"`` = :data:`CHBMIT_CHANNELS_18`,
            or a list of names. Duplicates collapse to one.
        missing_channels: ``"error"`` (DataError naming the file) or ``"skip"`` files that
            lack a requested channel (e.g. chb12's referential files).
        seizures_outside: a summary seizure that does not lie inside its EDF (e.g. header-only
            stubs of 2 s with seizures at 417 s) is a DataError (``"error"``), or is clipped
            to the file's span (``"clip"``: dropped if nothing is left), loudly.
        ictal_overlap: a window is ictal (1) if it overlaps seizures for ≥ this fraction
            of its length; windows with less overlap count as interictal (0).
        preictal_margin_s, postictal_margin_s: drop interictal windows that overlap the
            ``margin`` seconds before an onset / after an offset.
        l_freq, h_freq, notch_freq: band-pass and notch (Hz) through ``raw.filter`` and
            ``raw.notch_filter`` at the native rate (h_freq < native Nyquist).
        sfreq: output rate through ``raw.resample``; must be > 0 and ≤ the native rate
            (no upsampling). None keeps the native rate (256 Hz).
        phase: ``"zero"``: mne's zero-phase FIR filters and ``raw.resample`` over the whole
            file (the default; non-causal). ``"causal"``: the same band through IIR filters
            run forward, then integer decimation (:class:`~bimsnn.data.stream.CausalEEGChain`;
            native rate / sfreq must be an integer), which the streaming monitor
            (:mod:`bimsnn.monitor`) reproduces sample for sample during a recording.
        normalize: ``"file"`` per channel (x − median)/(1.4826·MAD) over the whole file,
            ``"running"`` (phase="causal" only) a causal running scale over the last
            ~:data:`RUNNING_TAU_S` s (:class:`~bimsnn.data.stream.RunningScale`),
            (robust to seizures and artefacts), ``"window"`` per-window z-score, or None (V).
        max_cached_files: processed files kept in memory (LRU; ~65 MB per real 1 h file).
        cache_dir: if set, processed files are also written there as .npy and memory-mapped,
            so random access over many files stays cheap.
        strict: turn every skip below into a DataError.

    Skipped loudly (a :class:`~bimsnn.data.DataWarning` each, listed in ``ds.skipped`` as
    ``(path, reason)``): EDFs in a patient folder that its summary does not list (no labels),
    files shorter than one window, files lacking channels under ``missing_channels="skip"``,
    and seizures clipped under ``seizures_outside="clip"``. A seizure that no window overlaps
    enough to be labelled ictal is warned about (it stays in ``ds.seizures``, so metrics count
    it as missed); if no seizure at all gets an ictal window, that is a DataError.
    """

    def __init__(self, root, patients: Sequence | None = None, window_s: float = 4.0,
                 stride_s: float | None = None, channels=None, encoder: Callable | None = None,
                 preictal_margin_s: float = 0.0, postictal_margin_s: float = 0.0,
                 ictal_overlap: float = 0.5, l_freq: float | None = None,
                 h_freq: float | None = None, notch_freq: float | None = None,
                 sfreq: float | None = None, normalize: str | None = "file",
                 max_cached_files: int = 2, cache_dir=None, missing_channels: str = "error",
                 seizures_outside: str = "error", strict: bool = False, download: bool = False,
                 phase: str = "zero"):
        self.root = Path(root)
        if download:
            raise DataError(self.root, _CHBMIT_HELP)
        if not self.root.is_dir():
            raise DataError(self.root, f"no such folder. {_CHBMIT_HELP}")
        stride_s = window_s if stride_s is None else stride_s
        if not (window_s > 0 and stride_s > 0 and 0 < ictal_overlap <= 1):
            raise DataError(self.root, "window_s, stride_s must be > 0 and 0 < ictal_overlap <= 1")
        if normalize == "running" and phase != "causal":
            raise DataError(self.root, "normalize='running' is causal: it needs phase='causal'")
        if (normalize not in ("file", "window", "running", None) or missing_channels not in ("error", "skip")
                or seizures_outside not in ("error", "clip")):
            raise DataError(self.root, f"bad normalize={normalize!r}, missing_channels="
                                       f"{missing_channels!r} or seizures_outside={seizures_outside!r}")
        if phase not in ("zero", "causal"):
            raise DataError(self.root, f"phase must be 'zero' or 'causal', got {phase!r}")
        self.encoder, self.normalize, self.strict = encoder, normalize, bool(strict)
        self.phase = phase
        self.filters = dict(l_freq=l_freq, h_freq=h_freq, notch_freq=notch_freq)
        self.window_s, self.stride_s = float(window_s), float(stride_s)
        self.max_cached_files = max(1, int(max_cached_files))
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self.skipped: list[tuple[Path, str]] = []

        files, headers = self._scan(patients, seizures_outside)
        if channels is None:
            common = set.intersection(*(set(h["names"]) for h in headers))
            self.channels = [n for n in headers[0]["names"] if n in common]
        else:
            self.channels = list(CHBMIT_CHANNELS_18 if channels == "standard" else channels)
            self.channels = list(dict.fromkeys(c.upper() for c in self.channels))
        if not self.channels:
            raise DataError(self.root, "no channel is common to all selected files")
        self.sfreq = float(sfreq) if sfreq is not None else float(headers[0]["fs"])
        win = int(round(self.window_s * self.sfreq))
        kept = []
        for path, h in zip(files, headers):
            lacking = [c for c in self.channels if c not in h["names"]]
            if lacking and missing_channels != "skip":
                raise DataError(path, f"lacks channels {lacking} (missing_channels='skip' skips it)")
            if lacking:
                skip(self.skipped, path, f"lacks channels {lacking}", self.strict)
                continue
            self._check_rates(path, h)
            n_out = int(h["n"] * self.sfreq / h["fs"])          # samples after resampling
            if n_out < win:
                skip(self.skipped, path, f"{n_out / self.sfreq:g} s is shorter than one "
                                         f"{self.window_s:g} s window", self.strict)
            else:
                kept.append((path, h, n_out))
        if not kept:
            raise DataError(self.root, "no file left to load (see the warnings above)")
        self.files = [p for p, _, _ in kept]
        self.seizures = {p: self.seizures[p] for p in self.files}
        self._picks = [[h["names"][c] for c in self.channels] for _, h, _ in kept]
        self._n_out = [n for _, _, n in kept]
        self.meta = self._windows(ictal_overlap, preictal_margin_s, postictal_margin_s)
        self.labels = self.meta["label"].to_numpy()
        self._rec = self.meta["file_index"].to_numpy()
        self._start = self.meta["start"].to_numpy()
        self._len = win

    def _scan(self, patients, outside: str):
        if patients is None:
            dirs = sorted(p for p in self.root.iterdir() if p.is_dir() and _RE_PATIENT.match(p.name))
        else:
            dirs = [self.root / (f"chb{int(p):02d}" if str(p).isdigit() else str(p)) for p in patients]
        if not dirs:
            raise DataError(self.root, f"no chbNN/chbNN-summary.txt found. {_CHBMIT_HELP}")
        files, self.seizures, headers = [], {}, []
        for d in dirs:
            summary = d / f"{d.name}-summary.txt"
            if not summary.is_file():
                raise DataError(summary, "missing CHB-MIT summary: without it the patient's files "
                                         "have no labels (pass patients=[...] to leave it out)")
            listed, rate = _parse(summary)
            for path in sorted(p for p in d.iterdir() if p.suffix.lower() == ".edf"):
                if path.name not in listed:
                    skip(self.skipped, path, f"not listed in {summary.name} (no seizure labels)",
                         self.strict)
            for name, sz in listed.items():
                path = d / name
                if not path.is_file():
                    raise DataError(summary, f"names {name} but {path} does not exist")
                h = read_edf_header(path)
                h["fs"], h["n"], h["names"] = edf_channels(path, h)
                if rate is not None and abs(h["fs"] - rate) > 1e-6:
                    raise DataError(path, f"sampled at {h['fs']:g} Hz but {summary.name} "
                                          f"declares {rate:g} Hz")
                files.append(path)
                self.seizures[path] = self._inside(path, summary, sz, h["n"] / h["fs"], outside)
                headers.append(h)
        return files, headers

    def _inside(self, path: Path, summary: Path, sz, dur: float, outside: str):
        """Seizures of one file checked against its span [0, dur] s (clipped under "clip")."""
        bad = [(s, e) for s, e in sz if e > dur + 1e-6]
        if not bad:
            return list(sz)
        what = ", ".join(f"{s:g}–{e:g} s" for s, e in bad)
        problem = f"{summary.name} lists seizure(s) {what} past the end of this {dur:g} s recording"
        if outside == "error":
            raise DataError(path, f"{problem} (seizures_outside='clip' clips them to the file)")
        skip(self.skipped, path, f"{problem}: clipped to the file", self.strict)
        return [(s, min(e, dur)) for s, e in sz if s < dur]

    def _check_rates(self, path: Path, h: dict) -> None:
        fs_in = h["fs"]
        if not (self.sfreq > 0 and np.isfinite(self.sfreq)):
            raise DataError(path, f"impossible resampling target sfreq={self.sfreq} Hz (must be > 0)")
        if self.sfreq > fs_in + 1e-9:
            raise DataError(path, f"cannot resample {fs_in:g} Hz to {self.sfreq:g} Hz: "
                                  "upsampling is not supported")
        if self.phase == "causal":
            try:
                decimation_factor(fs_in, self.sfreq)
            except ValueError as e:
                raise DataError(path, f"phase='causal': {e}") from None
        for key in ("l_freq", "h_freq", "notch_freq"):
            f = self.filters[key]
            if f is not None and not 0 < f < fs_in / 2:
                raise DataError(path, f"{key}={f} Hz outside (0, Nyquist={fs_in / 2:g} Hz)")

    def _windows(self, overlap, pre, post) -> pd.DataFrame:
        win = int(round(self.window_s * self.sfreq))
        hop = max(1, int(round(self.stride_s * self.sfreq)))
        need = overlap * self.window_s - 1e-9
        rows, n_listed = [], 0
        for i, path in enumerate(self.files):
            start = np.arange(0, max(self._n_out[i] - win + 1, 0), hop)  # (W,) samples
            t0, t1 = start / self.sfreq, (start + win) / self.sfreq
            ov = np.zeros(len(start))
            near = np.zeros(len(start), dtype=bool)
            for s, e in self.seizures[path]:
                own = np.clip(np.minimum(t1, e) - np.maximum(t0, s), 0, None)
                ov += own
                n_listed += 1
                if not (own >= need).any():
                    if self.strict:
                        raise DataError(path, f"seizure {s:g}–{e:g} s: no window overlaps it for "
                                              f"≥ {need:g} s (strict=True)")
                    warnings.warn(f"{path}: seizure {s:g}–{e:g} s: no window overlaps it for "
                                  f"≥ {need:g} s; metrics will count it as missed", DataWarning,
                                  stacklevel=3)
                if pre > 0:
                    near |= (t1 > s - pre) & (t0 < s)
                if post > 0:
                    near |= (t0 < e + post) & (t1 > e)
            label = (ov >= need).astype(np.int64)
            keep = (label == 1) | ~near
            rows.append(pd.DataFrame(dict(
                patient=path.parent.name, file=path.name, file_index=i, start=start[keep],
                start_s=t0[keep], label=label[keep], overlap_s=ov[keep])))
        meta = pd.concat(rows, ignore_index=True)
        if n_listed and not meta["label"].any():
            where = [f"{p.parent.name}/{p.name}" for p in self.files if self.seizures[p]]
            raise DataError(self.root, f"{n_listed} seizure(s) listed (in {', '.join(where[:3])}"
                                       f"{', ...' if len(where) > 3 else ''}) but 0 ictal windows: "
                                       f"lower ictal_overlap ({overlap:g}) or window_s "
                                       f"({self.window_s:g} s)")
        meta["recording"] = meta["patient"] + "/" + meta["file"]
        return meta

    # ---- loading
    def _load(self, i: int) -> np.ndarray:
        """Processed (C, N) float32 array of file i, through the LRU and optional disk cache."""
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        path, npy = self.files[i], None
        if self.cache_dir is not None:
            key = repr((str(path.resolve()), path.stat().st_mtime_ns, self.channels, self.filters,
                        self.sfreq, self.normalize, self.phase))
            npy = self.cache_dir / f"{path.stem}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.npy"
        if npy is not None and npy.is_file():
            data = np.load(npy, mmap_mode="r")
        else:
            data = self._process(i)
            if npy is not None:
                with atomic_write(npy) as tmp:    # unique name: DDP ranks may race here
                    np.save(tmp, data)
                data = np.load(npy, mmap_mode="r")
        self._cache[i] = data
        while len(self._cache) > self.max_cached_files:
            self._cache.popitem(last=False)
        return data

    def _process(self, i: int) -> np.ndarray:
        import mne

        path = self.files[i]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # duplicate-name renaming notice
                raw = mne.io.read_raw_edf(path, preload=False, verbose="error")
                raw.pick(self._picks[i]).load_data(verbose="error")
        except Exception as e:  # mne raises many types for damaged files
            raise DataError(path, f"unreadable EDF ({type(e).__name__}: {e})") from e
        data = raw.get_data()
        bad = ~np.isfinite(data)
        if bad.any():
            c, t = np.argwhere(bad)[0]
            raise DataError(path, f"{int(bad.sum())} NaN/inf samples (first: channel "
                                  f"{self.channels[c]}, t={t / raw.info['sfreq']:.3f} s)")
        f = self.filters
        n = self._n_out[i]                     # pin the length the windows were indexed on
        if self.phase == "causal":
            chain = CausalEEGChain(raw.info["sfreq"], self.sfreq, f["l_freq"], f["h_freq"],
                                   f["notch_freq"], len(self.channels),
                                   RUNNING_TAU_S if self.normalize == "running" else None,
                                   self.window_s)
            data = chain.process(data)[:, :n]
            return self._scale(np.pad(data, ((0, 0), (0, n - data.shape[1])), mode="edge"))
        if f["l_freq"] is not None or f["h_freq"] is not None:
            raw.filter(f["l_freq"], f["h_freq"], verbose="error")
        if f["notch_freq"] is not None:
            raw.notch_filter(f["notch_freq"], verbose="error")
        if abs(raw.info["sfreq"] - self.sfreq) > 1e-9:
            raw.resample(self.sfreq, verbose="error")
        data = raw.get_data()[:, :n]
        return self._scale(np.pad(data, ((0, 0), (0, n - data.shape[1])), mode="edge"))

    def _scale(self, data: np.ndarray) -> np.ndarray:
        if self.normalize == "file":
            med = np.median(data, axis=1, keepdims=True)
            mad = 1.4826 * np.median(np.abs(data - med), axis=1, keepdims=True)
            data = (data - med) / np.maximum(mad, 1e-12)
        return data.astype(np.float32)

    def signal(self, i: int) -> np.ndarray:
        """File ``i`` after filtering, resampling and ``normalize`` (C, N) float32, N =
        its length at ``sfreq`` (through the in-memory / disk caches)."""
        return self._load(int(i))

    def __len__(self) -> int:
        return len(self.meta)

    def __getitem__(self, k: int):
        """Returns (x, label, meta): x (T, C) float32 or ``encoder(x)``; label 0/1;
        meta dict(patient, file, start_s)."""
        i, s = int(self._rec[k]), int(self._start[k])
        x = torch.from_numpy(np.array(self._load(i)[:, s:s + self._len].T, dtype=np.float32))
        if self.normalize == "window":
            x = (x - x.mean(0)) / x.std(0).clamp_min(1e-12)
        if self.encoder is not None:
            x = self.encoder(x)
        path = self.files[i]
        return x, int(self.labels[k]), dict(patient=path.parent.name, file=path.name,
                                            start_s=s / self.sfreq)
