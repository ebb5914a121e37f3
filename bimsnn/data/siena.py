"""Siena Scalp EEG (Detti 2020, PhysioNet ``siena-scalp-eeg``): EDF + ``Seizures-list-PNxx.txt``.

Symbols: T samples per window, C channels, fs sampling rate after resampling (Hz).

The seizure lists give clock times ("19.58.36"; also "19:58:36", with stray spaces), not
seconds. A time's offset in its file is (time − "Registration start time") modulo 24 h, so a
registration that crosses midnight needs no date; a recording must be shorter than 24 h.
Every seizure is checked against its registration span (the published PN00 list ends seizure
3 at 19.29.29, half an hour after its registration ends at 18.57.13) and, by the dataset,
against its EDF's span.

Channels: the EDFs label scalp electrodes ``"EEG Fp1"`` and other signals ``"EKG EKG"``,
``"SPO2"``, ... This module names a channel by its label upper-cased with the ``"EEG "``
prefix removed (``"FP1"``, ``"T3"``, ``"EKG EKG"``); requested names are mapped the same way,
so ``"EEG Fp1"``, ``"Fp1"`` and ``"FP1"`` are one channel. Siena keeps the old 10-20 names
(T3/T4/T5/T6 = T7/T8/P7/P8).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from bimsnn.data.chbmit import CHBMIT
from bimsnn.data.edf import edf_channels, read_edf_header
from bimsnn.data.errors import DataError, DataWarning, skip
from bimsnn.data.files import read_text

__all__ = ["parse_seizure_list", "Siena", "SIENA_CHANNELS_19"]

#: The 19 electrodes of the 10-20 system, in Siena's names; every Siena EDF has them.
SIENA_CHANNELS_19 = ("FP1", "FP2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2", "F7", "F8",
                     "T3", "T4", "T5", "T6", "FZ", "CZ", "PZ")

_SIENA_HELP = ("Siena Scalp EEG is not downloaded automatically (20 GB, PhysioNet). Get it with "
               "`wget -r -N -c -np https://physionet.org/files/siena-scalp-eeg/1.0.0/` and pass "
               "root=.../siena-scalp-eeg/1.0.0, or write demo data: "
               "`python -m bimsnn.data.demo siena datasets/demo_siena`")
_DAY = 86400
_RE_PATIENT = re.compile(r"^PN\d+$", re.I)
_RE_RATE = re.compile(r"^data sampling rate\s*:\s*(\d+(?:\.\d+)?)\s*hz", re.I)
_RE_NUMBER = re.compile(r"^seizure n\.?\s*(\d+)", re.I)
_RE_FILE = re.compile(r"^file\s*name\s*:\s*(.*)$", re.I)
_RE_TIME = re.compile(r"^(registration )?(?:seizure )?(start|end) time\s*:(.*)$", re.I)
_RE_CLOCK = re.compile(r"^(\d{1,2})[.:](\d{1,2})[.:](\d{1,2})$")
# Names in the published 1.0.0 lists that differ from the EDFs beside them (as catalogued by
# epilepsy2bids); used only where the listed name itself is not a file.
_LIST_TYPOS = {"PN01.edf": "PN01-1.edf", "PNO6-1.edf": "PN06-1.edf", "PNO6-2.edf": "PN06-2.edf",
               "PNO6-4.edf": "PN06-4.edf", "PN11-.edf": "PN11-1.edf"}


def _hms(t: float) -> str:
    t = int(t) % _DAY
    return f"{t // 3600:02d}.{t // 60 % 60:02d}.{t % 60:02d}"


def _clock(path: Path, n: int, value: str) -> int:
    """Seconds since midnight of "hh.mm.ss" (spaces anywhere ignored: "1 6.49.25" is 16.49.25)."""
    m = _RE_CLOCK.match("".join(value.split()))
    if not m or int(m[1]) > 23 or int(m[2]) > 59 or int(m[3]) > 59:
        raise DataError(path, f"line {n}: {value.strip()!r} is not a clock time hh.mm.ss")
    return int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3])


def _read(path: Path) -> tuple[dict[str, dict], float | None]:
    """({edf name: dict(start, end, seizures=[(on, off, label, line)])} in clock seconds,
    declared "Data Sampling Rate" or None). A file named in several blocks (one per seizure)
    is one entry; a block without registration times inherits the file's earlier ones."""
    files: dict[str, dict] = {}
    rate, name, number, pending, count = None, None, None, None, 0
    for n, raw in enumerate(read_text(path, "Siena seizure list").splitlines(), 1):
        line = " ".join(raw.split())                        # \r, tabs and doubled spaces
        if m := _RE_RATE.match(line):
            rate = float(m[1])
            if rate <= 0:
                raise DataError(path, f"line {n}: sampling rate {rate:g} Hz must be > 0")
        elif m := _RE_NUMBER.match(line):
            number = int(m[1])
        elif m := _RE_FILE.match(line):
            if pending is not None:
                raise DataError(path, f"line {pending[1]}: seizure start without end in {name}")
            name = m[1].strip()
            if "/" in name or "\\" in name or not name.lower().endswith(".edf"):
                raise DataError(path, f"line {n}: {name!r} is not an .edf name in this folder")
            files.setdefault(name, dict(start=None, end=None, seizures=[]))
        elif m := _RE_TIME.match(line):
            if name is None:
                raise DataError(path, f"line {n}: {line!r} before any 'File name:'")
            t, which, entry = _clock(path, n, m[3]), m[2].lower(), files[name]
            if m[1]:                                         # registration start / end
                if entry[which] is not None and entry[which] != t:
                    raise DataError(path, f"line {n}: {name}: registration {which} {_hms(t)} "
                                          f"contradicts {_hms(entry[which])} given before")
                entry[which] = t
            elif which == "start":
                if pending is not None:
                    raise DataError(path, f"line {n}: seizure start without end in {name}")
                count += 1
                pending, number = (t, n, number if number is not None else count), None
            else:
                if pending is None:
                    raise DataError(path, f"line {n}: seizure end without start in {name}")
                entry["seizures"].append((pending[0], t, pending[2], pending[1]))
                pending = None
        elif re.search(r"\btime\s*:", line, re.I):
            raise DataError(path, f"line {n}: malformed time line {line!r}")
    if pending is not None:
        raise DataError(path, f"line {pending[1]}: seizure start without end in {name}")
    if not files:
        raise DataError(path, "no 'File name:' entries: not a Siena seizure list")
    for name, e in files.items():
        for key in ("start", "end"):
            if e[key] is None:
                raise DataError(path, f"{name}: no 'Registration {key} time'")
    return files, rate


