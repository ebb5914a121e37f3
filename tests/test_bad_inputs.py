"""Bad inputs, generated here in tmp_path (no binary fixtures): each gives one DataError that
names the file and the problem, or, where skipping is legitimate, a loud skip (issue 17).

Every case in ``CASES`` is ``(id, build, match)``: ``build(tmp, monkeypatch)`` writes the bad
input and returns ``(call, culprit)``; ``call()`` must raise :class:`DataError` whose message
matches ``match`` and contains ``culprit.name``.
"""

from __future__ import annotations

import datetime as dt
import io
import struct
import tarfile
import warnings
from pathlib import Path

import edfio
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from bimsnn.data import (
    CHBMIT,
    FSDD,
    MITBIH,
    PTBXL,
    AudioFolder,
    Bonn,
    DataError,
    DataWarning,
    LibriSpeech,
    SpeechCommands,
    read_ptbxl_database,
)
from bimsnn.data import librispeech as libri_mod
from bimsnn.data import speechcommands as sc_mod
from bimsnn.data.files import atomic_write, extract_tar, sha256sum

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import wfdb

LATIN1 = "caf\xe9".encode("latin-1")  # not UTF-8: byte 0xe9 starts an unfinished sequence


# --------------------------------------------------------------------------- writers
def _bonn(root, length=4097, bad=None, content=None):
    """Sets Z and S with two segments each; ``bad`` (e.g. "S/S001.txt") gets ``length`` or
    ``content`` bytes instead. Returns the bad path."""
    rng = np.random.default_rng(0)
    for s in ("Z", "S"):
        (root / s).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            n = length if f"{s}/{s}{i:03d}.txt" == bad else 4097
            np.savetxt(root / s / f"{s}{i:03d}.txt", rng.normal(0, 50, n).round(), fmt="%d")
    path = root / (bad or "S/S001.txt")
    if content is not None:
        path.write_bytes(content)
    return path


def _edf(path, seconds=8, channels=("FP1-F7", "T8-P8"), fs=(256, 256)):
    rng = np.random.default_rng(1)
    sig = [edfio.EdfSignal(rng.normal(0, 20, int(f * seconds)), f, label=c,
                           physical_range=(-800, 800)) for c, f in zip(channels, fs)]
    edfio.Edf(sig, starttime=dt.time(10, 0)).write(path)
    return path


def _patch_edf(path, field: str, value: str, signal: int = 0):
    """Overwrite one EDF header field (fixed part or per-signal) with ``value``."""
    fixed = {"n_records": (236, 8), "duration": (244, 8)}
    widths = [("label", 16), ("transducer", 80), ("dim", 8), ("pmin", 8), ("pmax", 8),
              ("dmin", 8), ("dmax", 8), ("prefilter", 80), ("spr", 8)]
    data = bytearray(path.read_bytes())
    ns = int(data[252:256])
    if field in fixed:
        off, w = fixed[field]
    else:
        off = 256 + sum(w * ns for name, w in widths[:[n for n, _ in widths].index(field)])
        w = dict(widths)[field]
        off += signal * w
    data[off:off + w] = value.ljust(w).encode()
    path.write_bytes(bytes(data))
    return path


def _chb(root, seizures=((2, 5),), seconds=8, patient="chb01", head="Data Sampling Rate: 256 Hz",
         extra="", **edf):
    d = root / patient
    d.mkdir(parents=True, exist_ok=True)
    _edf(d / f"{patient}_01.edf", seconds, **edf)
    lines = [head, "", f"File Name: {patient}_01.edf", f"Number of Seizures in File: {len(seizures)}"]
    for s, e in seizures:
        lines += [f"Seizure Start Time: {s} seconds", f"Seizure End Time: {e} seconds"]
    (d / f"{patient}-summary.txt").write_text("\n".join(lines) + "\n" + extra)
    return d


def _record(d, name="r1", fs=360, n=3600, samples=(500, 1500, 2500, 3000), symbols="NNVN", nsig=1):
    """A WFDB record (+ .atr unless ``symbols`` is None); returns its path without extension."""
    d.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(0).normal(0, 0.3, (n, nsig))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wfdb.wrsamp(name, fs=fs, units=["mV"] * nsig, sig_name=[f"s{i}" for i in range(nsig)],
                    p_signal=x, fmt=["16"] * nsig, adc_gain=[200.0] * nsig, baseline=[0] * nsig,
                    write_dir=str(d))
        if symbols is not None:
            wfdb.wrann(name, "atr", sample=np.array(samples), symbol=list(symbols), write_dir=str(d))
    return d / name


def _header_fs(record, fs: str):
    hea = record.with_name(record.name + ".hea")
    first, *rest = hea.read_text().splitlines()
    f = first.split()
    f[2] = fs
    hea.write_text("\n".join([" ".join(f), *rest]) + "\n")
    return hea


def _raw_atr(record, codes_deltas, tail=b"\0\0"):
    """MIT-format .atr: 16-bit words, 6-bit code over a 10-bit time increment."""
    path = record.with_name(record.name + ".atr")
    path.write_bytes(b"".join(struct.pack("<H", (c << 10) | t) for c, t in codes_deltas) + tail)
    return path


_STMTS = "code,diagnostic,form,rhythm,diagnostic_class,diagnostic_subclass\n" \
         "NORM,1,,,NORM,NORM\nIMI,1,,,MI,IMI\nSR,,,1,,\n"


