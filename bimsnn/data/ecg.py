"""ECG datasets in WFDB format: PTB-XL 12-lead records and MIT-BIH beats (read with ``wfdb``).

Symbols: T time samples, L leads (12 for PTB-XL), K label classes, W beat-window samples,
C leads kept per beat.

Both datasets follow torchaudio: ``Dataset(root, ..., download=False)``; ``__getitem__`` returns
``(signal, label, meta)`` with a time-major signal, ``(T, L)`` or ``(W, C)``, or whatever the
optional ``encoder`` returns for it. Every bad input raises :class:`~bimsnn.data.DataError`.
"""

from __future__ import annotations

import ast
import contextlib
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from math import gcd
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from bimsnn.data import DataError

Encoder = Callable[[torch.Tensor], torch.Tensor]

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


def read_wfdb(record: str | Path, channels: Sequence[int | str] | None = None):
    """Read one WFDB record in physical units.

    Args:
        record: path without extension, e.g. ``root/records100/00000/00001_lr``.
        channels: indices or signal names to keep (default: all).
    Returns:
        signal ``(T, C)`` float32 array and wfdb's fields dict (``fs``, ``sig_name``, ``units``...).
    Raises:
        DataError: no ``.hea`` header, unreadable record, unknown channel, or NaN samples
        (WFDB writes NaN as the format's invalid value, e.g. -32768 for format 16, and reads
        it back as NaN: a gap we refuse to pass on silently).
    """
    record = Path(record)
    if not record.with_name(record.name + ".hea").is_file():
        raise DataError(record, "WFDB record not found (no .hea header)")
    try:
        with _wfdb() as wfdb:
            sig, fields = wfdb.rdsamp(str(record))
    except Exception as err:  # wfdb raises bare ValueError / FileNotFoundError / struct errors
        raise DataError(record, f"unreadable WFDB record ({type(err).__name__}: {err})") from err
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


# ---------------------------------------------------------------------------------------- PTB-XL
PTBXL_TASKS = ("superdiagnostic", "diagnostic", "subdiagnostic", "rhythm", "form", "all")
# Benchmark split (Strodthoff et al. 2020): folds 1-8 train, 9 validation, 10 test. Folds are
# patient-disjoint and stratified; 9 and 10 hold only human-validated reports.
PTBXL_SPLITS = {"train": tuple(range(1, 9)), "val": (9,), "test": (10,)}
_DB_COLUMNS = ("scp_codes", "strat_fold", "filename_lr", "filename_hr", "patient_id")
_STMT_COLUMNS = {"diagnostic": ("diagnostic", "diagnostic_class", "diagnostic_subclass"),
                 "form": ("form",), "rhythm": ("rhythm",), "all": ()}


def ptbxl_folds(split: str | int | Iterable[int]) -> tuple[int, ...]:
    """Folds for ``"train"``/``"val"``/``"test"``, or the given fold numbers checked in 1..10.

    >>> ptbxl_folds("val"), ptbxl_folds([9, 10])
    ((9,), (9, 10))
    """
    if isinstance(split, str):
        if split not in PTBXL_SPLITS:
            raise ValueError(f"split must be one of {list(PTBXL_SPLITS)}, got {split!r}")
        return PTBXL_SPLITS[split]
    folds = (split,) if isinstance(split, int) else tuple(int(f) for f in split)
    if not folds or not all(1 <= f <= 10 for f in folds):
        raise ValueError(f"strat_fold values are 1..10, got {folds}")
    return folds


def read_ptbxl_database(path: str | Path) -> pd.DataFrame:
    """``ptbxl_database.csv`` indexed by ``ecg_id``, with ``scp_codes`` parsed to dicts.

    ``scp_codes`` strings such as ``"{'NORM': 100.0, 'SR': 0.0}"`` are parsed with
    :func:`ast.literal_eval` (literals only, never ``eval``); values are likelihoods in %.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "PTB-XL metadata file not found")
    try:
        db = pd.read_csv(path, index_col="ecg_id")
    except (ValueError, pd.errors.ParserError) as err:
        raise DataError(path, f"not a PTB-XL database CSV ({err})") from err
    missing = [c for c in _DB_COLUMNS if c not in db.columns]
    if missing:
        raise DataError(path, f"missing columns {missing}")

    def parse(ecg_id, text):
        try:
            codes = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            codes = None
        if not isinstance(codes, dict):
            raise DataError(path, f"ecg_id {ecg_id}: unparsable scp_codes {text!r} (need a dict)")
        return codes

    db["scp_codes"] = [parse(i, s) for i, s in zip(db.index, db["scp_codes"])]
    return db


def read_scp_statements(path: str | Path, task: str = "all") -> pd.DataFrame:
    """``scp_statements.csv`` indexed by SCP code; checks the columns ``task`` needs."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "scp_statements.csv not found (PTB-XL ships it beside the database)")
    stmts = pd.read_csv(path, index_col=0)
    need = _STMT_COLUMNS["diagnostic" if "diagnostic" in task else task]
    missing = [c for c in need if c not in stmts.columns]
    if missing:
        raise DataError(path, f"missing columns {missing} needed for task {task!r}")
    return stmts