def _spans(path: Path, files: dict, outside: str, skipped: list, strict: bool,
           only: str | None = None) -> dict[str, list[tuple[float, float]]]:
    """Seizures in seconds from each registration start, checked against the registration span.

    ``outside``: "error" (DataError naming the list and the seizure), "clip" (clipped to
    the registration, loudly through :func:`skip`) or "ignore" (kept as written)."""
    out = {}
    for name, e in files.items():
        if only is not None and name != only:
            continue
        dur = (e["end"] - e["start"]) % _DAY
        if dur == 0:
            raise DataError(path, f"{name}: registration ends when it starts ({_hms(e['start'])})")
        got = []
        for a, b, label, n in e["seizures"]:
            on, off = (a - e["start"]) % _DAY, (b - e["start"]) % _DAY
            what = f"{name}: seizure {label} (line {n}, {_hms(a)}–{_hms(b)})"
            reg = f"registration {_hms(e['start'])}–{_hms(e['end'])}"
            if on < dur and off <= on:
                raise DataError(path, f"{what} does not end after it starts")
            if on >= dur or off > dur:
                problem = f"{what} lies outside its {reg}"
                if off <= on:                            # starts before the registration
                    raise DataError(path, problem)
                if outside == "error":
                    raise DataError(path, f"{problem} (seizures_outside='clip' clips it)")
                if outside == "clip":
                    skip(skipped, path, f"{problem}: clipped to the registration", strict)
                    if on >= dur:
                        continue
                    off = dur
            got.append((float(on), float(off)))
        got.sort()
        for (s0, e0), (s1, _) in zip(got, got[1:]):
            if s1 < e0:
                raise DataError(path, f"{name}: seizures at {s0:g} s and {s1:g} s overlap")
        out[name] = got
    return out