def _ptbxl(root, cells=None, text=None, record_kw=None):
    """Three records in folds 1-3 at 100 Hz; ``cells`` {(row, column): value} overrides the
    CSV, ``text`` replaces it. Returns the database path."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "scp_statements.csv").write_text(_STMTS)
    rows = [{"ecg_id": i, "patient_id": float(100 + i), "scp_codes": "{'NORM': 100.0, 'SR': 0.0}",
             "strat_fold": i, "filename_lr": f"records100/00000/{i:05d}_lr",
             "filename_hr": f"records500/00000/{i:05d}_hr"} for i in (1, 2, 3)]
    db = pd.DataFrame(rows)
    for (r, col), v in (cells or {}).items():
        db[col] = db[col].astype(object)
        db.at[r, col] = v
    path = root / "ptbxl_database.csv"
    if text is None:
        db.to_csv(path, index=False)
    else:
        path.write_bytes(text)
    kw = dict(fs=100, n=1000, nsig=12, samples=(), symbols=None) | (record_kw or {})
    for i in (1, 2, 3):
        _record(root / "records100" / "00000", f"{i:05d}_lr", **kw)
    return path


def _wav(path, n, rate=8000, channels=1, value=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(0).normal(0, 0.1, (n, channels)).astype(np.float32)
    if value is not None:
        x[n // 2] = value
    sf.write(path, x, rate, subtype="FLOAT" if value is not None else "PCM_16")
    return path


def _sc(root, validation="yes/a_nohash_0.wav\n", testing="no/b_nohash_0.wav\n"):
    for word, who in (("yes", "a"), ("no", "b")):
        _wav(root / word / f"{who}_nohash_0.wav", 4000, 16000)
    for name, text in (("validation", validation), ("testing", testing)):
        if text is not None:
            (root / f"{name}_list.txt").write_bytes(text if isinstance(text, bytes) else text.encode())
    return root


def _libri(root, lines=None, n=4000, extra_audio=()):
    d = root / "LibriSpeech" / "dev-clean" / "84" / "121123"
    d.mkdir(parents=True, exist_ok=True)
    for utt in ("0000", "0001", *extra_audio):
        _wav(d / f"84-121123-{utt}.flac", n, 16000)
    text = lines if lines is not None else b"84-121123-0000 HELLO\n84-121123-0001 WORLD\n"
    (d / "84-121123.trans.txt").write_bytes(text)
    return d / "84-121123.trans.txt"


def _tar(path, members):
    """Write a .tar.gz of ``(name, kind, payload)``: kind "file" (bytes), "sym"/"link" (target)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                info.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
                info.linkname = payload
                tar.addfile(info)
    return path


def _sc_archive(tmp, mp, members):
    """A crafted Speech Commands archive in torchaudio's place, its checksum made 'published'."""
    archive = _tar(tmp / "SpeechCommands" / "speech_commands_v0.02.tar.gz", members)
    mp.setattr(sc_mod, "SC_SHA256", sha256sum(archive))
    return lambda: SpeechCommands(tmp, download=True), archive


_GOOD_SC = [("validation_list.txt", "file", b""), ("testing_list.txt", "file", b"")]

