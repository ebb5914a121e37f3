"""EEG datasets: CHB-MIT (EDF + chbNN-summary.txt), windowed; Bonn lives in ``bimsnn.data.bonn``.

Symbols: T samples per window, C channels, fs sampling rate after resampling (Hz).

CHBMIT and Bonn follow torchaudio: ``Dataset(root, ..., download=False)`` and
``ds[i] -> (x, label, meta)`` with x a float32 window (T, C) (or ``encoder(x)``,
e.g. spikes (T, 2C)), label 1 = ictal / 0 = not, meta a dict naming the recording.
``ds.meta`` is a pandas DataFrame with one row per window; the split helpers at the
bottom group windows by recording so no recording lands on both sides.
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

from bimsnn.data import DataError
from bimsnn.data.bonn import Bonn  # noqa: F401  (re-exported: one EEG namespace)

__all__ = ["parse_chbmit_summary", "read_edf_header", "CHBMIT", "Bonn", "CHBMIT_CHANNELS_18",
           "recording_split", "patient_split", "leave_one_patient_out"]

#: The 18 bipolar "double banana" channels present in every CHB-MIT recording.
CHBMIT_CHANNELS_18 = ("FP1-F7", "F7-T7", "T7-P7", "P7-O1", "FP1-F3", "F3-C3", "C3-P3", "P3-O1",
                      "FP2-F4", "F4-C4", "C4-P4", "P4-O2", "FP2-F8", "F8-T8", "T8-P8", "P8-O2",
                      "FZ-CZ", "CZ-PZ")
_DUMMY = {"", "-", ".", "EDF ANNOTATIONS"}

_CHBMIT_HELP = ("CHB-MIT is not downloaded automatically (42 GB, PhysioNet terms). Get it with "
                "`wget -r -N -c -np https://physionet.org/files/chbmit/1.0.0/` and pass "
                "root=.../chbmit/1.0.0, or write demo data: "
                "`python -m bimsnn.data.demo chbmit datasets/demo_chbmit` (see datasets/README.md)")


# --------------------------------------------------------------------------- CHB-MIT parsing
_NUM = r"(\d+(?:\.\d+)?)"
_RE_FILE = re.compile(r"^File Name:\s*(\S+)")
_RE_NSEIZ = re.compile(r"^Number of Seizures in File:\s*(\d+)")
_RE_START = re.compile(rf"^Seizure\s*(?:\d+\s*)?Start Time:\s*{_NUM}\s*(?:seconds?|s)?\s*$", re.I)
_RE_END = re.compile(rf"^Seizure\s*(?:\d+\s*)?End Time:\s*{_NUM}\s*(?:seconds?|s)?\s*$", re.I)


def parse_chbmit_summary(path: str | Path) -> dict[str, list[tuple[float, float]]]:
    """Seizure intervals per file from a CHB-MIT ``chbNN-summary.txt``.

    Accepts "Seizure Start Time: 417 seconds" and "Seizure 1 Start Time: 2670 seconds";
    ignores the channel lists and "Channels changed" blocks. Files with no seizure map
    to ``[]``, in the summary's order.

    Returns:
        {"chb05_06.edf": [(417.0, 532.0)], "chb05_01.edf": [], ...} in seconds from file start.
    Raises:
        DataError: unreadable file, no "File Name:" entries, seizure lines outside a file
        entry, a start without an end, end ≤ start, or a count that disagrees with
        "Number of Seizures in File".
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="latin-1").splitlines()
    except OSError as e:
        raise DataError(path, f"cannot read summary: {e}") from e
    out: dict[str, list[tuple[float, float]]] = {}
    declared: dict[str, int] = {}
    current, start = None, None
    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if m := _RE_FILE.match(line):
            current, start = m.group(1), None
            if current in out:
                raise DataError(path, f"line {n}: file {current} listed twice")
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
                out[current].append((start, end))
                start = None
    if not out:
        raise DataError(path, "no 'File Name:' entries: not a CHB-MIT summary")
    if start is not None:
        raise DataError(path, f"seizure start without end in {current}")
    for name, k in declared.items():
        if k != len(out[name]):
            raise DataError(path, f"{name}: declares {k} seizures but lists {len(out[name])}")
    return out