def parse_seizure_list(path: str | Path, seizures_outside: str = "error"
                       ) -> dict[str, list[tuple[float, float]]]:
    """Seizure intervals per file from a Siena ``Seizures-list-PNxx.txt``.

    Reads "Seizure start time: 19.58.36" and "Start time: 19:58:36", stray spaces, and a file
    named in several "Seizure n" blocks; converts clock times to seconds from the file's
    "Registration start time", wrapping past midnight.

    Args:
        seizures_outside: a seizure outside its registration span is a DataError (``"error"``), is
            clipped to it (``"clip"``, with a :class:`~bimsnn.data.DataWarning`), or kept
            as written (``"ignore"``).
    Returns:
        {"PN00-1.edf": [(1143.0, 1213.0)], ...}: names as the list writes them, in its order;
        intervals sorted, in seconds from the registration start.
    Raises:
        DataError: naming the list (and the line or seizure): unreadable file, no "File name:",
        a time that is not hh.mm.ss, a seizure without file, start or end, missing or
        contradicting registration times, end before start, overlapping seizures, or
        (``seizures_outside="error"``) a seizure outside its registration.
    """
    path = Path(path)
    if seizures_outside not in ("error", "clip", "ignore"):
        raise DataError(path, f"seizures_outside must be 'error', 'clip' or 'ignore', "
                              f"got {seizures_outside!r}")
    return _spans(path, _read(path)[0], seizures_outside, [], False)


def _edf_for(folder: Path, name: str) -> Path | None:
    """The EDF a listed name refers to (the name itself, else a known typo's fix), or None."""
    for cand in (name, _LIST_TYPOS.get(name)):
        if cand is not None and (folder / cand).is_file():
            return folder / cand
    return None


def _edf_start(path: Path) -> int | None:
    """Header start time (seconds since midnight), None where unreadable."""
    try:
        with open(path, "rb") as f:
            return _clock(path, 0, f.read(184)[176:184].decode("ascii"))
    except (OSError, UnicodeDecodeError, DataError):
        return None


def _canon(label) -> str:
    """Channel name: upper case, spaces collapsed, the "EEG " prefix removed."""
    return re.sub(r"^EEG ", "", " ".join(str(label).upper().split()))