def aggregate_labels(scp_codes: pd.Series, statements: pd.DataFrame, task: str) -> pd.Series:
    """Per-record label lists, as the benchmark's ``compute_label_aggregations``.

    - ``diagnostic``: the record's codes whose statement has ``diagnostic == 1``;
    - ``subdiagnostic`` / ``superdiagnostic``: their ``diagnostic_subclass`` / ``diagnostic_class``;
    - ``form`` / ``rhythm``: codes with ``form == 1`` / ``rhythm == 1``;  ``all``: every code.

    Every key of ``scp_codes`` counts whatever its likelihood: the benchmark applies no
    threshold, so ``{'NORM': 100.0, 'SR': 0.0}`` has rhythm label ``SR`` even at 0 %.
    Returns a Series of sorted lists (sorted for reproducibility; the benchmark's sets are
    unordered, which the multi-hot encoding makes irrelevant).
    """
    if task not in PTBXL_TASKS:
        raise ValueError(f"task must be one of {PTBXL_TASKS}, got {task!r}")
    if task == "all":
        return scp_codes.apply(lambda d: sorted(set(d)))
    flag = "diagnostic" if task.endswith("diagnostic") else task
    table = statements[statements[flag] == 1.0]
    column = {"superdiagnostic": "diagnostic_class",
              "subdiagnostic": "diagnostic_subclass"}.get(task)
    if column is None:  # diagnostic / form / rhythm: the codes themselves
        return scp_codes.apply(lambda d: sorted({k for k in d if k in table.index}))
    mapping = table[column].dropna().to_dict()
    return scp_codes.apply(lambda d: sorted({mapping[k] for k in d if k in mapping}))


def label_classes(labels: pd.Series, task: str, min_samples: int = 0) -> list[str]:
    """Sorted class list (MultiLabelBinarizer order). As the benchmark's ``select_data``, every
    task but ``diagnostic`` keeps only classes seen in more than ``min_samples`` records (the
    benchmark experiments use 0, i.e. keep all)."""
    counts = Counter(c for ls in labels for c in ls)
    return sorted(c for c, n in counts.items() if task == "diagnostic" or n > min_samples)


class PTBXL(Dataset):
    """PTB-XL (Wagner et al. 2020): 10 s 12-lead ECGs with SCP-ECG statements.

    Args:
        root: folder holding ``ptbxl_database.csv``, ``scp_statements.csv``, ``records100/`` and/or
            ``records500/`` (as unpacked from PhysioNet).
        sampling_rate: 100 (``filename_lr``) or 500 (``filename_hr``).
        task: one of :data:`PTBXL_TASKS`; labels as :func:`aggregate_labels`.
        folds: split name (``"train"``/``"val"``/``"test"``) or ``strat_fold`` numbers.
        encoder: optional callable applied to the ``(T, 12)`` signal (e.g. a spike encoder).
        min_samples: class-frequency filter of :func:`label_classes`.
        download: not supported (PTB-XL is ~1.7 GB); fetch it from PhysioNet.

    The class list is computed over the whole database (all folds), so every split shares one
    label indexing. Records with no label for ``task`` are dropped, as in the benchmark (e.g. a
    record with only rhythm/form codes has no superdiagnostic label); ``n_unlabelled`` counts them
    over the whole database.

    ``__getitem__(n)`` returns ``(signal, target, meta)``: signal ``(T, 12)`` float32 in mV
    (T = 10 * sampling_rate) or ``encoder(signal)``; target ``(K,)`` float32 multi-hot over
    ``classes``; meta dict with ``ecg_id``, ``patient_id``, ``strat_fold``, ``labels``,
    ``record`` (path), ``sig_name`` and ``fs``.
    """

    def __init__(self, root: str | Path, sampling_rate: int = 100, task: str = "superdiagnostic",
                 folds: str | Iterable[int] = "train", encoder: Encoder | None = None,
                 min_samples: int = 0, download: bool = False):
        self.root = Path(root)
        if download:
            raise NotImplementedError("PTB-XL download is not supported: fetch it from "
                                      "https://physionet.org/content/ptb-xl/ (CC BY 4.0)")
        if sampling_rate not in (100, 500):
            raise ValueError(f"sampling_rate must be 100 or 500, got {sampling_rate}")
        self.sampling_rate, self.task, self.encoder = sampling_rate, task, encoder
        self.folds = ptbxl_folds(folds)
        db = read_ptbxl_database(self.root / "ptbxl_database.csv")
        labels = aggregate_labels(db["scp_codes"],
                                  read_scp_statements(self.root / "scp_statements.csv", task), task)
        self.classes = label_classes(labels, task, min_samples)
        keep = set(self.classes)
        labels = labels.apply(lambda ls: [c for c in ls if c in keep])
        has_label = labels.str.len() > 0
        self.n_unlabelled = int((~has_label).sum())
        select = has_label & db["strat_fold"].isin(self.folds)
        self.metadata = db[select].copy()
        self.metadata["labels"] = labels[select]
        col = {c: k for k, c in enumerate(self.classes)}
        self.targets = np.zeros((len(self.metadata), len(self.classes)), np.float32)  # (n, K)
        for n, ls in enumerate(self.metadata["labels"]):
            self.targets[n, [col[c] for c in ls]] = 1.0
        self._file_col = "filename_lr" if sampling_rate == 100 else "filename_hr"

    def __len__(self) -> int:
        return len(self.metadata)

    def __getitem__(self, n: int):
        row = self.metadata.iloc[n]
        record = self.root / row[self._file_col]
        sig, fields = read_wfdb(record)  # (T, L)
        if fields["fs"] != self.sampling_rate:
            raise DataError(record, f"sampled at {fields['fs']} Hz, expected {self.sampling_rate}")
        if sig.shape[1] != 12:
            raise DataError(record, f"{sig.shape[1]} leads, expected 12")
        x = torch.from_numpy(sig)
        meta = {"ecg_id": int(row.name), "patient_id": float(row["patient_id"]),
                "strat_fold": int(row["strat_fold"]), "labels": list(row["labels"]),
                "record": str(record), "sig_name": list(fields["sig_name"]), "fs": fields["fs"]}
        return (self.encoder(x) if self.encoder else x), torch.from_numpy(self.targets[n]), meta


