"""WFDB records (``.hea`` + ``.dat``) and ``.atr`` annotations, read through ``wfdb`` and checked.

Symbols: T time samples, C channels kept, A annotations.

``wfdb`` accepts much that it cannot represent: a header whose sampling frequency is 0 is
read as 0 Hz (a ZeroDivisionError later), one whose frequency is ``-5`` or ``abc`` silently
becomes the default 250 Hz, and undefined annotation codes become NaN symbols. The readers
here check the header's record line themselves and every annotation against the signal.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bimsnn.data.errors import DataError

__all__ = ["read_wfdb", "read_wfdb_header", "read_annotations"]

try:  # pandas >= 3; wfdb 4.3 calls APIs that pandas 3 deprecates
    from pandas.errors import Pandas4Warning as _PD_DEPRECATION
except ImportError:  # pragma: no cover - pandas 2
    _PD_DEPRECATION = FutureWarning


@contextlib.contextmanager
def _wfdb():
    """Yield the ``wfdb`` module with its pandas-deprecation warnings silenced (not ours to fix)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", _PD_DEPRECATION)
        import wfdb

        yield wfdb


def read_wfdb_header(record: str | Path) -> dict:
    """The record line of ``<record>.hea``: ``name[/segments] n_sig [fs[/counter[(base)]] [sig_len ...]]``.

    Returns:
        dict(n_sig, fs (None where the header omits it: WFDB's default 250 Hz applies),
        sig_len (None where omitted)).
    Raises:
        DataError: no header, no record line, or a signal count, sampling
        frequency (≤ 0, not finite, not a number) or length that is not valid.
    """
    record = Path(record)
    hea = record.with_name(record.name + ".hea")
    if not hea.is_file():
        raise DataError(record, "WFDB record not found (no .hea header)")
    try:  # ISO-8859-1 as wfdb reads it (comments may hold accented names); fields are ASCII
        text = hea.read_bytes().decode("latin-1")
    except OSError as err:
        raise DataError(hea, f"cannot read header ({err.strerror or err})") from err
    lines = [ln.split("#")[0].split() for ln in text.splitlines()]
    fields = next((f for f in lines if f), None)
    if fields is None or len(fields) < 2:
        raise DataError(hea, "no record line ('<name> <n_sig> [<fs> [<sig_len>]]')")
    try:
        n_sig = int(fields[1])
    except ValueError:
        raise DataError(hea, f"signal count {fields[1]!r} is not an integer") from None
    fs = sig_len = None
    if len(fields) > 2:
        text = fields[2].split("/")[0]
        try:
            fs = float(text)
        except ValueError:
            raise DataError(hea, f"sampling frequency {fields[2]!r} is not a number") from None
        if not (math.isfinite(fs) and fs > 0):
            raise DataError(hea, f"sampling frequency {fs:g} Hz must be > 0")
    if len(fields) > 3:
        try:
            sig_len = int(fields[3])
        except ValueError:
            raise DataError(hea, f"signal length {fields[3]!r} is not an integer") from None
    if n_sig < 1 or (sig_len is not None and sig_len < 0):
        raise DataError(hea, f"{n_sig} signals of {sig_len} samples")
    return dict(n_sig=n_sig, fs=fs, sig_len=sig_len)


def read_wfdb(record: str | Path, channels: Sequence[int | str] | None = None):
    """Read one WFDB record in physical units.

    Args:
        record: path without extension, e.g. ``root/records100/00000/00001_lr``.
        channels: indices or signal names to keep (default: all).
    Returns:
        signal ``(T, C)`` float32 array and wfdb's fields dict (``fs``, ``sig_name``, ``units``...).
    Raises:
        DataError: no ``.hea`` header or a bad record line (:func:`read_wfdb_header`),
        unreadable or truncated record, no samples, unknown channel, or NaN samples (WFDB
        writes NaN as the format's invalid value, e.g. -32768 for format 16, and reads it back
        as NaN: a gap we refuse to pass on silently).
    """
    record = Path(record)
    read_wfdb_header(record)
    try:
        with _wfdb() as wfdb:
            sig, fields = wfdb.rdsamp(str(record))
    except Exception as err:  # wfdb raises bare ValueError / FileNotFoundError / struct errors
        raise DataError(record, f"unreadable WFDB record ({type(err).__name__}: {err}); is its "
                                "signal file complete and as the .hea describes?") from err
    if sig is None or len(sig) == 0:
        raise DataError(record, "no samples")
    names = list(fields["sig_name"])
    if channels is not None:
        bad = [c for c in channels if c not in names and c not in range(len(names))]
        if bad:
            raise DataError(record, f"no channel(s) {bad}; has {names}")
        idx = [names.index(c) if isinstance(c, str) else c for c in channels]
        sig = sig[:, idx]
        fields = {**fields, "sig_name": [names[i] for i in idx],
                  "units": [fields["units"][i] for i in idx], "n_sig": len(idx)}
    nan = np.isnan(sig)
    if nan.any():
        t, c = np.argwhere(nan)[0]
        raise DataError(record, f"{int(nan.sum())} NaN samples (first at sample {t}, "
                                f"signal {fields['sig_name'][c]!r})")
    return sig.astype(np.float32), fields


def read_annotations(record: str | Path, n_samples: int, extension: str = "atr"):
    """Annotations of ``<record>.<extension>``, checked against a signal of ``n_samples``.

    Returns:
        samples ``(A,)`` int64 (non-decreasing) and symbols, a list of A str.
    Raises:
        DataError: missing or unreadable file, an annotation code that WFDB does not define
        (random bytes decode to such codes), or an annotation outside ``[0, n_samples)``.
    """
    record = Path(record)
    path = record.with_name(f"{record.name}.{extension}")
    if not path.is_file():
        raise DataError(path, f"missing annotation file (record {record.name} has no .{extension})")
    try:
        with _wfdb() as wfdb:
            ann = wfdb.rdann(str(record), extension)
    except Exception as err:
        raise DataError(path, f"unreadable annotations ({type(err).__name__}: {err})") from err
    samples = np.asarray(ann.sample, np.int64)
    symbols = list(ann.symbol)
    undefined = [k for k, s in enumerate(symbols) if not isinstance(s, str)]
    if undefined:
        k = undefined[0]
        raise DataError(path, f"{len(undefined)} of {len(symbols)} annotations have codes WFDB "
                              f"does not define (first: #{k} at sample {samples[k]}); not an "
                              "annotation file, or a corrupt one")
    if len(samples) and (samples.min() < 0 or (np.diff(samples) < 0).any()):
        raise DataError(path, "annotation times are negative or not in order")
    past = np.flatnonzero(samples >= n_samples)
    if past.size:
        raise DataError(path, f"{past.size} annotations lie past the signal's end (first at "
                              f"sample {samples[past[0]]}, signal has {n_samples} samples)")
    return samples, symbols
