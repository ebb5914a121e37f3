"""Recordings read block by block for the monitor: EDF (mne) and WFDB (wfdb).

Symbols: C channels kept, n samples per block, fs the recording's rate.

A reader never holds more than one block, so a monitor over a 24 h recording uses the
memory of one block. Problems (unreadable or truncated file, NaN samples, a missing
channel) are :class:`~bimsnn.data.DataError` naming the file.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bimsnn.data.edf import edf_channels, read_edf_header
from bimsnn.data.errors import DataError

__all__ = ["Recording", "open_recording"]


def _bare(name: str) -> str:
    """Channel name without a modality prefix: "EEG Fp1" → "FP1" (Siena), "FP1-F7" kept."""
    n = str(name).strip().upper()
    return n[4:].strip() if n.startswith("EEG ") else n


@dataclass
class Recording:
    """One recording opened for streaming.

    ``kind`` "edf" | "wfdb"; ``fs`` Hz; ``n`` samples; ``channels`` names of the rows
    :meth:`blocks` yields; ``beats`` (wfdb with a ``.atr``): R-peak samples and symbols;
    ``seizures`` (EDF with a CHB-MIT summary or Siena list beside it): [(onset, offset) s],
    or None where nothing annotates the file.
    """

    path: Path
    kind: str
    fs: float
    n: int
    channels: list[str]
    picks: list[int]
    beats: tuple[np.ndarray, list[str]] | None = None
    seizures: list[tuple[float, float]] | None = None
    _raw: object = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.path.stem if self.kind == "edf" else self.path.name

    @property
    def duration_s(self) -> float:
        return self.n / self.fs

    def blocks(self, block: int, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(first sample, samples (C, n) float64) for consecutive blocks of ``block``
        samples, up to ``stop`` (default: the end)."""
        stop = self.n if stop is None else min(int(stop), self.n)
        for a in range(0, stop, int(block)):
            b = min(a + int(block), stop)
            yield a, self._read(a, b)

    def _read(self, a: int, b: int) -> np.ndarray:
        try:
            if self.kind == "edf":
                x = self._raw.get_data(picks=self.picks, start=a, stop=b)
            else:
                from bimsnn.data.wfdb_io import _wfdb

                with _wfdb() as wfdb:
                    rec = wfdb.rdrecord(str(self.path), sampfrom=a, sampto=b,
                                        channels=self.picks)
                # float32 as the offline loader (read_wfdb) stores it
                x = rec.p_signal.astype(np.float32).astype(np.float64).T
        except Exception as e:  # mne / wfdb raise many types for damaged files
            raise DataError(self.path, f"unreadable at samples {a}–{b} "
                                       f"({type(e).__name__}: {e})") from e
        if x.shape[1] != b - a:
            raise DataError(self.path, f"truncated: samples {a}–{b} gave {x.shape[1]}")
        bad = ~np.isfinite(x)
        if bad.any():
            c, t = np.argwhere(bad)[0]
            raise DataError(self.path, f"{int(bad.sum())} NaN/inf samples in this block (first: "
                                       f"channel {self.channels[c]}, t = {(a + t) / self.fs:.3f} s)")
        return x


def open_recording(path, channels=None, *, with_annotations: bool = True) -> Recording:
    """Open an EDF (``*.edf``) or a WFDB record (``name``, ``name.hea`` or ``name.dat``).

    Args:
        channels: names to keep, in this order (EDF: "FP1-F7", "EEG Fp1" or "FP1" all
            match a Siena "EEG Fp1"; WFDB: signal names or indices); None keeps all.
    """
    p = Path(path)
    if p.suffix.lower() == ".edf":
        return _open_edf(p, channels, with_annotations)
    if p.suffix.lower() in (".hea", ".dat", ".atr"):
        p = p.with_suffix("")
    return _open_wfdb(p, channels, with_annotations)


def _open_edf(p: Path, channels, with_annotations: bool) -> Recording:
    import mne

    if not p.is_file():
        raise DataError(p, "no such EDF file")
    h = read_edf_header(p)               # truncated / corrupt headers: DataError here
    fs, n, names = edf_channels(p, h)
    bare = {}
    for nm, k in names.items():
        bare.setdefault(_bare(nm), k)
    if channels is None:
        want, picks = list(names), list(names.values())
    else:
        want = [str(c).upper() for c in channels]
        lacking = [c for c in want if c not in names and _bare(c) not in bare]
        if lacking:
            raise DataError(p, f"lacks channels {lacking} (has {sorted(names)})")
        picks = [names[c] if c in names else bare[_bare(c)] for c in want]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # duplicate-name renaming notice
            raw = mne.io.read_raw_edf(p, preload=False, verbose="error")
    except Exception as e:
        raise DataError(p, f"unreadable EDF ({type(e).__name__}: {e})") from e
    seizures = None
    if with_annotations:
        from bimsnn.data.edf_recordings import seizures_for

        seizures = seizures_for(p)
    return Recording(p, "edf", float(fs), int(n), want, picks, seizures=seizures, _raw=raw)


def _open_wfdb(p: Path, channels, with_annotations: bool) -> Recording:
    from bimsnn.data.wfdb_io import _wfdb, read_annotations, read_wfdb_header

    read_wfdb_header(p)
    try:
        with _wfdb() as wfdb:
            hdr = wfdb.rdheader(str(p))
    except Exception as e:
        raise DataError(p, f"unreadable WFDB header ({type(e).__name__}: {e})") from e
    names = list(hdr.sig_name)
    if channels is None:
        picks = list(range(len(names)))
    else:
        bad = [c for c in channels if not (c in names or (isinstance(c, int) and 0 <= c < len(names)))]
        if bad:
            raise DataError(p, f"no channel(s) {bad}; has {names}")
        picks = [names.index(c) if isinstance(c, str) else int(c) for c in channels]
    n = int(hdr.sig_len)
    beats = None
    if with_annotations and p.with_suffix(".atr").is_file():
        beats = read_annotations(p, n)
    return Recording(p, "wfdb", float(hdr.fs), n, [names[i] for i in picks], picks,
                     beats=beats)
