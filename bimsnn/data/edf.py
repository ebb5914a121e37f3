"""EDF/EDF+ header reading and checks (no samples are read; mne reads them later).

Symbols: S signals in the file, fs sampling rate (Hz).

EDF header layout (Kemp et al. 1992): 256 bytes of fixed fields, then per signal label 16,
transducer 80, physical dimension 8, physical min 8, physical max 8, digital min 8,
digital max 8, prefiltering 80, samples per record 8, reserved 32 (ASCII, space padded).
"""

from __future__ import annotations

from pathlib import Path

from bimsnn.data.errors import DataError

__all__ = ["read_edf_header", "edf_channels"]

_DUMMY = {"", "-", ".", "EDF ANNOTATIONS"}
_FIELDS = (("label", 16), ("transducer", 80), ("dimension", 8), ("pmin", 8), ("pmax", 8),
           ("dmin", 8), ("dmax", 8), ("prefilter", 80), ("spr", 8), ("reserved", 32))


def _signal_fields(sig: bytes, ns: int) -> dict[str, list[str]]:
    """Per-signal header fields, each a list of S stripped strings."""
    out, off = {}, 0
    for name, width in _FIELDS:
        out[name] = [sig[off + i * width:off + (i + 1) * width].decode("latin-1").strip()
                     for i in range(ns)]
        off += ns * width
    return out


def read_edf_header(path: str | Path) -> dict:
    """EDF header fields without reading samples; checks the file is complete and sane.

    Returns:
        dict(labels=[...] raw signal labels incl. duplicates and annotations,
        sfreq=[...] per signal, n_records, record_s, n_times=[...] per signal).
    Raises:
        DataError: not an EDF, corrupt header, record duration or samples per record ≤ 0
        (a sampling rate ≤ 0), no data records, digital min ≥ digital max (inverted or empty
        ADC range), physical min = physical max, or fewer bytes than the header declares.
        (A physical min > max is legal EDF: it encodes inverted polarity. Dummy "-" signals
        and the EDF+ annotation signal are not checked: no loader reads them as data.)
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(256)
            n_hdr, n_rec = int(head[184:192]), int(head[236:244])
            dur, ns = float(head[244:252]), int(head[252:256])
            if ns < 1 or n_hdr != 256 * (ns + 1):
                raise ValueError(f"{ns} signals but a {n_hdr}-byte header")
            sig = f.read(ns * 256)
        if len(sig) < ns * 256:
            raise ValueError("signal header cut short")
        fields = _signal_fields(sig, ns)
        spr = [int(s) for s in fields["spr"]]
        ranges = [tuple(float(fields[k][i]) for k in ("pmin", "pmax", "dmin", "dmax"))
                  for i in range(ns)]
    except (OSError, ValueError) as e:
        raise DataError(path, f"corrupt or non-EDF header ({e})") from e
    labels = fields["label"]
    if not dur > 0:
        raise DataError(path, f"data record duration {dur:g} s: the sampling rate would be ≤ 0")
    for lab, n, (pmin, pmax, dmin, dmax) in zip(labels, spr, ranges):
        if lab.upper() in _DUMMY:      # dummy "-" signals and EDF+ annotations are never read
            continue
        if n <= 0:
            raise DataError(path, f"signal {lab!r}: {n} samples per record (sampling rate ≤ 0)")
        if not dmin < dmax:
            raise DataError(path, f"signal {lab!r}: digital min {dmin:g} ≥ digital max {dmax:g} "
                                  "(the ADC range is empty or inverted)")
        if pmin == pmax:
            raise DataError(path, f"signal {lab!r}: physical min = physical max = {pmin:g} "
                                  "(no scale to physical units)")
    size, rec_bytes = path.stat().st_size, 2 * sum(spr)
    if n_rec < 0:                           # "-1": unknown, infer from the size as EDF allows
        n_rec = (size - n_hdr) // rec_bytes
    if n_rec == 0:
        raise DataError(path, "no data records (0 samples)")
    if size < n_hdr + n_rec * rec_bytes:
        raise DataError(path, f"truncated EDF: header declares {n_rec} records "
                              f"({n_hdr + n_rec * rec_bytes} bytes) but the file has {size} bytes")
    return dict(labels=labels, sfreq=[s / dur for s in spr], n_records=n_rec, record_s=dur,
                n_times=[s * n_rec for s in spr])


def edf_channels(path: Path, header: dict) -> tuple[float, int, dict[str, int]]:
    """(sampling rate, samples, {canonical name: mne channel index}) of the EEG signals.

    mne drops the EDF+ annotation signal and renames CHB-MIT's repeated T8-P8 to
    T8-P8-0 / T8-P8-1; both copies hold the same derivation, so the first stands for the
    name. Dummy "-"/"." signals are skipped. DataError if the signals' rates differ.
    """
    sig = [(j, lab.upper()) for j, lab in enumerate(header["labels"])
           if lab.upper() != "EDF ANNOTATIONS"]
    if not sig:
        raise DataError(path, "no data signals (only EDF+ annotations)")
    rates = {header["sfreq"][j] for j, _ in sig}
    if len(rates) != 1:
        raise DataError(path, f"data signals have different sampling rates {sorted(rates)}")
    names: dict[str, int] = {}
    for k, (_, name) in enumerate(sig):
        if name not in _DUMMY:
            names.setdefault(name, k)
    return rates.pop(), header["n_times"][sig[0][0]], names
