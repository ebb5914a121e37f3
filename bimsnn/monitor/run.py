"""Monitor whole recordings: stream, adapt online to the patient, write events, scores, plots.

    python -m bimsnn.monitor runs/seizure_detection/model.pt datasets/demo_chbmit/chb01/chb01_03.edf
    python -m bimsnn.monitor ecg_model.pt ../shared/data/ecg/208 --adapt-minutes 5 --stop-minutes 20

Per recording, in ``--out/<recording>/``:

* ``events.csv`` (seizure models): ``onset_s, offset_s, peak``, one alarm per line, written
  as each alarm closes (a recording that fails half-way keeps the events before it);
* ``scores.npz``: ``t_s`` (window starts / R peaks, s), ``scores`` (the deployed model's:
  the general model before the adaptation period ends, the adapted one after),
  ``scores_general``, ``labels`` where annotated; written even when a block fails;
* ``timeline.png``: score against time with the annotated seizures (or beat classes);
* ``metrics.json``: real-time factor, and with annotations the clinical metrics
  (:func:`bimsnn.metrics.clinical_metrics`) or beat macro-F1, for the general and the
  adapted model on what follows the adaptation period;
* ``adapted_model.pt`` when adapting (the loaded model.pt is never written).

**Online patient-specific adaptation** (``--adapt-minutes M``, AAMI EC57's protocol: the
first M minutes of each record, with their labels): the windows (or beats) of those
minutes are kept, encoded (memory bounded by M, not the recording), and a copy of the
model is trained on them with a chunked online rule (``--adapt-rule hybrid | rtrl``,
:func:`bimsnn.training.fit`), then the buffer is dropped and later minutes are scored
with the adapted copy. Without labels nothing is adapted (said in metrics.json).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from bimsnn import models
from bimsnn.data.errors import DataError
from bimsnn.data.windows import WindowSet
from bimsnn.monitor.core import Event, Monitor, load_monitor_model
from bimsnn.monitor.recording import Recording, open_recording
from bimsnn.training import TrainConfig, class_weighted_ce, fit, write_json

__all__ = ["MonitorConfig", "monitor_recording", "adapt", "main", "window_labels", "beat_table"]


@dataclass
class MonitorConfig:
    """The CLI's flags (``python -m bimsnn.monitor --help``)."""

    out: str = "runs/monitor"
    block_s: float = 60.0             # seconds read per block
    adapt_minutes: float = 5.0        # 0: no adaptation
    adapt_rule: str = "rtrl"          # rtrl | hybrid (chunked, the model's default chunk)
    adapt_epochs: int = 40            # defaults measured on MIT-BIH 208 (RESULTS.md)
    adapt_lr: float = 5e-3
    stop_minutes: float | None = None  # stop reading after this many minutes
    threshold: float | None = None    # seizure alarm threshold (default: model.pt's)
    group: int = 256                  # windows scored together (latency: group × hop)
    seed: int = 0
    threads: int = 1
    channels: list[str] | None = None  # the recording's channels, in the model's input order


# ------------------------------------------------------------------ labels
def window_labels(t_s: np.ndarray, window_s: float, seizures, overlap: float = 0.5) -> np.ndarray:
    """1 where a window [t, t + window_s) overlaps seizures for ≥ ``overlap``·window_s
    (the CHBMIT loader's rule), else 0; (B,) int64."""
    ov = np.zeros(len(t_s))
    for a, b in seizures:
        ov += np.clip(np.minimum(t_s + window_s, b) - np.maximum(t_s, a), 0, None)
    return (ov >= overlap * window_s - 1e-9).astype(np.int64)


def beat_table(rec: Recording, classes) -> tuple[np.ndarray, np.ndarray]:
    """(R peaks (recording samples), class index) of the annotated beats of ``classes``."""
    from bimsnn.data.mitbih import AAMI_MAP

    samples, symbols = rec.beats
    cls = [AAMI_MAP.get(s) for s in symbols]
    keep = np.array([c in classes for c in cls], bool)
    return (np.asarray(samples)[keep],
            np.array([classes.index(c) for c, k in zip(cls, keep) if k], np.int64))