# --------------------------------------------------------------------------- the cases
# (id, build(tmp, monkeypatch) -> (call, culprit), regex the message must match)
CASES = [
    # --- segment / record length against the specification
    ("bonn-short-100", lambda t, m: (lambda: Bonn(t, sets=("Z", "S")), _bonn(t, 100, "S/S001.txt")),
     "100 samples; Bonn segments hold 4097"),
    ("bonn-long-5000", lambda t, m: (lambda: Bonn(t, sets=("Z", "S")), _bonn(t, 5000, "Z/Z000.txt")), "5000 samples"),
    ("bonn-one-sample", lambda t, m: (lambda: Bonn(t, sets=("Z", "S")), _bonn(t, 1, "Z/Z001.txt")), "1 samples"),
    ("bonn-empty", lambda t, m: (lambda: Bonn(t, sets=("Z", "S")), _bonn(t, content=b"")), "empty segment"),
    ("bonn-text", lambda t, m: (lambda: Bonn(t, sets=("Z", "S")), _bonn(t, content=b"1\n2\nabc\n")),
     "unreadable segment"),
    ("bonn-nan", lambda t, m: (lambda: Bonn(t, sets=("Z", "S")), _bonn(t, content=b"1\nnan\n3\n")), "NaN"),
    ("ptbxl-record-500-samples", lambda t, m: (
        lambda: PTBXL(t, folds=[1])[0], _ptbxl(t, record_kw={"n": 500}).parent / "records100"
        / "00000" / "00001_lr"), "500 samples; PTB-XL records hold 10 s = 1000"),
    ("ptbxl-record-11-leads", lambda t, m: (
        lambda: PTBXL(t, folds=[1])[0], _ptbxl(t, record_kw={"nsig": 11}).parent / "records100"
        / "00000" / "00001_lr"), "11 leads, expected 12"),
    ("ptbxl-record-250-hz", lambda t, m: (
        lambda: PTBXL(t, folds=[1])[0], _ptbxl(t, record_kw={"fs": 250, "n": 2500}).parent
        / "records100" / "00000" / "00001_lr"), "sampled at 250"),
    ("edf-truncated", lambda t, m: (lambda: CHBMIT(t), _trunc(_chb(t) / "chb01_01.edf")),
     "truncated EDF"),
    ("edf-zero-records", lambda t, m: (lambda: CHBMIT(t),
                                       _patch_edf(_chb(t) / "chb01_01.edf", "n_records", "0")),
     "no data records"),
    ("wfdb-truncated-dat", lambda t, m: (
        lambda: MITBIH(t), _trunc(_record(t).with_suffix(".dat")).with_suffix("")),
     "unreadable WFDB record"),
    ("audio-empty", lambda t, m: (lambda: FSDD(t)[0], _wav(t / "0_x_0.wav", 0)), "empty audio"),
    # --- annotations inside the signal
    ("chbmit-seizure-past-end", lambda t, m: (lambda: CHBMIT(t), _chb(t, ((5, 12),)) / "chb01_01.edf"),
     "5–12 s past the end of this 8 s recording"),
    ("chbmit-seizure-outside-span", lambda t, m: (
        lambda: CHBMIT(t), _chb(t, ((417, 532),)) / "chb01_01.edf"), "past the end"),
    ("chbmit-seizure-end-before-start", lambda t, m: (
        lambda: CHBMIT(t), _chb(t, ((6, 3),)) / "chb01-summary.txt"), "end 3.0 <= start 6.0"),
    ("chbmit-seizures-overlap", lambda t, m: (
        lambda: CHBMIT(t), _chb(t, ((1, 5), (4, 6))) / "chb01-summary.txt"), "overlaps"),
    ("mitbih-annotation-past-end", lambda t, m: (
        lambda: MITBIH(t), _record(t, samples=(500, 1500, 3599, 5000)).with_suffix(".atr")),
     "1 annotations lie past the signal's end .first at sample 5000, signal has 3600"),
    ("mitbih-annotations-out-of-order", lambda t, m: (
        lambda: MITBIH(t), _raw_atr(_record(t, symbols=None), [(1, 1000)], tail=struct.pack(
            "<HHH", 59 << 10, 0xFFFF, (-800) & 0xFFFF) + struct.pack("<H", 1 << 10) + b"\0\0")),
     "not in order"),
    # --- summaries and lists that describe the files beside them
    ("chbmit-missing-summary", lambda t, m: (
        lambda: CHBMIT(t), _rm(_chb(_chb(t).parent, patient="chb02") / "chb02-summary.txt")),
     "missing CHB-MIT summary"),
    ("chbmit-summary-names-absent-edf", lambda t, m: (
        lambda: CHBMIT(t), _chb(t, extra="File Name: chb01_07.edf\n") / "chb01-summary.txt"),
     "chb01_07.edf but .* does not exist"),
    ("chbmit-summary-rate-512", lambda t, m: (
        lambda: CHBMIT(t), _chb(t, head="Data Sampling Rate: 512 Hz") / "chb01_01.edf"),
     "256 Hz but chb01-summary.txt declares 512 Hz"),
    ("chbmit-summary-file-twice", lambda t, m: (
        lambda: CHBMIT(t), _chb(t, extra="File Name: chb01_01.edf\n") / "chb01-summary.txt"),
     "listed twice"),
    ("chbmit-summary-declares-2", lambda t, m: (lambda: CHBMIT(t), _write(
        _chb(t) / "chb01-summary.txt", "File Name: chb01_01.edf\nNumber of Seizures in File: 2\n")),
     "declares 2 seizures but lists 0"),
    ("chbmit-summary-no-file-names", lambda t, m: (
        lambda: CHBMIT(t), _write(_chb(t) / "chb01-summary.txt", "Data Sampling Rate: 256 Hz\n")),
     "not a CHB-MIT summary"),
    ("chbmit-summary-path-in-name", lambda t, m: (lambda: CHBMIT(t), _write(
        _chb(t) / "chb01-summary.txt", "File Name: ../chb02/chb02_01.edf\n")), "is not an .edf name"),
    ("chbmit-summary-malformed-seizure", lambda t, m: (lambda: CHBMIT(t), _write(
        _chb(t) / "chb01-summary.txt", "File Name: chb01_01.edf\nSeizure Start Time: soon\n")),
     "malformed seizure line"),
    ("sc-file-in-both-lists", lambda t, m: (
        lambda: SpeechCommands(t), _sc(t, testing="yes/a_nohash_0.wav\n") / "testing_list.txt"),
     "1 files also in validation_list.txt"),
    ("sc-list-absolute-path", lambda t, m: (
        lambda: SpeechCommands(t), _sc(t, validation="/etc/passwd\n") / "validation_list.txt"),
     "line 1: '/etc/passwd' is not '<word>/<file>.wav'"),
    ("sc-list-dotdot", lambda t, m: (
        lambda: SpeechCommands(t), _sc(t, testing="../x/y.wav\n") / "testing_list.txt"),
     "is not '<word>/<file>.wav'"),
    ("sc-list-missing", lambda t, m: (
        lambda: SpeechCommands(t), _sc(t, testing=None) / "testing_list.txt"), "split list not found"),
    ("libri-other-chapter", lambda t, m: (lambda: LibriSpeech(t, url="dev-clean"), _libri(
        t, b"84-121123-0000 A\n84-999-0001 B\n")), "line 2: utterance 84-999-0001 is not of chapter 84-121123"),
    ("libri-duplicate-id", lambda t, m: (lambda: LibriSpeech(t, url="dev-clean"), _libri(
        t, b"84-121123-0000 A\n84-121123-0000 B\n")), "listed twice"),
    ("libri-audio-absent", lambda t, m: (lambda: LibriSpeech(t, url="dev-clean"), _libri(
        t, b"84-121123-0000 A\n84-121123-0001 B\n84-121123-0002 C\n").with_name(
        "84-121123-0002.flac")), "line 3 not found"),
    ("libri-bad-id", lambda t, m: (lambda: LibriSpeech(t, url="dev-clean"), _libri(
        t, b"84-121123-0000 A\nhello world\n")), "line 2: bad utterance id 'hello'"),
    ("libri-empty-transcript", lambda t, m: (lambda: LibriSpeech(t, url="dev-clean"), _libri(
        t, b"84-121123-0000\n")), "line 1: utterance 84-121123-0000 has no transcript"),
    ("ptbxl-statements-absent", lambda t, m: (
        lambda: PTBXL(t), _rm(_ptbxl(t).with_name("scp_statements.csv"))), "not found"),
    # --- digital and physical ranges
    ("edf-digital-min-gt-max", lambda t, m: (lambda: CHBMIT(t), _patch_edf(
        _chb(t) / "chb01_01.edf", "dmin", "40000", 1)),
     "'T8-P8': digital min 40000 ≥ digital max 32767"),
    ("edf-digital-min-eq-max", lambda t, m: (lambda: CHBMIT(t), _patch_edf(
        _patch_edf(_chb(t) / "chb01_01.edf", "dmin", "100"), "dmax", "100")), "digital min 100 ≥"),
    ("edf-physical-min-eq-max", lambda t, m: (lambda: CHBMIT(t), _patch_edf(
        _chb(t) / "chb01_01.edf", "pmin", "800")), "physical min = physical max = 800"),
    ("edf-digital-min-not-a-number", lambda t, m: (lambda: CHBMIT(t), _patch_edf(
        _chb(t) / "chb01_01.edf", "dmin", "low")), "corrupt or non-EDF header"),
    ("edf-mixed-rates", lambda t, m: (
        lambda: CHBMIT(t), _chb(t, fs=(256, 128)) / "chb01_01.edf"), "different sampling rates"),
    ("edf-not-edf", lambda t, m: (lambda: CHBMIT(t), _write(_chb(t) / "chb01_01.edf", "x" * 600)),
     "corrupt or non-EDF header"),
    # --- undefined annotation codes
    ("atr-random-bytes", lambda t, m: (lambda: MITBIH(t), _randbytes(
        _record(t, symbols=None).with_suffix(".atr"))), "have codes WFDB does not define"),
    ("atr-every-code-unknown", lambda t, m: (lambda: MITBIH(t), _raw_atr(
        _record(t, symbols=None), [(50, 500), (50, 700), (50, 900)])), "3 of 3 annotations have codes"),
    ("atr-one-code-unknown", lambda t, m: (lambda: MITBIH(t), _raw_atr(
        _record(t, symbols=None), [(1, 500), (1, 700), (17, 900), (1, 400)])),
     "1 of 4 annotations .*first: #2 at sample 2100"),
    ("scp-statements-flag-yes", lambda t, m: (lambda: PTBXL(t), _write(
        _ptbxl(t).with_name("scp_statements.csv"), _STMTS.replace("IMI,1", "IMI,yes"))),
     "code IMI: diagnostic flag 'yes' is not 1, 0 or empty"),
    # --- missing annotation files
    ("mitbih-named-record-without-atr", lambda t, m: (
        lambda: MITBIH(t, records=["r1"]), _record(t, symbols=None).with_suffix(".atr")),
     "missing annotation file"),
    ("mitbih-folder-without-any-atr", lambda t, m: (
        lambda: _quiet(MITBIH, t / "ecg"), _record(t / "ecg", symbols=None).parent), "no .atr annotation files"),
    ("mitbih-atr-without-header", lambda t, m: (
        lambda: MITBIH(t), _rm(_record(t).with_suffix(".hea")).with_suffix("")), "no .hea header"),
    ("chbmit-named-patient-absent", lambda t, m: (
        lambda: CHBMIT(t, patients=[1, 2]), _chb(t).parent / "chb02" / "chb02-summary.txt"),
     "missing CHB-MIT summary"),
    # --- empty results after filtering
    ("mitbih-zero-beats", lambda t, m: (lambda: _quiet(MITBIH, t), _record(t, symbols="~~+~").parent),
     "0 beats of classes"),
    ("mitbih-zero-beats-of-class", lambda t, m: (
        lambda: _quiet(MITBIH, t, classes={"V": "V"}), _record(t, symbols="NNNN").parent),
     r"0 beats of classes \['V'\]"),
    ("ptbxl-strat-fold-text", lambda t, m: (
        lambda: PTBXL(t), _ptbxl(t, {(1, "strat_fold"): "x"})), "ecg_id 2: strat_fold 'x' is not an integer"),
    ("ptbxl-strat-fold-11", lambda t, m: (
        lambda: PTBXL(t), _ptbxl(t, {(0, "strat_fold"): 11})), "ecg_id 1: strat_fold 11"),
    ("ptbxl-zero-records-in-folds", lambda t, m: (lambda: PTBXL(t, folds="test"), _ptbxl(t)),
     r"0 records with a 'superdiagnostic' label in folds \(10,\)"),
    ("chbmit-zero-ictal-windows", lambda t, m: (
        lambda: _quiet(CHBMIT, t, window_s=4.0), _chb(t, ((2, 3),)) / "chb01_01.edf"),
     "1 seizure.s. listed .in chb01/chb01_01.edf. but 0 ictal"),
    ("sc-no-items", lambda t, m: (lambda: SpeechCommands(t / "sc_root", subset="testing"), _sc(
        t / "sc_root", testing="")), "no .wav files in word folders for subset 'testing'"),
    ("fsdd-no-wavs", lambda t, m: (lambda: FSDD(t / "fsdd_root"), _mkdir(t / "fsdd_root")),
     "no FSDD .wav files"),
    ("audiofolder-empty", lambda t, m: (lambda: AudioFolder(t / "audio_root"),
                                        _mkdir(t / "audio_root" / "cls").parent),
     "no .wav/.flac/.ogg files"),
    # --- text that is not UTF-8 (the encoding is named)
    ("sc-list-latin1", lambda t, m: (lambda: SpeechCommands(t), _sc(
        t, validation=b"yes/" + LATIN1 + b".wav\n") / "validation_list.txt"),
     "split list is not UTF-8: byte 0xe9 at offset 7 .line 1."),
    ("libri-transcript-latin1", lambda t, m: (lambda: LibriSpeech(t, url="dev-clean"), _libri(
        t, b"84-121123-0000 " + LATIN1 + b"\n84-121123-0001 B\n")), "transcript is not UTF-8"),
    ("chbmit-summary-latin1", lambda t, m: (lambda: CHBMIT(t), _write(
        _chb(t) / "chb01-summary.txt", b"Patient: " + LATIN1 + b"\nFile Name: chb01_01.edf\n")),
     "CHB-MIT summary is not UTF-8: byte 0xe9"),
    ("ptbxl-database-latin1", lambda t, m: (lambda: read_ptbxl_database(t / "ptbxl_database.csv"),
                                            _ptbxl(t, text=b"ecg_id,report\n1," + LATIN1 + b"\n")),
     "PTB-XL database is not UTF-8"),
    ("ptbxl-statements-latin1", lambda t, m: (lambda: PTBXL(t), _write(
        _ptbxl(t).with_name("scp_statements.csv"), _STMTS.encode() + LATIN1)), "statements is not UTF-8"),
    ("bonn-latin1", lambda t, m: (lambda: Bonn(t, sets=("Z", "S")), _bonn(t, content=b"1\n" + LATIN1)),
     "Bonn segment is not UTF-8"),
    # --- audio shorter than one analysis window, and other bad audio
    ("fsdd-10-samples", lambda t, m: (lambda: FSDD(t)[0], _wav(t / "0_x_0.wav", 10)),
     "10 samples .after resampling. is shorter than one 200-sample analysis window"),
    ("audiofolder-short", lambda t, m: (lambda: AudioFolder(t)[0], _wav(t / "c" / "a.wav", 100, 16000)),
     "shorter than one 400-sample"),
    ("libri-short-utterance", lambda t, m: (
        lambda: LibriSpeech(t, url="dev-clean")[0], _libri(t, n=50).with_name("84-121123-0000.flac")),
     "50 samples"),
    ("audio-stereo", lambda t, m: (lambda: FSDD(t)[0], _wav(t / "0_x_0.wav", 800, channels=2)),
     "2 channels; mono audio required"),
    ("audio-garbage", lambda t, m: (lambda: FSDD(t)[0], _write(t / "0_x_0.wav", "RIFF junk" * 9)),
     "unreadable audio"),
    ("audio-nan-sample", lambda t, m: (lambda: FSDD(t)[0], _wav(t / "0_x_0.wav", 800, value=np.nan)),
     "non-finite samples"),
    # --- sampling rate <= 0 (or not a number)
    ("wfdb-fs-0", lambda t, m: (lambda: MITBIH(t), _header_fs(_record(t), "0")), "0 Hz must be > 0"),
    ("wfdb-fs-negative", lambda t, m: (lambda: MITBIH(t), _header_fs(_record(t), "-5")), "-5 Hz must be > 0"),
    ("wfdb-fs-text", lambda t, m: (lambda: MITBIH(t), _header_fs(_record(t), "abc")),
     "sampling frequency 'abc' is not a number"),
    ("wfdb-fs-fraction", lambda t, m: (lambda: MITBIH(t), _header_fs(_record(t), "360.5").with_suffix("")),
     "360.5 Hz: need a positive integer"),
    ("ptbxl-header-fs-0", lambda t, m: (lambda: PTBXL(t, folds=[2])[0], _header_fs(
        _ptbxl(t).parent / "records100" / "00000" / "00002_lr", "0")), "must be > 0"),
    ("edf-record-duration-0", lambda t, m: (
        lambda: CHBMIT(t), _patch_edf(_chb(t) / "chb01_01.edf", "duration", "0")), "duration 0 s"),
    ("edf-samples-per-record-0", lambda t, m: (lambda: CHBMIT(t), _patch_edf(
        _chb(t) / "chb01_01.edf", "spr", "0", 1)), "'T8-P8': 0 samples per record"),
    ("chbmit-summary-rate-0", lambda t, m: (
        lambda: CHBMIT(t), _chb(t, head="Data Sampling Rate: 0 Hz") / "chb01-summary.txt"),
     "sampling rate 0 Hz must be > 0"),
    ("wav-rate-0", lambda t, m: (lambda: FSDD(t)[0], _wav_rate0(t / "0_x_0.wav")), "unreadable audio"),
    # --- malformed PTB-XL fields
    ("ptbxl-scp-deep-nesting", lambda t, m: (
        lambda: PTBXL(t), _ptbxl(t, {(0, "scp_codes"): "[" * 100_000})),
     r"ecg_id 1: unparsable scp_codes '\[\[\[.*100002 characters"),
    ("ptbxl-scp-unhashable-key", lambda t, m: (
        lambda: PTBXL(t), _ptbxl(t, {(2, "scp_codes"): "{[1]: 2}"})), "ecg_id 3: unparsable"),
    ("ptbxl-scp-empty-cell", lambda t, m: (
        lambda: PTBXL(t), _ptbxl(t, {(1, "scp_codes"): None})), "ecg_id 2: unparsable scp_codes nan"),
    ("ptbxl-scp-text-likelihood", lambda t, m: (
        lambda: PTBXL(t), _ptbxl(t, {(0, "scp_codes"): "{'NORM': 'high'}"})),
     "'NORM': 'high' is not 'CODE': likelihood in 0..100"),
    ("ptbxl-scp-expression", lambda t, m: (
        lambda: PTBXL(t), _ptbxl(t, {(0, "scp_codes"): "__import__('os').getcwd()"})),
     "ecg_id 1: unparsable"),
    ("ptbxl-csv-extra-fields", lambda t, m: (lambda: PTBXL(t), _ptbxl(
        t, text=b"ecg_id,scp_codes\n1,a\n2,b,c,d\n")), "not a PTB-XL database CSV .ParserError"),
    ("ptbxl-csv-empty", lambda t, m: (lambda: PTBXL(t), _ptbxl(t, text=b"")),
     "not a PTB-XL database CSV .EmptyDataError"),
    ("ptbxl-missing-column", lambda t, m: (lambda: PTBXL(t), _ptbxl(
        t, text=b"ecg_id,scp_codes\n1,\"{'NORM': 100}\"\n")), "missing columns .'strat_fold'"),
    ("ptbxl-duplicate-ecg-id", lambda t, m: (
        lambda: PTBXL(t), _ptbxl(t, {(1, "ecg_id"): 1})), r"ecg_id must be unique integers \(\[1\]\)"),
    ("ptbxl-filename-dotdot", lambda t, m: (
        lambda: PTBXL(t), _ptbxl(t, {(0, "filename_lr"): "../../etc/x"})),
     "filename_lr '../../etc/x' is not a relative record path"),
    ("ptbxl-filename-empty", lambda t, m: (
        lambda: PTBXL(t), _ptbxl(t, {(2, "filename_hr"): None})), "ecg_id 3: filename_hr nan"),
    ("ptbxl-patient-id-text", lambda t, m: (
        lambda: PTBXL(t), _ptbxl(t, {(0, "patient_id"): "anon"})), "patient_id 'anon' is not a number"),
    # --- archives (download=True), crafted locally: nothing leaves the dataset folder
    ("tar-dotdot-member", lambda t, m: _sc_archive(t, m, [*_GOOD_SC, ("../../evil.txt", "file", b"x")]),
     "unsafe member '../../evil.txt' refused"),
    ("tar-inner-dotdot-member", lambda t, m: _sc_archive(t, m, [("yes/../../evil.txt", "file", b"")]),
     "unsafe member 'yes/../../evil.txt'.*outside the destination"),
    ("tar-symlink-out", lambda t, m: _sc_archive(t, m, [("yes", "sym", "/etc")]),
     "unsafe member 'yes'"),
    ("tar-hardlink-out", lambda t, m: _sc_archive(t, m, [("h.wav", "link", "../../../etc/passwd")]),
     "unsafe member 'h.wav'"),
    ("sc-archive-bad-checksum", lambda t, m: (lambda: SpeechCommands(t, download=True), _tar(
        t / "SpeechCommands" / "speech_commands_v0.02.tar.gz", _GOOD_SC)),
     "SHA-256 [0-9a-f]{64} differs from the published af14739e"),
    ("libri-archive-bad-checksum", lambda t, m: (lambda: LibriSpeech(t, "dev-clean", download=True),
                                                 _tar(t / "dev-clean.tar.gz", _GOOD_SC)),
     "differs from the published 76f87d09"),
    ("libri-archive-without-folder", lambda t, m: _libri_archive(t, m, _GOOD_SC),
     "has no folder 'LibriSpeech/dev-clean'"),
    ("download-fails", lambda t, m: (lambda: LibriSpeech(t, "dev-other", download=True),
                                     _offline(m, t / "dev-other.tar.gz")),
     "download from https://www.openslr.org/resources/12/dev-other.tar.gz failed"),
    ("tar-not-an-archive", lambda t, m: (lambda: extract_tar(t / "x.tar.gz", t / "out"),
                                         _write(t / "x.tar.gz", b"not a tar")), "unreadable archive"),
]