class Siena(CHBMIT):
    """Siena Scalp EEG (Detti 2020, PhysioNet ``siena-scalp-eeg``) as labelled windows.

    Layout: ``root/PNxx/PNxx-M.edf`` and ``root/PNxx/Seizures-list-PNxx.txt``. Same API and
    behaviour as :class:`~bimsnn.data.CHBMIT`: ``ds[i] -> (x (T, C), label, meta)``,
    ``ds.meta``, ``ds.files``, ``ds.seizures`` (seconds from each file's start),
    ``ds.channels``, ``ds.sfreq`` (default: native 512 Hz), ``ds.skipped``; every keyword
    of CHBMIT (windows, margins, filters, ``sfreq``, ``normalize``, caches, ``strict``,
    ``missing_channels``, ``seizures_outside``, ...) is passed through unchanged.

    Args:
        patients: e.g. ``["PN00", 16]``; None = every ``PNxx`` folder (each must hold its list).
        channels: None = the EEG (``"EEG ..."``) channels present in every selected file,
            in the first file's order; ``"standard"`` = :data:`SIENA_CHANNELS_19`; or a list
            of names in either form (``"EEG Fp1"`` or ``"FP1"``; non-EEG signals such as
            ``"EKG EKG"`` only when named).
        seizures_outside: ``"error"``: a seizure outside its registration span (DataError
            naming the list and the seizure) or past its EDF's end (naming the EDF);
            ``"clip"``: clipped to the registration, then to the EDF, loudly.

    Seizure times are offsets from the list's "Registration start time"; an EDF whose header
    start time differs from it by more than 1 s is warned about (DataError under
    ``strict``). EDFs the list does not name have no labels and are skipped loudly.
    """

    def __init__(self, root, patients=None, channels=None, download: bool = False, **kw):
        self.root = Path(root)
        if download:
            raise DataError(self.root, _SIENA_HELP)
        if not self.root.is_dir():
            raise DataError(self.root, f"no such folder. {_SIENA_HELP}")
        if isinstance(channels, str) and channels != "standard":
            raise DataError(self.root, f"channels={channels!r}: pass None, 'standard' or a list")
        self._eeg_only = channels is None                 # read by _scan, before channels exist
        if channels is not None:
            channels = [_canon(c) for c in (SIENA_CHANNELS_19 if channels == "standard" else channels)]
        super().__init__(self.root, patients=patients, channels=channels, **kw)

    def _scan(self, patients, outside: str):
        if patients is None:
            dirs = sorted(p for p in self.root.iterdir() if p.is_dir() and _RE_PATIENT.match(p.name))
        else:
            dirs = [self.root / (f"PN{int(p):02d}" if str(p).isdigit() else str(p)) for p in patients]
        if not dirs:
            raise DataError(self.root, f"no PNxx/Seizures-list-PNxx.txt found. {_SIENA_HELP}")
        files, self.seizures, headers = [], {}, []
        for d in dirs:
            lst = d / f"Seizures-list-{d.name}.txt"
            if not lst.is_file():
                raise DataError(lst, "missing Siena seizure list: without it the patient's files "
                                     "have no labels (pass patients=[...] to leave it out)")
            entries, rate = _read(lst)
            spans = _spans(lst, entries, outside, self.skipped, self.strict)
            paths = {}
            for name in entries:
                path = _edf_for(d, name)
                if path is None:
                    raise DataError(lst, f"names {name} but {d / name} does not exist")
                if path in paths.values():
                    raise DataError(lst, f"names {path.name} twice under different spellings")
                paths[name] = path
            for path in sorted(p for p in d.iterdir() if p.suffix.lower() == ".edf"):
                if path not in paths.values():
                    skip(self.skipped, path, f"not named in {lst.name} (no seizure labels)",
                         self.strict)
            for name, path in paths.items():
                h = read_edf_header(path)
                h["fs"], h["n"], names = edf_channels(path, h)
                h["names"] = {}
                for label, k in names.items():
                    if label.startswith("EEG ") or not self._eeg_only:
                        h["names"].setdefault(_canon(label), k)
                if rate is not None and abs(h["fs"] - rate) > 1e-6:
                    raise DataError(path, f"sampled at {h['fs']:g} Hz but {lst.name} "
                                          f"declares {rate:g} Hz")
                t0 = _edf_start(path)
                if t0 is not None and min((t0 - entries[name]["start"]) % _DAY,
                                          (entries[name]["start"] - t0) % _DAY) > 1:
                    problem = (f"header starts at {_hms(t0)} but {lst.name} gives registration "
                               f"start {_hms(entries[name]['start'])}; seizure offsets use the list's")
                    if self.strict:
                        raise DataError(path, f"{problem} (strict=True)")
                    warnings.warn(f"{path}: {problem}", DataWarning, stacklevel=4)
                files.append(path)
                self.seizures[path] = self._inside(path, lst, spans[name], h["n"] / h["fs"], outside)
                headers.append(h)
        return files, headers