# ------------------------------------------------------------------ adaptation
def adapt(model: torch.nn.Module, ck: dict, x: torch.Tensor, y: np.ndarray, *,
          rule: str = "rtrl", epochs: int = 40, lr: float = 5e-3, schedule: str = "cosine",
          seed: int = 0) -> tuple[torch.nn.Module, dict]:
    """A copy of ``model`` trained online on the patient's labelled windows.

    Args:
        x: (N, T, C') encoded windows (``Scores.inputs``). y: (N,) labels.
        rule: "hybrid" (eq. 4, λ and balance from the model's training config) or "rtrl",
            chunked at the model's training chunk (eligibility traces across chunks).
        epochs, lr, schedule: passes over the patient's windows, AdamW learning rate, and
            "constant" or "cosine" decay (defaults measured on MIT-BIH 208, RESULTS.md).
    Returns:
        (adapted copy, info: n, class counts, seconds). ``model`` itself is not touched.
    """
    if rule not in ("hybrid", "rtrl"):
        raise ValueError(f"adapt: rule must be 'hybrid' or 'rtrl', got {rule!r}")
    tcd = {k: v for k, v in (ck.get("train_config") or {}).items()
           if k in TrainConfig.__dataclass_fields__}
    base = TrainConfig(**tcd)
    tc = replace(base, rule=rule, epochs=int(epochs), lr=float(lr), schedule=schedule,
                 chunk=base.chunk or 16, out_dir=None, resume=False, max_steps=None,
                 patience=0, restore_best=False, progress=False, plots=False, prune=None,
                 seed=int(seed), batch_size=min(base.batch_size, 32), device="cpu")
    adapted = copy.deepcopy(model).train()
    n_classes = 2 if tc.task == "binary" else int(ck.get("n_classes") or
                                                  len((ck.get("preprocessing") or {}).get("classes") or []) or 2)
    loss_fn = class_weighted_ce(y, n_classes) if tc.task != "multilabel" else None
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        fit(adapted, WindowSet(x, y, None), None, tc, loss_fn=loss_fn)
    adapted.eval()
    counts = {int(k): int(v) for k, v in zip(*np.unique(y, return_counts=True))}
    return adapted, {"n": int(len(y)), "class_counts": counts, "rule": rule, "epochs": tc.epochs,
                     "lr": tc.lr, "chunk": tc.chunk, "seconds": time.perf_counter() - t0}


# ------------------------------------------------------------------ one recording
class _EventLog:
    """events.csv, appended and flushed as each alarm closes."""

    def __init__(self, path: Path):
        self.path, self.n = path, 0
        with open(path, "w", newline="") as f:
            csv.writer(f).writerow(["onset_s", "offset_s", "peak"])

    def add(self, events: list[Event]) -> None:
        if not events:
            return
        with open(self.path, "a", newline="") as f:
            w = csv.writer(f)
            for e in events:
                w.writerow([f"{e.onset_s:.3f}", f"{e.offset_s:.3f}", f"{e.peak:.6f}"])
        self.n += len(events)