# --------------------------------------------------------------------------------------- MIT-BIH
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


class MITBIH(Dataset):
    """Annotated beats of MIT-BIH-style WFDB records (``<record>.hea/.dat/.atr``).

    Args:
        root: folder with the records.
        records: record names (default: every ``*.atr`` in ``root``, sorted).
        classes: ``"aami"`` (N, S, V, F, Q via :data:`AAMI_MAP`), ``"symbols"`` (one class per
            raw beat symbol of :data:`AAMI_MAP`), or a dict ``{symbol: class}``.
        window_s: seconds kept (before, after) each annotated R peak; W = round(fs * before) +
            round(fs * after).
        lead: signal index or name, or a sequence of them (C = how many).
        fs: resample every record to this rate first (e.g. 360 to pool 128 Hz SVDB with
            360 Hz MIT-BIH; polyphase anti-aliased, ``scipy.signal.resample_poly``); None: native.
        edge: ``"drop"`` beats whose window would cross a record edge (counted per symbol in
            ``edge_dropped``), or ``"pad"`` them by repeating the edge sample.
        encoder: optional callable applied to each ``(W, C)`` window.
        download: fetch missing records from PhysioNet ``database`` with ``wfdb.dl_database``.

    ``__getitem__(i)`` returns ``(window, label, meta)``: window ``(W, C)`` float32 in mV (raw,
    unfiltered) or ``encoder(window)``; label int index into ``classes``; meta dict with
    ``record``, ``symbol``, ``sample`` (R peak at the output rate), ``time_s`` and ``fs``.
    """

    def __init__(self, root: str | Path, records: Sequence[str | int] | None = None,
                 classes: str | dict[str, str] = "aami", window_s: tuple[float, float] = (0.25, 0.45),
                 lead: int | str | Sequence[int | str] = 0, fs: int | None = None,
                 edge: str = "drop", encoder: Encoder | None = None, download: bool = False,
                 database: str = "mitdb"):
        self.root, self.encoder, self.edge = Path(root), encoder, edge
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
            if not records:
                raise DataError(self.root, "no .atr annotation files")
        self.records = [str(r) for r in records]
        leads = [lead] if isinstance(lead, int | str) else list(lead)
        self.target_fs, self.fs = fs, fs
        self.signals: list[np.ndarray] = []  # one (T, C) array per record, at the output rate
        self.dropped_symbols: Counter = Counter()
        self.edge_dropped: Counter = Counter()
        rec_idx, samples, symbols = [], [], []
        for r, name in enumerate(self.records):
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
            self.signals.append(sig)
            rec_idx.append(np.full(int(is_beat.sum()), r))
            samples.append(ann_samples[is_beat])
            symbols += [s for s, b in zip(ann_symbols, is_beat) if b]
        self.beat_record = np.concatenate(rec_idx)  # (n_beats,) index into self.records
        self.beat_sample = np.concatenate(samples)  # (n_beats,) R peak, output-rate samples
        self.beat_symbol = symbols
        col = {c: k for k, c in enumerate(self.classes)}
        self.targets = np.array([col[self.mapping[s]] for s in symbols], np.int64)

    def _load(self, path: Path, leads):
        sig, fields = read_wfdb(path, leads)  # (T, C)
        rate = int(fields["fs"])
        try:
            with _wfdb() as wfdb:
                ann = wfdb.rdann(str(path), "atr")
        except Exception as err:
            raise DataError(path.with_suffix(".atr"), f"unreadable annotations ({err})") from err
        samples = np.asarray(ann.sample, np.int64)
        target = self.target_fs
        if target is not None and target != rate:
            from scipy.signal import resample_poly

            g = gcd(int(target), rate)
            sig = resample_poly(sig, target // g, rate // g, axis=0).astype(np.float32)
            samples = np.round(samples * target / rate).astype(np.int64)
            rate = int(target)
        return sig, samples, list(ann.symbol), rate

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
