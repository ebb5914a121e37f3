"""Seizure detection pipeline: EEG recordings → spike windows → scores → clinical report.

Symbols: N windows, T steps per window (window_s·sfreq), C EEG channels, 2C ADM afferents
(ON then OFF), k alarm smoothing (consecutive positive windows).

One preprocessing spec (:class:`SeizurePre`, stored in ``model.pt``) serves training,
``--eval-only`` scoring and the benchmarks: EDF → band-pass, resample to ``sfreq``, per-file
robust z-score (CHB-MIT) → windows (``window_s``, hop ``stride_s``) → ADM/delta spikes per
window (threshold in robust-z units) → model. Bonn segments go through the same path.

Split: whole recordings go to train, val or test (:func:`bimsnn.data.windows.split_recordings`);
the val split picks the best epoch and the decision threshold (max window-level F1); the
test split is scored once. Clinical metrics: :func:`bimsnn.metrics.clinical_metrics`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from bimsnn import models
from bimsnn.data import CHBMIT, Bonn, Siena, demo
from bimsnn.data.windows import WindowSet, materialize, recording_windows, split_recordings
from bimsnn.encoding import ADMEncoder, DeltaEncoder, FilterbankADMEncoder
from bimsnn.metrics import classification_metrics, clinical_metrics, f1_threshold, score_problem
from bimsnn.plots import plot_rasters
from bimsnn.tasks.common import SPIKING, ModelConfig, fmt, md_table, plot_roc_and_pr
from bimsnn.training import CheckpointError, TrainConfig, distributed, evaluate, write_json

NAN = float("nan")
CLINICAL = ("sensitivity", "false_alarms_per_hour", "detection_latency_s")


@dataclass
class SeizurePre:
    """How raw EEG becomes model input (kept in model.pt as a dict)."""

    kind: str = "chbmit"             # chbmit (demo too) | siena | bonn
    window_s: float = 4.0
    stride_s: float = 2.0
    sfreq: float | None = 32.0       # None: the recording's own rate
    l_freq: float | None = 0.5
    h_freq: float | None = 15.0
    encoder: str = "adm"             # adm | delta (robust-z units) | filterbank (decades)
    spike_threshold: float = 0.5     # adm/delta: robust-z units; filterbank: log10 µV
    smooth_k: int = 2
    channels: tuple[str, ...] = ()
    normalize: str | None = "auto"   # loader scaling, or "train": center/scale below
    phase: str = "zero"              # zero (mne FIR + resample, non-causal) | causal (IIR)
    center: tuple[float, ...] = ()   # normalize="train": per-channel median of the train
    scale: tuple[float, ...] = ()    # recordings and 1.4826·MAD (robust z, fitted once)


# What each dataset needs (the recipe's "auto" flags). The demo is simulated with its
# power below 15 Hz, so 32 Hz and one ADM pair per channel suffice; real EEG keeps its
# seizure band (up to 40 Hz) and its amplitude (µV): six band envelopes (δ θ α β1 β2 γ)
# coded by ADM (bimsnn.encoding.FilterbankADMEncoder). Continuous recordings (demo,
# CHB-MIT, Siena) are filtered causally (Bessel IIR, integer decimation; bimsnn.data.stream)
# and the demo is scaled by per-channel constants fitted on its training recordings, so a
# detector running during a recording (bimsnn.monitor) sees exactly the windows the model
# was trained and evaluated on. Over 5 seeds (one test seizure, so AUC-PR is noisy) the
# causal default scores median AUC-ROC 0.993 / AUC-PR 0.935 against 0.995 / 0.960 for the
# non-causal chain; a causal running scale (normalize="running") scored 0.975 / 0.869. The former zero-phase FIR, FFT resampling and whole-file median/MAD used up
# to 3.3 s of future signal and the whole file's statistics: no bedside detector has them.
# Bonn's pre-cut segments keep zero-phase filters.
DATASET_DEFAULTS = {
    "demo": dict(sfreq=32.0, l_freq=0.5, h_freq=15.0, encoder="adm", spike_threshold=0.5,
                 normalize="train", phase="causal"),
    "chbmit": dict(sfreq=128.0, l_freq=0.5, h_freq=40.0, encoder="filterbank",
                   spike_threshold=0.15, normalize=None, phase="causal"),
    "siena": dict(sfreq=128.0, l_freq=0.5, h_freq=40.0, encoder="filterbank",
                  spike_threshold=0.15, normalize=None, phase="causal"),
    "bonn": dict(sfreq=None, l_freq=0.5, h_freq=40.0, encoder="filterbank",
                 spike_threshold=0.15, normalize=None, phase="zero"),
}


# Training defaults (the recipe's, and benchmarks/online_speed.py's): the spiking Mamba
# learns online with Hybrid (eq. 4), λ = 0.9 as each weight's share of its update
# (``balance="element"``: a weight's STDP term is at most 1/9 of its own gradient term,
# whatever A± and the optimizer, so Adam cannot amplify a sign-stable Ω), in chunks of K
# steps (fused kernels inside a chunk, eligibility traces across). A 4 s window is 128
# steps on the demo and 31 filterbank frames on Bonn / CHB-MIT; K = 64 and 16 both cut it
# in two chunks. Each chunk pays a fixed cost of small kernels and one backward call, so
# on the demo K = 16 (8 chunks) takes about 2x the time of K = 64 for the same AUC.
# On the demo the SSM's x_proj traces (exact credit across chunks for the Δ and B
# projections, the O(B·N·E²) part of the trace cost) are off, so x_proj learns within a
# chunk: RTRL 1.27x → 1.01x of BPTT's epoch, AUC-ROC 0.9993 → 0.9998. On Bonn they stay
# on: without them RTRL's AUC fell 0.9990 → 0.9973 for a cost that is small at T = 31.
# Measured choices: benchmarks/RESULTS.md.
#
# Bonn: the loss and the readout cover the second half of each 4 s window (the first frames
# carry too little of it to be asked for the class). Hybrid, seeds 0/1/2, best validation
# AUC-ROC: loss over the whole window 0.9981 / 0.9974 / 0.9977, second half 0.9987 / 0.9982
# / 0.9986 (test 0.9984 / 0.9975 / 0.9987 → 0.9988 / 0.9981 / 0.9989). Averaging the
# weights as well (ema 0.995) did not raise validation AUC (0.9983 / 0.9982 / 0.9983).
def default_train(dataset: str) -> TrainConfig:
    """The recipe's TrainConfig for ``dataset`` (demo | chbmit | siena | bonn)."""
    bonn = dataset == "bonn"
    return TrainConfig(epochs=8 if dataset == "demo" else 16, batch_size=64, lr=5e-3,
                       rule="hybrid", lam=0.9, balance="element",
                       chunk=64 if dataset == "demo" else 16,
                       x_proj_traces=dataset != "demo", task="binary",
                       loss_window=0.5 if bonn else 1.0, grad_clip=1.0)