def monitor_recording(model_pt, path, out: Path, cfg: MonitorConfig | None = None) -> dict:
    """Stream one recording through the model at ``model_pt`` (see the module); returns
    the metrics written to ``out/metrics.json``.

    Raises:
        DataError: naming the recording (unreadable, truncated, NaN samples, missing
            channels); the events and scores up to the failing block are kept on disk.
    """
    cfg = cfg or MonitorConfig()
    model, ck, kind = load_monitor_model(model_pt)
    pre = ck["preprocessing"]
    chans = pre.get("channels") if kind == "seizure" else \
        [int(c) if str(c).lstrip("-").isdigit() else c for c in pre.get("lead", [0])]
    if cfg.channels:        # any EDF / record: its own names for the model's inputs
        if len(cfg.channels) != len(chans):
            raise DataError(path, f"--channels names {len(cfg.channels)} channels; the model "
                                  f"takes {len(chans)} ({', '.join(map(str, chans))})")
        chans = [int(c) if str(c).lstrip("-").isdigit() else c for c in cfg.channels]
    rec = open_recording(path, chans or None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labelled = (rec.seizures is not None) if kind == "seizure" else (rec.beats is not None)
    adapt_s = cfg.adapt_minutes * 60 if (cfg.adapt_minutes > 0 and labelled) else 0.0
    stop = None if cfg.stop_minutes is None else int(round(cfg.stop_minutes * 60 * rec.fs))
    mon = Monitor((model, ck), rec.fs, threshold=cfg.threshold, group=cfg.group,
                  keep_inputs=adapt_s > 0)
    if kind == "beats":
        classes = list(mon.classes)
        if rec.beats is None:
            raise DataError(rec.path, "no .atr beside the record: beat models need R-peak "
                                      "annotations (the beat positions) to monitor it")
        r_peaks, beat_y = beat_table(rec, classes)
        label_of = dict(zip(np.round(r_peaks * mon.sfreq / rec.fs).astype(int).tolist(),
                            beat_y.tolist()))
    log = _EventLog(out / "events.csv") if kind == "seizure" else None
    parts: dict[str, list] = {"t": [], "general": [], "deployed": [], "sample": []}
    buf_x, buf_t = [], []
    info: dict = {"recording": str(rec.path), "kind": kind, "fs": rec.fs,
                  "adapt_minutes": cfg.adapt_minutes if adapt_s else 0.0}
    if cfg.adapt_minutes > 0 and not labelled:
        info["adaptation"] = "skipped: the recording has no annotations"
    block = max(1, int(round(cfg.block_s * rec.fs)))
    bounds = [0, *([int(round(adapt_s * rec.fs))] if adapt_s else [])]
    wall, cpu = time.perf_counter(), time.process_time()
    t_adapt_cpu = 0.0
    t_adapt = 0.0
    n_read = 0
    adapted_mon, adapt_done = None, False

    def take(s, which) -> None:
        if which == "general":
            parts["t"].append(s.t_s)
            parts["sample"].append(s.sample)
            parts["general"].append(s.scores)
            if log is not None and adapted_mon is None:     # deployed until adapted
                log.add(s.events)
            if s.inputs is not None and not adapt_done:
                buf_x.append(s.inputs)
                buf_t.append((s.t_s, s.sample))
        if which == "deployed":
            parts["deployed"].append(s.scores)
            if log is not None:
                log.add(s.events)

    try:
        end = rec.n if stop is None else min(stop, rec.n)
        for a, x in rec.blocks(block, end):
            # the adaptation boundary falls between two feeds
            cuts = [c - a for c in bounds[1:] if a < c < a + x.shape[1]]
            for lo, hi in zip([0, *cuts], [*cuts, x.shape[1]]):
                xs = x[:, lo:hi]
                beats = None
                if kind == "beats":
                    sel = (r_peaks >= a + lo) & (r_peaks < a + hi)
                    beats = r_peaks[sel]
                try:
                    take(mon.feed(xs, beats), "general")
                    if adapted_mon is not None:
                        take(adapted_mon.feed(xs, beats), "deployed")
                except ValueError as e:            # NaN samples, wrong shape
                    raise DataError(rec.path, str(e)) from e
                n_read = a + hi
                if adapt_s and not adapt_done and n_read >= bounds[1]:
                    take(mon.drain(), "general")
                    t0, c0 = time.perf_counter(), time.process_time()
                    adapt_done = True
                    adapted_mon = _adapt_now(mon, ck, buf_x, buf_t, kind, rec, adapt_s,
                                             label_of if kind == "beats" else None, cfg, info)
                    t_adapt += time.perf_counter() - t0
                    t_adapt_cpu += time.process_time() - c0
                    buf_x.clear()
                    mon.keep_inputs = False
        take(mon.flush(), "general")
        if adapted_mon is not None:
            take(adapted_mon.flush(), "deployed")
    finally:
        _save_scores(out, parts, kind, rec, adapted_mon is not None, mon,
                     label_of if kind == "beats" else None, log)
    secs = time.perf_counter() - wall - t_adapt
    cpu_s = time.process_time() - cpu - t_adapt_cpu
    info.update(seconds_streaming=secs, recording_s=n_read / rec.fs,
                real_time_factor=(n_read / rec.fs) / max(secs, 1e-9),
                # per CPU second of this process: what a loaded machine does not change
                real_time_factor_cpu=(n_read / rec.fs) / max(cpu_s, 1e-9),
                adaptation_seconds=t_adapt)
    scores = np.load(out / "scores.npz")
    info.update(_metrics(scores, kind, rec, mon, adapt_s, adapted_mon is not None))
    if log is not None:
        info["n_events"] = log.n
    if adapted_mon is not None:
        models.save(out / "adapted_model.pt", adapted_mon.model, ck["spec"],
                    preprocessing=ck["preprocessing"],
                    **{k: v for k, v in ck.items() if k not in
                       ("format", "model", "spec", "preprocessing")},
                    adapted_on=f"{rec.path} first {cfg.adapt_minutes:g} min")
    _timeline(out / "timeline.png", scores, kind, rec, mon, adapt_s)
    write_json(info, out / "metrics.json")
    return info


def _adapt_now(mon: Monitor, ck, buf_x, buf_t, kind, rec, adapt_s, label_of, cfg, info):
    """Train the adapted copy on the buffered windows that lie inside the adaptation
    period; returns a Monitor of the copy that has seen the same samples."""
    x = torch.cat(buf_x) if buf_x else torch.zeros(0)
    t = np.concatenate([tt for tt, _ in buf_t]) if buf_t else np.zeros(0)
    smp = np.concatenate([s for _, s in buf_t]) if buf_t else np.zeros(0, np.int64)
    if kind == "seizure":
        inside = t + mon.pre.window_s <= adapt_s + 1e-9
        y = window_labels(t[inside], mon.pre.window_s, rec.seizures)
    else:
        inside = (t + 0.45 <= adapt_s) & np.array([int(s) in label_of for s in smp], bool)
        y = np.array([label_of[int(s)] for s in smp[inside]], np.int64)
    if len(np.unique(y)) < 2:
        info["adaptation"] = (f"skipped: the first {adapt_s / 60:g} min hold "
                              f"{len(y)} labelled windows of {len(np.unique(y))} class(es)")
        return None
    adapted, ainfo = adapt(mon.model, ck, x[torch.from_numpy(inside)], y,
                           rule=cfg.adapt_rule, epochs=cfg.adapt_epochs, lr=cfg.adapt_lr,
                           schedule="cosine", seed=cfg.seed)
    info["adaptation"] = ainfo
    # a twin monitor of the adapted copy, brought to the same point of the recording: the
    # state that matters (filters, sample buffer, window counter) is copied, the model swapped
    twin = copy.copy(mon)
    for k, v in mon.__dict__.items():
        if k != "model":
            setattr(twin, k, copy.deepcopy(v))
    twin.model, twin.keep_inputs = adapted, False
    return twin


def _save_scores(out: Path, parts, kind, rec, adapted: bool, mon, label_of, log) -> None:
    cat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}
    n_gen = len(cat["general"])
    dep = cat["general"].copy()
    if adapted and len(cat["deployed"]):
        dep[n_gen - len(cat["deployed"]):] = cat["deployed"]   # the twin's tail
    d = {"t_s": cat["t"], "scores": dep, "scores_general": cat["general"],
         "sample": cat["sample"]}
    if kind == "seizure" and rec.seizures is not None:
        d["labels"] = window_labels(cat["t"], mon.pre.window_s, rec.seizures)
    if kind == "beats":
        d["labels"] = np.array([label_of.get(int(s), -1) for s in cat["sample"]], np.int64)
        d["classes"] = np.array(mon.classes)
    np.savez(out / "scores.npz", **d)