def read_edf_header(path: str | Path) -> dict:
    """EDF header fields without reading samples; checks the file is complete.

    Returns:
        dict(labels=[...] raw signal labels incl. duplicates and annotations,
        sfreq=[...] per signal, n_records, record_s, n_times=[...] per signal).
    Raises:
        DataError: not an EDF, corrupt header, or fewer bytes than the header declares.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(256)
            n_hdr, n_rec = int(head[184:192]), int(head[236:244])
            dur, ns = float(head[244:252]), int(head[252:256])
            sig = f.read(ns * 256)
        if len(sig) < ns * 256 or ns < 1 or dur <= 0 or n_hdr != 256 * (ns + 1):
            raise ValueError("inconsistent signal header")
        labels = [sig[i * 16:(i + 1) * 16].decode("latin-1").strip() for i in range(ns)]
        off = ns * 216                      # label16+transducer80+dim8+pmin8+pmax8+dmin8+dmax8+filt80
        spr = [int(sig[off + i * 8:off + (i + 1) * 8]) for i in range(ns)]
    except (OSError, ValueError) as e:
        raise DataError(path, f"corrupt or non-EDF header ({e})") from e
    size, rec_bytes = path.stat().st_size, 2 * sum(spr)
    if n_rec < 0:                           # "-1": unknown, infer from the size as EDF allows
        n_rec = (size - n_hdr) // rec_bytes
    if size < n_hdr + n_rec * rec_bytes:
        raise DataError(path, f"truncated EDF: header declares {n_rec} records "
                              f"({n_hdr + n_rec * rec_bytes} bytes) but the file has {size} bytes")
    return dict(labels=labels, sfreq=[s / dur for s in spr], n_records=n_rec, record_s=dur,
                n_times=[s * n_rec for s in spr])


def _channels(path: Path, header: dict) -> tuple[float, int, dict[str, int]]:
    """(sampling rate, samples, {canonical name: mne channel index}) of the EEG signals.

    mne drops the EDF+ annotation signal and renames CHB-MIT's repeated T8-P8 to
    T8-P8-0 / T8-P8-1; both copies hold the same derivation, so the first stands for the
    name. Dummy "-"/"." signals are skipped. DataError if the signals' rates differ.
    """
    sig = [(j, lab.upper()) for j, lab in enumerate(header["labels"])
           if lab.upper() != "EDF ANNOTATIONS"]
    rates = {header["sfreq"][j] for j, _ in sig}
    if len(rates) != 1:
        raise DataError(path, f"data signals have different sampling rates {sorted(rates)}")
    names: dict[str, int] = {}
    for k, (_, name) in enumerate(sig):
        if name not in _DUMMY:
            names.setdefault(name, k)
    return rates.pop(), header["n_times"][sig[0][0]], names


# --------------------------------------------------------------------------- CHB-MIT dataset
class CHBMIT(Dataset):
    """CHB-MIT Scalp EEG (Shoeb 2009, PhysioNet ``chbmit``) as labelled windows.

    Layout: ``root/chbNN/chbNN_MM.edf`` and ``root/chbNN/chbNN-summary.txt``.

    Args:
        patients: e.g. ``["chb05", 8]``; None = every ``chbNN*`` folder with a summary.
        window_s, stride_s: window length and hop (default hop = window) in seconds,
            rounded to whole samples at the output rate.
        channels: None = names present in every selected file (order of the first file;
            depends on the patients chosen), ``"standard"`` = :data:`CHBMIT_CHANNELS_18`,
            or a list of names. Duplicates collapse to one.
        missing_channels: ``"error"`` (DataError naming the file) or ``"skip"`` files that
            lack a requested channel (listed in ``self.skipped``; e.g. chb12's referential files).
        ictal_overlap: a window is ictal (1) if it overlaps seizures for ≥ this fraction
            of its length; windows with less overlap count as interictal (0).
        preictal_margin_s, postictal_margin_s: drop interictal windows that overlap the
            ``margin`` seconds before an onset / after an offset.
        l_freq, h_freq, notch_freq: band-pass and notch (Hz) through ``raw.filter`` and
            ``raw.notch_filter`` at the native rate (h_freq < native Nyquist).
        sfreq: output rate through ``raw.resample``; must be > 0 and ≤ the native rate
            (no upsampling). None keeps the native rate (256 Hz).
        normalize: ``"file"`` per channel (x − median)/(1.4826·MAD) over the whole file
            (robust to seizures and artefacts), ``"window"`` per-window z-score, or None (V).
        max_cached_files: processed files kept in memory (LRU; ~65 MB per real 1 h file).
        cache_dir: if set, processed files are also written there as .npy and memory-mapped,
            so random access over many files stays cheap.
    """

    def __init__(self, root, patients: Sequence | None = None, window_s: float = 4.0,
                 stride_s: float | None = None, channels=None, encoder: Callable | None = None,
                 preictal_margin_s: float = 0.0, postictal_margin_s: float = 0.0,
                 ictal_overlap: float = 0.5, l_freq: float | None = None,
                 h_freq: float | None = None, notch_freq: float | None = None,
                 sfreq: float | None = None, normalize: str | None = "file",
                 max_cached_files: int = 2, cache_dir=None, missing_channels: str = "error",
                 download: bool = False):
        self.root = Path(root)
        if download:
            raise DataError(self.root, _CHBMIT_HELP)
        if not self.root.is_dir():
            raise DataError(self.root, f"no such folder. {_CHBMIT_HELP}")
        stride_s = window_s if stride_s is None else stride_s
        if window_s <= 0 or stride_s <= 0 or not 0 < ictal_overlap <= 1:
            raise DataError(self.root, "window_s, stride_s must be > 0 and 0 < ictal_overlap <= 1")
        if normalize not in ("file", "window", None) or missing_channels not in ("error", "skip"):
            raise DataError(self.root, f"bad normalize={normalize!r} or missing_channels="
                                       f"{missing_channels!r}")
        self.encoder, self.normalize = encoder, normalize
        self.filters = dict(l_freq=l_freq, h_freq=h_freq, notch_freq=notch_freq)
        self.window_s, self.stride_s = float(window_s), float(stride_s)
        self.max_cached_files = max(1, int(max_cached_files))
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

        self.files, self.seizures, headers = self._scan(patients)
        if channels is None:
            common = set.intersection(*(set(h["names"]) for h in headers))
            self.channels = [n for n in headers[0]["names"] if n in common]
        else:
            self.channels = list(CHBMIT_CHANNELS_18 if channels == "standard" else channels)
            self.channels = list(dict.fromkeys(c.upper() for c in self.channels))
        if not self.channels:
            raise DataError(self.root, "no channel is common to all selected files")
        self.skipped: list[Path] = []             # files lacking channels, with missing="skip"
        kept = []
        for path, h in zip(self.files, headers):
            lacking = [c for c in self.channels if c not in h["names"]]
            if lacking and missing_channels != "skip":
                raise DataError(path, f"lacks channels {lacking} (missing_channels='skip' skips it)")
            if lacking:
                self.skipped.append(path)
            else:
                kept.append((path, h))
        if not kept:
            raise DataError(self.root, "every file lacks some of the channels")
        self.files, headers = [p for p, _ in kept], [h for _, h in kept]
        self._picks = [[h["names"][c] for c in self.channels] for h in headers]
        self.sfreq = float(sfreq) if sfreq is not None else float(headers[0]["fs"])
        for path, h in zip(self.files, headers):
            self._check_rates(path, h)
        self._n_out = [int(h["n"] * self.sfreq / h["fs"]) for h in headers]   # samples after resampling
        self.meta = self._windows(ictal_overlap, preictal_margin_s, postictal_margin_s)
        self.labels = self.meta["label"].to_numpy()
        self._rec = self.meta["file_index"].to_numpy()
        self._start = self.meta["start"].to_numpy()
        self._len = int(round(self.window_s * self.sfreq))

    def _scan(self, patients):
        if patients is None:
            dirs = sorted(p for p in self.root.glob("chb*") if p.is_dir()
                          and (p / f"{p.name}-summary.txt").is_file())
        else:
            dirs = [self.root / (f"chb{int(p):02d}" if str(p).isdigit() else str(p)) for p in patients]
        if not dirs:
            raise DataError(self.root, f"no chbNN/chbNN-summary.txt found. {_CHBMIT_HELP}")
        files, seizures, headers = [], {}, []
        for d in dirs:
            summary = d / f"{d.name}-summary.txt"
            if not summary.is_file():
                raise DataError(summary, "missing CHB-MIT summary")
            for name, sz in parse_chbmit_summary(summary).items():
                path = d / name
                if not path.is_file():
                    raise DataError(summary, f"names {name} but {path} does not exist")
                h = read_edf_header(path)
                h["fs"], h["n"], h["names"] = _channels(path, h)
                files.append(path)
                seizures[path] = sz
                headers.append(h)
        return files, seizures, headers

    def _check_rates(self, path: Path, h: dict) -> None:
        fs_in = h["fs"]
        if not (self.sfreq > 0 and np.isfinite(self.sfreq)):
            raise DataError(path, f"impossible resampling target sfreq={self.sfreq} Hz (must be > 0)")
        if self.sfreq > fs_in + 1e-9:
            raise DataError(path, f"cannot resample {fs_in:g} Hz to {self.sfreq:g} Hz: "
                                  "upsampling is not supported")
        for key in ("l_freq", "h_freq", "notch_freq"):
            f = self.filters[key]
            if f is not None and not 0 < f < fs_in / 2:
                raise DataError(path, f"{key}={f} Hz outside (0, Nyquist={fs_in / 2:g} Hz)")

    def _windows(self, overlap, pre, post) -> pd.DataFrame:
        win = int(round(self.window_s * self.sfreq))
        hop = max(1, int(round(self.stride_s * self.sfreq)))
        rows = []
        for i, path in enumerate(self.files):
            start = np.arange(0, max(self._n_out[i] - win + 1, 0), hop)  # (W,) samples
            t0, t1 = start / self.sfreq, (start + win) / self.sfreq
            ov = np.zeros(len(start))
            near = np.zeros(len(start), dtype=bool)
            for s, e in self.seizures[path]:
                ov += np.clip(np.minimum(t1, e) - np.maximum(t0, s), 0, None)
                if pre > 0:
                    near |= (t1 > s - pre) & (t0 < s)
                if post > 0:
                    near |= (t0 < e + post) & (t1 > e)
            label = (ov >= overlap * self.window_s - 1e-9).astype(np.int64)
            keep = (label == 1) | ~near
            rows.append(pd.DataFrame(dict(
                patient=path.parent.name, file=path.name, file_index=i, start=start[keep],
                start_s=t0[keep], label=label[keep], overlap_s=ov[keep])))
        meta = pd.concat(rows, ignore_index=True)
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
                        self.sfreq, self.normalize))
            npy = self.cache_dir / f"{path.stem}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.npy"
        if npy is not None and npy.is_file():
            data = np.load(npy, mmap_mode="r")
        else:
            data = self._process(i)
            if npy is not None:
                npy.parent.mkdir(parents=True, exist_ok=True)
                tmp = npy.with_suffix(".tmp.npy")
                np.save(tmp, data)
                tmp.replace(npy)                        # atomic: readers never see half a file
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
        if f["l_freq"] is not None or f["h_freq"] is not None:
            raw.filter(f["l_freq"], f["h_freq"], verbose="error")
        if f["notch_freq"] is not None:
            raw.notch_filter(f["notch_freq"], verbose="error")
        if abs(raw.info["sfreq"] - self.sfreq) > 1e-9:
            raw.resample(self.sfreq, verbose="error")
        n = self._n_out[i]                     # pin the length the windows were indexed on
        data = raw.get_data()[:, :n]
        data = np.pad(data, ((0, 0), (0, n - data.shape[1])), mode="edge")
        if self.normalize == "file":
            med = np.median(data, axis=1, keepdims=True)
            mad = 1.4826 * np.median(np.abs(data - med), axis=1, keepdims=True)
            data = (data - med) / np.maximum(mad, 1e-12)
        return data.astype(np.float32)

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


# --------------------------------------------------------------------------- splits
def recording_split(ds, test_size: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, test_idx) of windows, whole recordings (CHB-MIT files, Bonn segments)
    on one side; stratified on "recording has an ictal window" where both classes allow it."""
    from sklearn.model_selection import train_test_split

    rec = ds.meta.groupby("recording")["label"].max()
    strat = rec.to_numpy() if min(np.bincount(rec.to_numpy(), minlength=2)) >= 2 else None
    _, test = train_test_split(rec.index.to_numpy(), test_size=test_size, random_state=seed,
                               stratify=strat)
    is_test = ds.meta["recording"].isin(set(test)).to_numpy()
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def patient_split(ds, test_patients: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, test_idx): windows of ``test_patients`` vs the rest."""
    pats = set(ds.meta["patient"])
    unknown = set(test_patients) - pats
    if unknown:
        raise ValueError(f"unknown patients {sorted(unknown)}; have {sorted(pats)}")
    is_test = ds.meta["patient"].isin(set(test_patients)).to_numpy()
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def leave_one_patient_out(ds) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """[(held-out patient, train_idx, test_idx), ...] through sklearn's LeaveOneGroupOut."""
    from sklearn.model_selection import LeaveOneGroupOut

    groups = ds.meta["patient"].to_numpy()
    return [(str(groups[te[0]]), tr, te)
            for tr, te in LeaveOneGroupOut().split(np.zeros(len(groups)), groups=groups)]