DEFAULT_MODEL = ModelConfig(model="spiking_mamba", d_model=16, d_state=8)


def resolve_pre(dataset: str, **flags) -> SeizurePre:
    """A :class:`SeizurePre` for ``dataset`` (demo | chbmit | bonn): each flag given as
    "auto" takes :data:`DATASET_DEFAULTS`; others are used as given."""
    d = DATASET_DEFAULTS[dataset]
    kw = {k: (d[k] if isinstance(v, str) and v == "auto" and k in d else v)
          for k, v in flags.items()}
    for k, v in kw.items():
        if isinstance(v, str) and k not in ("encoder", "normalize", "phase"):
            raise ValueError(f"--{k.replace('_', '-')} must be a number, none or auto, got {v!r}")
    kind = dataset if dataset in ("bonn", "siena") else "chbmit"
    return SeizurePre(kind=kind, **kw)


def demo_root(data_dir: str | None, default: Path) -> Path:
    """The generated CHB-MIT-layout demo, written once under ``default`` (rank 0; others
    wait), or ``data_dir`` as given."""
    if data_dir:
        return Path(data_dir)
    if distributed.dist_info().is_main:
        demo.chbmit(default)  # idempotent: returns at once when complete
    distributed.barrier()
    return default


def open_dataset(pre: SeizurePre, root: Path, patients=None, strict: bool = False):
    """CHBMIT (demo too) or Bonn with the preprocessing in ``pre`` (raw windows, no encoder);
    ``strict``: a file the loader would skip (with a warning) is a DataError instead."""
    common = dict(window_s=pre.window_s, stride_s=pre.stride_s, l_freq=pre.l_freq,
                  h_freq=pre.h_freq, sfreq=pre.sfreq)
    if pre.normalize != "auto":
        common["normalize"] = None if pre.normalize == "train" else pre.normalize
    if pre.kind == "bonn":
        if pre.phase != "zero" or pre.normalize == "train":
            raise ValueError("Bonn segments take phase='zero' and no 'train' scaling")
        return Bonn(root, **common)
    cls = Siena if pre.kind == "siena" else CHBMIT
    return cls(root, patients=patients, channels=list(pre.channels) or None,
               max_cached_files=4, strict=strict, phase=pre.phase, **common)