def _metrics(s, kind, rec, mon: Monitor, adapt_s: float, adapted: bool) -> dict:
    from bimsnn.metrics import classification_metrics, clinical_metrics

    if "labels" not in s.files:
        return {"metrics": "no annotations: nothing to score against"}
    t = s["t_s"]
    after = t >= adapt_s                       # what follows the adaptation period
    res = {"scored_from_s": adapt_s, "n_scored": int(after.sum())}
    which = {"general": s["scores_general"]}
    if adapted:
        which["adapted"] = s["scores"]
    for name, sc in which.items():
        sc = sc[after]
        if kind == "seizure":
            metas = [{"patient": "rec", "file": rec.name, "start_s": float(v)} for v in t[after]]
            # seizures over before scoring starts (inside the adaptation period) are not
            # counted as missed
            later = [(a, b) for a, b in rec.seizures if b > adapt_s]
            clin = clinical_metrics(sc, metas, mon.threshold, {f"rec/{rec.name}": later},
                                    mon.pre.window_s, mon.k)
            y = s["labels"][after]
            auc = classification_metrics(sc, y, "binary", mon.threshold)["auc"] \
                if 0 < y.sum() < len(y) else float("nan")
            res[name] = {**clin, "auc_roc": auc}
        else:
            y = s["labels"][after]
            ok = y >= 0
            m = classification_metrics(sc[ok], y[ok], "multiclass")
            res[name] = {k: m[k] for k in ("macro_f1", "acc", "confusion") if k in m}
            res[name]["n_beats"] = int(ok.sum())
    return res


