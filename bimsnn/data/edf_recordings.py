"""Any EDF files as labelled windows given a channel list, and the seizures annotated beside an EDF.

Symbols: T samples per window, C channels, fs sampling rate after resampling (Hz).

:class:`EDFRecordings` assumes no layout: it takes the EDF paths, the channel names and,
optionally, seizure intervals per file, and windows them with the preprocessing of
:class:`~bimsnn.data.CHBMIT`. :func:`seizures_for` finds the annotation of one EDF in
either layout the package reads (CHB-MIT ``chbNN-summary.txt``, Siena
``Seizures-list-PNxx.txt``), e.g. for the streaming monitor to draw seizures and score alarms.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

from bimsnn.data.chbmit import CHBMIT, parse_chbmit_summary
from bimsnn.data.edf import edf_channels, read_edf_header
from bimsnn.data.errors import DataError, DataWarning
from bimsnn.data.siena import _canon, _edf_for, _read, _spans

__all__ = ["EDFRecordings", "seizures_for"]

_GIVEN = Path("the seizures argument")    # _inside names the annotation source by .name


def _intervals(path: Path, sz) -> list[tuple[float, float]]:
    """Given seizures of one file as sorted float pairs; DataError naming the file otherwise."""
    try:
        out = sorted((float(a), float(b)) for a, b in sz)
    except (TypeError, ValueError) as e:
        raise DataError(path, f"seizures must be (onset_s, offset_s) pairs, got {sz!r}") from e
    for a, b in out:
        if not (math.isfinite(a) and math.isfinite(b) and 0 <= a < b):
            raise DataError(path, f"seizure ({a:g}, {b:g}) s: need 0 <= onset < offset")
    for (a0, b0), (a1, _) in zip(out, out[1:]):
        if a1 < b0:
            raise DataError(path, f"seizures at {a0:g} s and {a1:g} s overlap")
    return out


class EDFRecordings(CHBMIT):
    """EDF files of any layout as labelled windows: ``ds[i] -> (x (T, C), label, meta)``.

    Args:
        paths: EDF files (one path or a list); windows keep their order.
        channels: names to read, matched to each file's labels upper-cased with any
            ``"EEG "`` prefix removed (``"EEG Fp1"`` and ``"FP1"`` are one channel; CHB-MIT's
            ``"FP1-F7"`` stays as is). A file lacking one is a DataError naming the file and
            the channel (``missing_channels="skip"`` skips it loudly).
        seizures: None (every window labelled 0) or ``{path: [(onset_s, offset_s), ...]}`` in
            seconds from each file's start, e.g. ``{p: seizures_for(p) or [] for p in paths}``.
            Files it does not name have no seizures.
        **kw: the windowing and preprocessing keywords of :class:`~bimsnn.data.CHBMIT`
            (``window_s``, ``stride_s``, ``l_freq``, ``h_freq``, ``notch_freq``, ``sfreq``,
            ``normalize``, ``seizures_outside``, ``strict``, ...).

    ``ds.meta["patient"]`` is each file's folder name; ``ds.seizures`` maps each path to its
    intervals after the span check (``seizures_outside``).
    """

    def __init__(self, paths, channels, seizures: dict | None = None, **kw):
        paths = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
        if not paths:
            raise DataError(None, "EDFRecordings: no EDF paths given")
        for p in paths:
            if not p.is_file():
                raise DataError(p, "no such EDF file")
        if len({p.resolve() for p in paths}) < len(paths):
            raise DataError(paths[0].parent, "the same EDF is given twice")
        if channels is None or isinstance(channels, str) or not list(channels):
            raise DataError(paths[0], f"channels must be a non-empty list of names, got {channels!r}")
        given = {Path(k).resolve(): v for k, v in (seizures or {}).items()}
        unknown = set(given) - {p.resolve() for p in paths}
        if unknown:
            raise DataError(sorted(unknown)[0], "has seizures given but is not among the paths")
        self._paths, self._given = paths, given
        root = Path(os.path.commonpath([str(p.resolve().parent) for p in paths]))
        super().__init__(root, channels=[_canon(c) for c in channels], **kw)

    def _scan(self, patients, outside: str):
        files, headers, self.seizures = [], [], {}
        for p in self._paths:
            h = read_edf_header(p)
            h["fs"], h["n"], names = edf_channels(p, h)
            h["names"] = {}
            for label, k in names.items():
                h["names"].setdefault(_canon(label), k)
            sz = _intervals(p, self._given.get(p.resolve(), []))
            self.seizures[p] = self._inside(p, _GIVEN, sz, h["n"] / h["fs"], outside)
            files.append(p)
            headers.append(h)
        return files, headers


def seizures_for(edf_path, seizures_outside: str = "error") -> list[tuple[float, float]] | None:
    """Seizures annotated beside an EDF, in seconds from its start; None if none annotates it.

    Looks in the EDF's folder for a Siena ``Seizures-list-*.txt`` naming it and for a
    CHB-MIT ``*-summary.txt`` listing it. A CHB-MIT file listed without seizures gives
    ``[]``; a Siena list names only files with seizures, so an EDF it omits gives None.
    Only this EDF's entry is checked, so a mistake elsewhere in its list does not hide it.

    Args:
        seizures_outside: a seizure outside the registration (Siena) or past the EDF's end
            (its header's samples / fs) is a DataError (``"error"``), clipped loudly
            (``"clip"``: a :class:`~bimsnn.data.DataWarning`, dropped if nothing is left),
            or returned as annotated (``"ignore"``: no span check).
    Returns:
        ``[(onset_s, offset_s), ...]`` sorted, ``[]``, or None.
    Raises:
        DataError: the EDF or an annotation file is unreadable or malformed, two annotation
        files name the EDF, or (``"error"``) a seizure lies outside its span.
    """
    path = Path(edf_path)
    if seizures_outside not in ("error", "clip", "ignore"):
        raise DataError(path, f"seizures_outside must be 'error', 'clip' or 'ignore', "
                              f"got {seizures_outside!r}")
    if not path.is_file():
        raise DataError(path, "no such EDF file")
    hits = []
    for lst in sorted(path.parent.glob("Seizures-list-*.txt")):
        entries, _ = _read(lst)
        for name in entries:
            if _edf_for(path.parent, name) == path:
                hits.append((lst, _spans(lst, entries, seizures_outside, [], False, only=name)[name]))
    for summary in sorted(path.parent.glob("*-summary.txt")):
        listed = parse_chbmit_summary(summary)
        if path.name in listed:
            hits.append((summary, listed[path.name]))
    if not hits:
        return None
    if len(hits) > 1:
        raise DataError(path, f"annotated by both {hits[0][0].name} and {hits[1][0].name}")
    src, sz = hits[0]
    if seizures_outside == "ignore":
        return list(sz)
    h = read_edf_header(path)
    fs, n, _ = edf_channels(path, h)
    dur = n / fs
    bad = [(s, e) for s, e in sz if e > dur + 1e-6]
    if not bad:
        return list(sz)
    problem = (f"{src.name} lists seizure(s) {', '.join(f'{s:g}–{e:g} s' for s, e in bad)} "
               f"past the end of this {dur:g} s recording")
    if seizures_outside == "error":
        raise DataError(path, f"{problem} (seizures_outside='clip' clips them to the file)")
    warnings.warn(f"{path}: {problem}: clipped to the file", DataWarning, stacklevel=2)
    return [(s, min(e, dur)) for s, e in sz if s < dur]