class Scaled:
    """``encode((x − center) / scale)``: the train-fitted robust z-score (normalize="train")
    in front of an encoder; x (T, N, C), center and scale (C,)."""

    def __init__(self, encode, center, scale):
        self.encode = encode
        self.center = torch.as_tensor(center, dtype=torch.float32)
        self.scale = torch.as_tensor(scale, dtype=torch.float32)

    def __call__(self, x):
        return self.encode((x - self.center) / self.scale)


def fit_scaling(ds, recordings) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(center, scale) per channel for normalize="train": the median over ``recordings``
    of each file's median and of its 1.4826·MAD (robust to seizures and artefacts, and to
    one odd file), from the loader's filtered, unscaled signals."""
    names = set(recordings)
    meds, mads = [], []
    for i, p in enumerate(ds.files):
        if f"{p.parent.name}/{p.name}" in names:
            d = np.asarray(ds.signal(i), dtype=np.float64)          # (C, N)
            med = np.median(d, axis=1)
            meds.append(med)
            mads.append(1.4826 * np.median(np.abs(d - med[:, None]), axis=1))
    if not meds:
        raise ValueError("normalize='train': no training recording to fit the scaling on")
    scale = np.maximum(np.median(mads, axis=0), 1e-12)
    return tuple(map(float, np.median(meds, axis=0))), tuple(map(float, scale))


def encoder(pre: SeizurePre, fs: float):
    """Raw windows (S, N, C) at ``fs`` Hz → spikes (T, N, C'): adm/delta ON/OFF per channel
    (T = S, C' = 2C, each window from its own first sample), or the filterbank ADM (six
    band envelopes every 0.125 s, C' = 12C)."""
    if pre.encoder == "filterbank":
        enc = FilterbankADMEncoder(fs, theta=pre.spike_threshold)
    else:
        enc = (ADMEncoder if pre.encoder == "adm" else DeltaEncoder)(pre.spike_threshold)
    if pre.normalize == "train":
        if not pre.scale:
            raise ValueError("normalize='train' needs center/scale (fit_scaling)")
        return Scaled(enc, pre.center, pre.scale)
    return enc


def load_split(pre: SeizurePre, root: Path, *, patients=None, split: str = "recording",
               test_patients=None, test_frac: float = 0.25, val_frac: float = 0.25,
               seed: int = 0, strict: bool = False
               ) -> tuple[object, dict, dict[str, WindowSet], SeizurePre]:
    """(dataset, {part: recording names}, {part: encoded WindowSet}, pre) for
    train/val/test; ``pre`` gains the loader's channels and, for normalize="train", the
    scaling fitted on the train recordings."""
    ds = open_dataset(pre, root, patients, strict)
    names = split_recordings(ds.meta, split=split, test_patients=test_patients,
                             test_frac=test_frac, val_frac=val_frac, seed=seed)
    pre = replace(pre, channels=tuple(getattr(ds, "channels", ())))
    if pre.normalize == "train":
        center, scale = fit_scaling(ds, names["train"])
        pre = replace(pre, center=center, scale=scale)
    enc = encoder(pre, ds.sfreq)
    sets = {k: materialize(ds, recording_windows(ds.meta, v), enc) for k, v in names.items()}
    return ds, names, sets, pre


def load_all(pre: SeizurePre, root: Path, patients=None, strict: bool = False
             ) -> tuple[object, WindowSet]:
    """Every window of ``root`` (``--eval-only``)."""
    ds = open_dataset(pre, root, patients, strict)
    return ds, materialize(ds, range(len(ds)), encoder(pre, ds.sfreq))


def seizure_table(ds) -> dict[str, list[tuple[float, float]]]:
    """{"chbNN/chbNN_MM.edf": [(onset, offset) s, ...]} for CHB-MIT layouts; {} for Bonn."""
    return {f"{p.parent.name}/{p.name}": [tuple(s) for s in ds.seizures[p]]
            for p in getattr(ds, "files", []) if hasattr(ds, "seizures")}


