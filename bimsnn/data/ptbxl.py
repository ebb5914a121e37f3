"""PTB-XL (Wagner et al. 2020): 10 s 12-lead ECGs in WFDB format with SCP-ECG statements.

Symbols: T time samples (10 s), L leads (12), K label classes.

``PTBXL(root, ..., download=False)`` follows torchaudio; ``__getitem__`` returns
``(signal (T, L), multi-hot target (K,), meta)``. The metadata readers check every field the
loader uses (ids, folds, file names, SCP codes) and name the row of a bad one.
"""

from __future__ import annotations

import ast
import io
import math
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from bimsnn.data.errors import DataError
from bimsnn.data.files import read_text
from bimsnn.data.wfdb_io import read_wfdb

__all__ = ["PTBXL", "PTBXL_TASKS", "PTBXL_SPLITS", "ptbxl_folds", "read_ptbxl_database",
           "read_scp_statements", "aggregate_labels", "label_classes"]

PTBXL_TASKS = ("superdiagnostic", "diagnostic", "subdiagnostic", "rhythm", "form", "all")
# Benchmark split (Strodthoff et al. 2020): folds 1-8 train, 9 validation, 10 test. Folds are
# patient-disjoint and stratified; 9 and 10 hold only human-validated reports.
PTBXL_SPLITS = {"train": tuple(range(1, 9)), "val": (9,), "test": (10,)}
PTBXL_SECONDS = 10
_DB_COLUMNS = ("scp_codes", "strat_fold", "filename_lr", "filename_hr", "patient_id")
_STMT_COLUMNS = {"diagnostic": ("diagnostic", "diagnostic_class", "diagnostic_subclass"),
                 "form": ("form",), "rhythm": ("rhythm",), "all": ()}
Encoder = Callable[[torch.Tensor], torch.Tensor]
# Real scp_codes cells are under 200 characters. literal_eval of a long nested text can
# exhaust memory or the recursion limit, so longer cells are refused before parsing.
_MAX_SCP_CHARS = 4096


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


def _read_csv(path: Path, what: str, **kw) -> pd.DataFrame:
    text = read_text(path, what)
    try:
        return pd.read_csv(io.StringIO(text), **kw)
    except (ValueError, pd.errors.ParserError) as err:  # EmptyDataError, bad index_col too
        raise DataError(path, f"not a {what} CSV ({type(err).__name__}: {err})") from err


def _short(value) -> str:
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= 60 else f"{text[:40]}...({len(text)} characters)"


def _scp_codes(path: Path, ecg_id, text) -> dict[str, float]:
    """One ``scp_codes`` cell parsed with :func:`ast.literal_eval` (literals only, never eval)."""
    codes = None
    if isinstance(text, str) and len(text) <= _MAX_SCP_CHARS:
        try:
            codes = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
    if not isinstance(codes, dict):
        raise DataError(path, f"ecg_id {ecg_id}: unparsable scp_codes {_short(text)} (need a dict)")
    for code, p in codes.items():
        if (not isinstance(code, str) or isinstance(p, bool) or not isinstance(p, int | float)
                or not 0 <= p <= 100):
            raise DataError(path, f"ecg_id {ecg_id}: scp_codes entry {code!r}: {p!r} is not "
                                  "'CODE': likelihood in 0..100")
    return codes