def _timeline(path: Path, s, kind, rec, mon: Monitor, adapt_s: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = s["t_s"]
    fig, ax = plt.subplots(figsize=(10, 3))
    if kind == "seizure":
        ax.plot((t + mon.pre.window_s) / 60, s["scores"], lw=0.8, label="P(ictal)")
        ax.axhline(mon.threshold, color="k", ls="--", lw=0.7, label="threshold")
        for i, (a, b) in enumerate(rec.seizures or []):
            ax.axvspan(a / 60, b / 60, color="r", alpha=0.2, label="annotated seizure" if i == 0 else None)
        ev = path.with_name("events.csv")
        rows = list(csv.DictReader(ev.open())) if ev.is_file() else []
        for i, r in enumerate(rows):              # alarms: a bar from onset to offset
            a, b = float(r["onset_s"]) / 60, float(r["offset_s"]) / 60
            ax.plot([a, max(b, a + 0.02)], [1.04, 1.04], color="darkorange", lw=4,
                    solid_capstyle="butt", label="alarm" if i == 0 else None)
        ax.set_ylabel("score")
    else:
        pred = np.argmax(s["scores"], axis=1) if len(t) else np.zeros(0, int)
        ax.plot(t / 60, pred, "|", ms=8, label="predicted")
        if "labels" in s.files:
            ok = s["labels"] >= 0
            ax.plot(t[ok] / 60, s["labels"][ok] + 0.25, "|", color="r", ms=8, label="annotated")
        ax.set_yticks(range(len(mon.classes)), mon.classes)
        ax.set_ylabel("beat class")
    if adapt_s:
        ax.axvline(adapt_s / 60, color="g", lw=1, label="adapted from here")
    ax.set_xlabel("time (min)")
    ax.set_title(f"{rec.name}: {'seizure' if kind == 'seizure' else 'beat'} monitor")
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------ CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bimsnn.monitor", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="model.pt of seizure_detection (phase causal) or of "
                   "ecg_classification --dataset mitbih")
    p.add_argument("recordings", nargs="+", help="EDF files or WFDB records")
    d = MonitorConfig()
    p.add_argument("--out", default=d.out, help="output folder (one sub-folder per recording)")
    p.add_argument("--block-s", type=float, default=d.block_s, help="seconds read per block")
    p.add_argument("--adapt-minutes", type=float, default=d.adapt_minutes,
                   help="adapt online on the first M labelled minutes of each record (0: off)")
    p.add_argument("--adapt-rule", default=d.adapt_rule, choices=("rtrl", "hybrid"),
                   help="online rule of the adaptation (chunked)")
    p.add_argument("--adapt-epochs", type=int, default=d.adapt_epochs)
    p.add_argument("--adapt-lr", type=float, default=d.adapt_lr)
    p.add_argument("--stop-minutes", type=float, default=None,
                   help="stop after this many minutes of each recording")
    p.add_argument("--threshold", type=float, default=None,
                   help="seizure alarm threshold (default: the one in model.pt)")
    p.add_argument("--group", type=int, default=d.group, help="windows scored together")
    p.add_argument("--channels", nargs="+", default=None,
                   help="the recording's channels (EDF labels or WFDB signals) fed to the "
                   "model's inputs, in its order (default: the model's own channel names)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--debug", action="store_true", help="tracebacks instead of one-line errors")
    return p


def main(argv: list[str] | None = None) -> dict:
    """The CLI: monitor each recording, print one line each with its real-time factor."""
    a = _parser().parse_args(argv)
    cfg = MonitorConfig(**{k: getattr(a, k) for k in MonitorConfig.__dataclass_fields__})
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"model": a.model, "config": asdict(cfg), "recordings": {}}
    for r in a.recordings:
        name = Path(r).stem if Path(r).suffix.lower() == ".edf" else Path(r).with_suffix("").name
        res = monitor_recording(a.model, r, out / name, cfg)
        summary["recordings"][name] = res
        print(_line(name, res))
        write_json(summary, out / "summary.json")
    print(f"wrote {out}")
    return summary


def _line(name: str, res: dict) -> str:
    bits = [f"{name}: {res['recording_s'] / 60:.1f} min, real-time factor "
            f"{res['real_time_factor']:.0f}x ({res['real_time_factor_cpu']:.0f}x per CPU "
            "second)"]
    if res["kind"] == "seizure":
        bits.append(f"{res.get('n_events', 0)} alarms")
    for k in ("general", "adapted"):
        m = res.get(k)
        if isinstance(m, dict):
            if "sensitivity" in m:
                bits.append(f"{k}: sens {m['sensitivity']:.2f} FA/h {m['false_alarms_per_hour']:.1f}")
            elif "macro_f1" in m:
                bits.append(f"{k}: macro-F1 {m['macro_f1']:.3f}")
    return ", ".join(bits)


def _json(obj) -> str:
    return json.dumps(obj, indent=1, default=str)