def score(model, spec: dict, tc: TrainConfig, val, test, pre: SeizurePre, seizures: dict,
          threshold: float | None = None) -> tuple[dict, dict]:
    """(metrics, raw test results): threshold from val (max F1) unless given.

    A model whose test scores are non-finite or constant gets ``problem`` set and NaN
    clinical metrics (never "0 false alarms")."""
    tcm = replace(tc, rule=tc.rule if spec["name"] in SPIKING else "bptt")
    if threshold is None:
        rv = evaluate(model, val, tcm)
        threshold = f1_threshold(rv["scores"], rv["labels"])
    rt = evaluate(model, test, tcm)
    problem = score_problem(rt["scores"])
    w = classification_metrics(rt["scores"], rt["labels"], "binary", threshold)
    m = {"auc_roc": w["auc"], "auc_pr": w["ap"], "window": w, "threshold": threshold,
         "problem": problem}
    clin = (clinical_metrics(rt["scores"], rt["metas"], threshold, seizures, pre.window_s,
                             pre.smooth_k) if seizures and problem is None else {})
    m.update({k: clin.get(k, NAN) for k in CLINICAL})
    m["clinical"] = clin
    if problem is not None:
        m["auc_roc"] = m["auc_pr"] = NAN
    return m, rt


def summary_row(m: dict, **extra) -> dict:
    """The comparison-table row of one model's :func:`score` metrics."""
    return {**{k: m[k] for k in ("auc_roc", "auc_pr", *CLINICAL, "threshold", "problem")},
            **extra}


def write_outputs(out: Path, main: dict, rows: dict, curves: dict, test, model,
                  pre: SeizurePre, info: dict) -> None:
    """roc.png, pr.png (every model of the run), raster.png, metrics.json, report.md."""
    plot_roc_and_pr({k: (v["labels"], v["scores"]) for k, v in curves.items()}, out,
                    "held-out test windows")
    rt = next(iter(curves.values()))  # the main model's test results
    ictal = np.flatnonzero(rt["labels"] == 1)
    if len(ictal) and np.isfinite(rt["scores"]).all():
        i = int(ictal[np.argmax(rt["scores"][ictal])])  # its most confident ictal window
        x, _, meta = test[i]
        panels = [("input (ON|OFF)", x.float())]
        hid = models.hidden_spikes(model, x)
        if hid is not None:
            panels.append(("hidden LIF", hid))
        where = "/".join(str(meta[k]) for k in ("patient", "file", "set", "segment") if k in meta)
        dt = pre.window_s / x.shape[0]                                   # s per step
        plot_rasters(panels, out / "raster.png", f"ictal test window {where} at "
                     f"{meta['start_s']:.0f} s (score {rt['scores'][i]:.2f})", dt)
    write_json({**main, "comparison": rows, **info}, out / "metrics.json")
    (out / "report.md").write_text(report_md(main, rows, pre, info))


_CAVEATS = {
    "demo": "the demo recordings are simulated (CHB-MIT format, not EEG); with a handful of "
            "test seizures, sensitivity and false-alarm rates have wide error bars.",
    "chbmit": "with few test seizures, sensitivity and false-alarm rates have wide error bars.",
    "bonn": "Bonn segments are 23.6 s single-channel excerpts selected by the dataset's "
            "authors (set S ictal against Z/O/N/F), not continuous recordings: no clinical "
            "metrics (sensitivity, false alarms, latency) apply.",
}