def _trunc(path, keep=-1000):
    path.write_bytes(path.read_bytes()[:keep])
    return path


def _write(path, content):
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def _rm(path):
    path.unlink()
    return path


def _mkdir(path):
    path.mkdir(parents=True)
    return path


def _randbytes(path):
    path.write_bytes(np.random.default_rng(0).bytes(64))
    return path


def _wav_rate0(path):
    data = bytearray(_wav(path, 800).read_bytes())
    data[24:28] = struct.pack("<I", 0)                      # WAV fmt chunk: sample rate
    return _write(path, bytes(data))


def _libri_archive(tmp, mp, members):
    archive = _tar(tmp / "dev-clean.tar.gz", members)
    mp.setitem(libri_mod.LIBRISPEECH_SHA256, "dev-clean", sha256sum(archive))
    return lambda: LibriSpeech(tmp, "dev-clean", download=True), archive


def _offline(mp, archive):
    import urllib.error

    import torch.hub

    def no_network(url, dst, **kw):
        raise urllib.error.URLError("no network here")

    mp.setattr(torch.hub, "download_url_to_file", no_network)
    return archive


def _quiet(cls, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return cls(*args, **kw)


def test_at_least_60_cases_with_unique_ids():
    ids = [c[0] for c in CASES]
    assert len(ids) >= 60 and len(set(ids)) == len(ids)


@pytest.mark.parametrize("build, match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_names_file_and_problem(tmp_path, monkeypatch, build, match):
    call, culprit = build(tmp_path, monkeypatch)
    with pytest.raises(DataError, match=match) as err:
        call()
    assert culprit.name in str(err.value), (culprit, str(err.value))
    assert "\n" not in str(err.value) and len(str(err.value)) < 600   # one line
    assert not list(tmp_path.rglob("*evil*")) and not Path("/tmp/bimsnn-evil.txt").exists()


# --------------------------------------------------------------------------- skipped loudly
def test_mitbih_skips_records_without_requested_beats_loudly(tmp_path):
    _record(tmp_path, "r1", symbols="NNNN")
    _record(tmp_path, "r2", symbols="NVNV")
    _record(tmp_path, "r3", symbols=None)                  # a .hea record without .atr
    with pytest.warns(DataWarning) as caught:
        ds = MITBIH(tmp_path, classes={"V": "V"})
    assert ds.records == ["r2"] and len(ds) == 2 and ds[1][2]["record"] == "r2"
    assert [(p.name, why.split(" (")[0]) for p, why in ds.skipped] == [
        ("r3", "no .atr annotation file"), ("r1", "no beat of classes ['V']")]
    assert len(caught) == 2                                # one warning per file
    with pytest.raises(DataError, match="r3: no .atr annotation file .strict=True"):
        MITBIH(tmp_path, classes={"V": "V"}, strict=True)
    with pytest.raises(DataError, match=r"r1: no beat of classes \['V'\]"):
        MITBIH(tmp_path, records=["r1", "r2"], classes={"V": "V"}, strict=True)


def test_chbmit_skips_unlisted_and_short_files_loudly(tmp_path):
    d = _chb(tmp_path, ((2, 5),))
    _edf(d / "chb01_02.edf")                               # not in the summary: no labels
    _chb(tmp_path, (), seconds=3, patient="chb02")         # shorter than one 4 s window
    _chb(tmp_path, (), patient="chb03", channels=("FP1-F7", "F7-T7"))
    with pytest.warns(DataWarning) as caught:
        ds = CHBMIT(tmp_path, window_s=4.0, channels=["FP1-F7", "T8-P8"], missing_channels="skip")
    assert [(p.name, why) for p, why in ds.skipped] == [
        ("chb01_02.edf", "not listed in chb01-summary.txt (no seizure labels)"),
        ("chb02_01.edf", "3 s is shorter than one 4 s window"),
        ("chb03_01.edf", "lacks channels ['T8-P8']")]
    assert len(caught) == 3 and ds.files == [d / "chb01_01.edf"] and ds.labels.tolist() == [1, 0]
    with pytest.raises(DataError, match="chb01_02.edf: not listed in chb01-summary.txt .*strict"):
        CHBMIT(tmp_path, window_s=4.0, strict=True)
    with pytest.raises(DataError, match="chb03_01.edf: lacks channels"):
        CHBMIT(tmp_path, patients=[3], channels=["FP1-F7", "T8-P8"], missing_channels="skip",
               strict=True)


def test_chbmit_clips_seizures_outside_the_file_only_when_asked(tmp_path):
    _chb(tmp_path, ((6, 12), (20, 30)))
    with pytest.warns(DataWarning, match="6–12 s, 20–30 s past the end of this 8 s recording"):
        ds = CHBMIT(tmp_path, window_s=1.0, seizures_outside="clip")
    path = tmp_path / "chb01" / "chb01_01.edf"
    assert ds.seizures[path] == [(6.0, 8.0)] and ds.labels.tolist() == [0] * 6 + [1, 1]
    assert [p for p, _ in ds.skipped] == [path]
    with pytest.raises(DataError, match="strict=True"):
        CHBMIT(tmp_path, window_s=1.0, seizures_outside="clip", strict=True)


def test_chbmit_warns_about_a_seizure_no_window_catches(tmp_path):
    _chb(tmp_path, ((1, 6), (7, 7.5)))
    with pytest.warns(DataWarning, match="seizure 7–7.5 s: no window overlaps it for ≥ 2 s"):
        ds = CHBMIT(tmp_path, window_s=4.0)
    assert ds.labels.tolist() == [1, 1] and ds.skipped == []   # kept: metrics count it missed
    with pytest.raises(DataError, match="chb01_01.edf: seizure 7–7.5 s"):
        CHBMIT(tmp_path, window_s=4.0, strict=True)


def test_speech_commands_and_librispeech_skip_loudly(tmp_path):
    _sc(tmp_path / "sc", validation="yes/a_nohash_0.wav\nyes/gone_nohash_0.wav\n")
    with pytest.warns(DataWarning, match="1 of 2 listed files are missing .e.g. yes/gone_nohash_0"):
        ds = SpeechCommands(tmp_path / "sc", subset="validation")
    assert len(ds) == 1 and [p.name for p, _ in ds.skipped] == ["validation_list.txt"]
    with pytest.raises(DataError, match="validation_list.txt: 1 of 2 .*strict=True"):
        SpeechCommands(tmp_path / "sc", strict=True)
    trans = _libri(tmp_path / "ls", extra_audio=("0002",))
    with pytest.warns(DataWarning, match="84-121123-0002.flac: not in 84-121123.trans.txt"):
        ds = LibriSpeech(tmp_path / "ls", "dev-clean")
    assert len(ds) == 2 and ds.skipped == [(trans.with_name("84-121123-0002.flac"),
                                            "not in 84-121123.trans.txt (no transcript)")]
    with pytest.raises(DataError, match="0002.flac: not in"):
        LibriSpeech(tmp_path / "ls", "dev-clean", strict=True)


# --------------------------------------------------------------------------- archives, caches
def _wav_bytes(n=16000):
    buf = io.BytesIO()
    sf.write(buf, np.zeros(n, np.float32), 16000, format="WAV")
    return buf.getvalue()


def test_download_extracts_a_verified_archive_inside_the_folder(tmp_path, monkeypatch):
    members = [*_GOOD_SC, ("yes/a_nohash_0.wav", "file", _wav_bytes()),
               ("/no/b_nohash_0.wav", "file", _wav_bytes())]   # the filter strips the leading /
    call, archive = _sc_archive(tmp_path, monkeypatch, members)
    ds = call()
    base = tmp_path / "SpeechCommands" / "speech_commands_v0.02"
    assert sorted(m["path"] for _, _, m, _ in ds.items) == [str(base / "no" / "b_nohash_0.wav"),
                                                          str(base / "yes" / "a_nohash_0.wav")]
    assert not list(base.parent.glob(".*extract")) and ds[0][0].shape == (101, 40)
    archive.unlink()                                       # extracted once; not needed again
    assert len(SpeechCommands(tmp_path, download=True)) == 2
    inner = [("LibriSpeech/dev-clean/84/121123/84-121123-0000.flac", "file", _wav_bytes()),
             ("LibriSpeech/dev-clean/84/121123/84-121123.trans.txt", "file", b"84-121123-0000 HI\n"),
             ("LibriSpeech/README.TXT", "file", b"read me")]
    call, _ = _libri_archive(tmp_path / "ls", monkeypatch, inner)
    assert [text for _, text, _, _ in call().items] == ["HI"]
    assert sorted(p.name for p in (tmp_path / "ls").iterdir()) == ["LibriSpeech", "dev-clean.tar.gz"]


def test_atomic_write_uses_unique_names_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.npy"
    with atomic_write(target) as a, atomic_write(target) as b:   # two writers, one target
        assert a != b and a.suffix == b.suffix == ".npy" and a.parent == tmp_path
        np.save(a, np.zeros(2))
        np.save(b, np.ones(2))
    assert np.load(target).tolist() == [0.0, 0.0]                 # last rename wins, whole
    with pytest.raises(OSError), atomic_write(target) as c:
        c.write_bytes(b"half")
        raise OSError("disk full")
    assert np.load(target).tolist() == [0.0, 0.0] and sorted(tmp_path.iterdir()) == [target]


def test_chbmit_cache_writes_atomically(tmp_path, monkeypatch):
    _chb(tmp_path / "data", ())
    written, real_save = [], np.save

    def spy(file, arr):
        written.append(Path(file).name)
        real_save(file, arr)

    monkeypatch.setattr(np, "save", spy)
    first, second = (CHBMIT(tmp_path / "data", window_s=2.0, cache_dir=tmp_path / "cache")
                     for _ in range(2))
    x0 = first[0][0]
    (cached,) = (tmp_path / "cache").iterdir()
    cached.unlink()                     # as if a second rank looked before the first finished
    assert second[0][0].equal(x0)
    assert len(written) == 2 and written[0] != written[1] and all(".tmp" in n for n in written)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [cached.name]

    def full(file, arr):
        Path(file).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", full)
    with pytest.raises(OSError, match="disk full"):
        CHBMIT(tmp_path / "data", window_s=2.0, cache_dir=tmp_path / "cache2")[0]
    assert not list((tmp_path / "cache2").iterdir())   # no half file under any name