def read_ptbxl_database(path: str | Path) -> pd.DataFrame:
    """``ptbxl_database.csv`` indexed by ``ecg_id``, with ``scp_codes`` parsed to dicts.

    ``scp_codes`` strings such as ``"{'NORM': 100.0, 'SR': 0.0}"`` are parsed with
    :func:`ast.literal_eval` (literals only, never ``eval``); values are likelihoods in %.

    Raises:
        DataError: missing, non-UTF-8 or malformed CSV; missing columns; an ``ecg_id`` that is
        not a unique integer; a ``strat_fold`` outside 1..10; a ``patient_id`` that is not a
        number; a file name that is empty, absolute or climbs out with ``..``; or an
        ``scp_codes`` cell that is not a dict of likelihoods. The message names the ecg_id.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "PTB-XL metadata file not found")
    db = _read_csv(path, "PTB-XL database", index_col="ecg_id")
    missing = [c for c in _DB_COLUMNS if c not in db.columns]
    if missing:
        raise DataError(path, f"missing columns {missing}")
    if not pd.api.types.is_integer_dtype(db.index) or not db.index.is_unique:
        bad = db.index[db.index.duplicated()].tolist()[:3] or "non-integer values"
        raise DataError(path, f"ecg_id must be unique integers ({bad})")
    for col, ok in (("strat_fold", lambda v: v in range(1, 11)),
                    ("patient_id", lambda v: math.isfinite(v))):
        num = pd.to_numeric(db[col], errors="coerce")
        bad = [i for i, v, n in zip(db.index, db[col], num) if pd.isna(n) or not ok(n)]
        if bad:
            raise DataError(path, f"ecg_id {bad[0]}: {col} {_short(db.at[bad[0], col])} is not "
                                  f"{'an integer 1..10' if col == 'strat_fold' else 'a number'}"
                                  f" ({len(bad)} such rows)")
        db[col] = num.astype(int) if col == "strat_fold" else num
    for col in ("filename_lr", "filename_hr"):
        for ecg_id, name in db[col].items():
            parts = PurePosixPath(name).parts if isinstance(name, str) and name.strip() else ()
            if not parts or parts[0] == "/" or ".." in parts:
                raise DataError(path, f"ecg_id {ecg_id}: {col} {_short(name)} is not a relative "
                                      "record path inside the dataset")
    db["scp_codes"] = [_scp_codes(path, i, s) for i, s in zip(db.index, db["scp_codes"])]
    return db


def read_scp_statements(path: str | Path, task: str = "all") -> pd.DataFrame:
    """``scp_statements.csv`` indexed by SCP code; checks the columns ``task`` needs.

    Raises:
        DataError: missing, non-UTF-8 or malformed file, a code listed twice, missing columns,
        or a flag column (``diagnostic``/``form``/``rhythm``) holding something other than
        1/0/empty.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "scp_statements.csv not found (PTB-XL ships it beside the database)")
    stmts = _read_csv(path, "SCP statements", index_col=0)
    if not stmts.index.is_unique:
        raise DataError(path, f"codes listed twice: {stmts.index[stmts.index.duplicated()].tolist()}")
    need = _STMT_COLUMNS["diagnostic" if "diagnostic" in task else task]
    missing = [c for c in need if c not in stmts.columns]
    if missing:
        raise DataError(path, f"missing columns {missing} needed for task {task!r}")
    for flag in ("diagnostic", "form", "rhythm"):
        if flag in stmts.columns:
            num = pd.to_numeric(stmts[flag], errors="coerce")
            bad = stmts.index[stmts[flag].notna() & ~num.isin([0, 1])]
            if len(bad):
                raise DataError(path, f"code {bad[0]}: {flag} flag {stmts.at[bad[0], flag]!r} "
                                      "is not 1, 0 or empty")
            stmts[flag] = num
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
    over the whole database. Selecting 0 records is a DataError.

    ``__getitem__(n)`` returns ``(signal, target, meta)``: signal ``(T, 12)`` float32 in mV
    (T = 10 * sampling_rate) or ``encoder(signal)``; target ``(K,)`` float32 multi-hot over
    ``classes``; meta dict with ``ecg_id``, ``patient_id``, ``strat_fold``, ``labels``,
    ``record`` (path), ``sig_name`` and ``fs``. A record whose rate, lead count (12) or length
    (10 s) differs from the specification is a DataError naming it.
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
        self.skipped: list = []  # as every loader's; unlabelled records are counted in n_unlabelled
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
        if not len(self.metadata):
            raise DataError(self.root / "ptbxl_database.csv",
                            f"0 records with a {task!r} label in folds {self.folds} "
                            f"(of {len(db)} rows, {self.n_unlabelled} without a label)")

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
        if sig.shape[0] != PTBXL_SECONDS * self.sampling_rate:
            raise DataError(record, f"{sig.shape[0]} samples; PTB-XL records hold "
                                    f"{PTBXL_SECONDS} s = {PTBXL_SECONDS * self.sampling_rate}")
        x = torch.from_numpy(sig)
        meta = {"ecg_id": int(row.name), "patient_id": float(row["patient_id"]),
                "strat_fold": int(row["strat_fold"]), "labels": list(row["labels"]),
                "record": str(record), "sig_name": list(fields["sig_name"]), "fs": fields["fs"]}
        return (self.encoder(x) if self.encoder else x), torch.from_numpy(self.targets[n]), meta