def report_md(main: dict, rows: dict, pre: SeizurePre, info: dict) -> str:
    """The run's ``report.md``: one table row per model, then the main model's details."""
    head = ["model", "rule", "epochs", "AUC-ROC", "AUC-PR", "seizure sensitivity",
            "false alarms/h", "latency (s)", "train (s)"]
    table = md_table(head, [[n, r["rule"], r.get("epochs"), r["auc_roc"], r["auc_pr"],
                             r["sensitivity"], r["false_alarms_per_hour"],
                             r["detection_latency_s"], r.get("train_s")] for n, r in rows.items()])
    c = main.get("clinical") or {}
    split, nw, ni = info.get("split", {}), info.get("n_windows", {}), info.get("n_ictal", {})
    sizes = " / ".join(f"{k} {nw[k]} ({ni.get(k, 0)} ictal)" for k in nw)
    spec = main["model"]
    problems = [f"**{n}: {r['problem']}** (its metrics are not reported)"
                for n, r in rows.items() if r.get("problem")]
    lines = [f"# Seizure detection: {info['dataset']}", "",
             f"Data: `{info['data_dir']}`. Windows: {sizes}. {pre.window_s:g} s windows "
             f"every {pre.stride_s:g} s at {fmt(pre.sfreq, 2) if pre.sfreq else 'native'} Hz "
             f"({pre.phase}-phase band-pass {pre.l_freq}–{pre.h_freq} Hz"
             + (", robust z fitted on the train recordings" if pre.normalize == "train" else "")
             + f"), {pre.encoder} spikes at threshold "
             f"{pre.spike_threshold:g} "
             f"({'log10 µV' if pre.encoder == 'filterbank' else 'robust-z units'}) → "
             f"{info.get('n_inputs')} afferents.", "",
             f"Model: `{spec['name']}` {spec['kwargs']}, rule `{main['rule']}`"
             + (f" (λ = {main['lam']})" if main["rule"] == "hybrid" else "") + ".",
             "", f"Test recordings (never trained on): {', '.join(split.get('test', [])) or 'all'}.",
             f"Validation: {', '.join(split.get('val', [])) or '-'}. "
             f"Train: {', '.join(split.get('train', [])) or '-'}.", "",
             *([f"Files left out by the loader ({len(info['skipped'])}; `--strict` makes "
                "them errors): " + "; ".join(f"`{p}`: {r}" for p, r in info["skipped"]), ""]
               if info.get("skipped") else []),
             "## Held-out test, all models from this run", "", table, "", *problems,
             f"Threshold per model: max F1 on the validation windows (main model: "
             f"{fmt(main['threshold'])}). Alarm: {pre.smooth_k} consecutive windows above it.",
             f"Main model: {c.get('n_detected', 'n/a')}/{c.get('n_seizures', 'n/a')} seizures "
             f"detected, {c.get('n_false_alarms', 'n/a')} false alarms in "
             f"{fmt(c.get('interictal_hours'), 2)} interictal hours.", "",
             "Definitions: a seizure counts as detected if an alarm is on at a window end "
             "within [onset, offset + window]; latency = that time − onset; a false alarm is "
             "an alarm run overlapping no seizure (bimsnn.metrics.clinical_metrics).", "",
             f"Timings: {', '.join(f'{k} {v:.1f} s' for k, v in info.get('timings', {}).items())}.",
             "", f"Caveats: {_CAVEATS.get(info.get('kind', 'demo'), _CAVEATS['chbmit'])} "
             "AUCs are over test windows pooled across recordings.", ""]
    return "\n".join(lines)


def skipped_files(ds) -> list[tuple[str, str]]:
    """[(file, reason)] the loader left out (with a warning each)."""
    return [(str(p), str(r)) for p, r in getattr(ds, "skipped", [])]


def print_summary(rows: dict, out: Path, total: float, skipped=()) -> None:
    """Print the skipped-file count, one metrics line per model and the run folder."""
    if skipped:
        print(f"{len(skipped)} file(s) left out by the loader (see report.md; --strict: error)")
    for n, r in rows.items():
        if r.get("problem"):
            print(f"{n:14s} {r['problem']}")
            continue
        print(f"{n:14s} AUC-ROC {fmt(r['auc_roc'])}  AUC-PR {fmt(r['auc_pr'])}  "
              f"sens {fmt(r['sensitivity'], 2)}  FA/h {fmt(r['false_alarms_per_hour'], 1)}  "
              f"latency {fmt(r['detection_latency_s'], 1)} s")
    print(f"wrote {out} in {total:.0f} s")


def pre_from_checkpoint(ck: dict, path) -> SeizurePre:
    """The :class:`SeizurePre` stored in a seizure model.pt (format 1 or 2)."""
    pre = ck.get("preprocessing")
    if not isinstance(pre, dict) or "window_s" not in pre:
        raise CheckpointError(path, "another recipe's model.pt (no EEG preprocessing in it); "
                              "pass a seizure_detection model.pt")
    known = {k: v for k, v in pre.items() if k in SeizurePre.__dataclass_fields__}
    for k in ("channels", "center", "scale"):
        known[k] = tuple(known.get(k) or ())
    return SeizurePre(**known)


def pre_dict(pre: SeizurePre) -> dict:
    """``pre`` as a JSON-friendly dict (``model.pt``'s ``preprocessing``)."""
    d = asdict(pre)
    for k in ("channels", "center", "scale"):
        d[k] = list(getattr(pre, k))
    return d
