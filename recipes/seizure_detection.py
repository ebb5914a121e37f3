"""Seizure detection on scalp EEG with a spiking Mamba trained online by the Hybrid rule.

Symbols: N windows, T steps per window (window_s·fs), C EEG channels, 2C ADM afferents
(ON then OFF), D model width, k alarm smoothing (consecutive positive windows).

    python recipes/seizure_detection.py                        # demo data, ~1 min on 2 cores
    python recipes/seizure_detection.py --data-dir /data/chbmit/1.0.0 --patients chb01 chb03
    python recipes/seizure_detection.py --eval-only --data-dir NEW_RECORDINGS  # runs/..._eval
    torchrun --nproc_per_node=2 recipes/seizure_detection.py   # data parallel, rank 0 writes

Pipeline: EDF → band-pass, resample to fs, per-file robust z-score (CHBMIT) → windows
(window_s, hop stride_s) → ADM spikes per window (threshold in robust-z units) → model.
The demo data (simulated, CHB-MIT layout) is written once to ``datasets/demo_chbmit``.

Split: whole recordings go to train, val or test; seizure-bearing and seizure-free
recordings are dealt separately (seeded) so each side gets seizures where possible
(``--split patient --test-patients chb02`` holds out patients instead). No recording
contributes windows to two sides. The val split picks the best epoch and the decision
threshold (max window-level F1); the test split is touched once, at the end.

Clinical metrics (continuous CHB-MIT-layout recordings; not Bonn), from per-window scores
along each test recording's timeline, with decisions at each window's *end* (causal):
    alarm on     at a window when it and the k−1 windows before it all score ≥ threshold;
    detected     a seizure, if an alarm is on at a decision time in [onset, offset + window_s]
                 (a window that still overlaps the seizure); sensitivity = detected / seizures;
    latency      first such decision time − onset, averaged over detected seizures (s);
    false alarm  a run of consecutive "on" decisions whose windows overlap no seizure;
                 per hour of interictal recording (recording span minus seizures).

Outputs in ``--out`` (default runs/seizure_detection): metrics.json, report.md, roc.png,
pr.png, raster.png, curves.png, model.pt (deployable: weights + model spec + preprocessing
+ threshold), ckpt.pt/best.pt (training state, ``--resume``), compare/<model>/ (baselines).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, when run as a script

from _common import (  # noqa: E402
    SPIKING,
    ModelConfig,
    _f,
    class_weighted_ce,
    f1_threshold,
    fmt,
    hidden_spikes,
    interrupted,
    load_model,
    materialize,
    md_table,
    model_spec,
    parse,
    plot_rasters,
    plot_roc_and_pr,
    repo_path,
    save_model,
    train_one,
)

from bimsnn import _ddp  # noqa: E402
from bimsnn._ckpt import write_json  # noqa: E402
from bimsnn.data import CHBMIT, Bonn, DataError, demo  # noqa: E402
from bimsnn.encoding import adm, delta  # noqa: E402
from bimsnn.train import TrainConfig, compute_metrics, evaluate  # noqa: E402

DEMO_DIR = "datasets/demo_chbmit"


@dataclass
class SeizureConfig:
    dataset: str = _f("demo", "demo (generated CHB-MIT layout) | chbmit | bonn",
                      ("demo", "chbmit", "bonn"))
    data_dir: str | None = _f(None, "dataset root (demo default: datasets/demo_chbmit)")
    patients: list[str] | None = _f(None, "CHB-MIT patients, e.g. chb01 chb03 (default: all)")
    split: str = _f("recording", "hold out whole recordings, or whole patients",
                    ("recording", "patient"))
    test_patients: list[str] | None = _f(None, "--split patient: test patients (default: last)")
    test_frac: float = _f(0.25, "fraction of recordings held out for test (per group)")
    val_frac: float = _f(0.25, "fraction of recordings for validation (per group)")
    split_seed: int = _f(0, "seed of the recording shuffle (--seed seeds the model)")
    window_s: float = _f(4.0, "window length (s)")
    stride_s: float = _f(2.0, "window hop (s); also the alarm timeline's resolution")
    sfreq: float = _f(32.0, "resample to this rate (Hz) = time steps per second")
    l_freq: float | None = _f(0.5, "band-pass low edge (Hz)")
    h_freq: float | None = _f(15.0, "band-pass high edge (Hz), below sfreq / 2")
    encoder: str = _f("adm", "spike encoder: adm (level crossing) | delta", ("adm", "delta"))
    spike_threshold: float = _f(0.5, "encoder threshold, in robust-z units of the signal")
    smooth_k: int = _f(2, "alarm when k consecutive windows score >= threshold")
    eval_only: bool = _f(False, "evaluate --checkpoint on --data-dir (every window is test)")
    checkpoint: str | None = _f(None, "--eval-only model (default: runs/seizure_detection/model.pt)")
    threads: int = _f(1, "torch intra-op threads; tiny per-step ops run fastest on 1")


# Defaults sized for the demo: ~0.5 min of training on 2 quiet cores (see the docstring).
TRAIN = TrainConfig(epochs=8, batch_size=64, lr=5e-3, rule="hybrid", lam=0.9, task="binary",
                    loss_window=1.0, grad_clip=1.0)
MODEL = ModelConfig(model="spiking_mamba", d_model=16, d_state=8)


# ---------------------------------------------------------------- data
def data_root(cfg: SeizureConfig) -> Path:
    """The dataset folder; the demo is generated there once (rank 0; others wait)."""
    if cfg.dataset != "demo":
        if not cfg.data_dir:
            raise DataError(None, f"--dataset {cfg.dataset} needs --data-dir (see datasets/README.md)")
        return Path(cfg.data_dir)
    root = repo_path(cfg.data_dir, DEMO_DIR)
    if _ddp.dist_info().is_main and not cfg.data_dir:
        demo.chbmit(root)  # idempotent: returns at once when complete
    _ddp.barrier()
    return root


def open_dataset(pre: dict, root: Path, patients=None, channels=None):
    """CHBMIT (demo too) or Bonn with the preprocessing in ``pre`` (raw windows, no encoder)."""
    common = dict(window_s=pre["window_s"], stride_s=pre["stride_s"], l_freq=pre["l_freq"],
                  h_freq=pre["h_freq"], sfreq=pre["sfreq"])
    if pre["kind"] == "bonn":
        return Bonn(root, **common)
    return CHBMIT(root, patients=patients, channels=channels, max_cached_files=4, **common)


def encoder_fn(pre: dict):
    """(T, N, C) float → (T, N, 2C) ON/OFF spikes, each window from its own first sample."""
    fn = adm if pre["encoder"] == "adm" else delta
    return lambda x: fn(x, pre["spike_threshold"])


def split_recordings(meta: pd.DataFrame, cfg: SeizureConfig, seed: int) -> dict[str, list[str]]:
    """{"train", "val", "test"}: recording names; seizure-bearing and seizure-free
    recordings are shuffled (seeded) and dealt separately (see the module docstring)."""
    rec = meta.groupby("recording").agg(ictal=("label", "max"),
                                        patient=("patient", "first") if "patient" in meta else
                                        ("recording", "first"))
    rng = np.random.default_rng(seed)
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    if cfg.split == "patient":
        pats = sorted(rec["patient"].unique())
        held = cfg.test_patients or pats[-1:]
        unknown = set(held) - set(pats)
        if unknown or len(held) == len(pats):
            raise ValueError(f"--test-patients {held}: need known patients {pats}, not all")
        out["test"] = sorted(rec.index[rec["patient"].isin(held)])
        rec = rec.drop(index=out["test"])
    for ictal in (1, 0):
        names = list(rng.permutation(sorted(rec.index[rec["ictal"] == ictal])))
        n = len(names)
        n_test = 0 if cfg.split == "patient" else (max(1, round(cfg.test_frac * n)) if n >= 2 else 0)
        n_val = round(cfg.val_frac * n)
        n_val = max(1, n_val) if ictal and n - n_test >= 2 else min(n_val, max(0, n - n_test - 1))
        out["test"] += names[:n_test]
        out["val"] += names[n_test:n_test + n_val]
        out["train"] += names[n_test + n_val:]
    return {k: sorted(v) for k, v in out.items()}


def seizure_table(ds) -> dict[str, list[tuple[float, float]]]:
    """{"chbNN/chbNN_MM.edf": [(onset, offset) s, ...]} for CHB-MIT layouts; {} for Bonn."""
    return {f"{p.parent.name}/{p.name}": [tuple(s) for s in ds.seizures[p]]
            for p in getattr(ds, "files", []) if hasattr(ds, "seizures")}


# ---------------------------------------------------------------- clinical metrics
def clinical_metrics(scores, metas: list[dict], threshold: float, seizures: dict,
                     window_s: float, k: int) -> dict:
    """Sensitivity per seizure, false alarms per interictal hour and mean latency (s)
    along each recording's timeline (definitions in the module docstring)."""
    df = pd.DataFrame({"rec": [f"{m['patient']}/{m['file']}" for m in metas],
                       "start": [m["start_s"] for m in metas], "score": np.asarray(scores)})
    n_sz, latencies, false, inter_s = 0, [], 0, 0.0
    for rec, g in df.groupby("rec", sort=True):
        g = g.sort_values("start")
        t_end = g["start"].to_numpy() + window_s                       # decision times
        pos = (g["score"].to_numpy() >= threshold).astype(int)
        on = np.convolve(pos, np.ones(k, int), "full")[:len(pos)] == k  # k in a row
        sz = seizures.get(rec, [])
        span = t_end[-1] - g["start"].iloc[0]
        inter_s += span - sum(min(b, t_end[-1]) - max(a, g["start"].iloc[0]) for a, b in sz
                              if b > g["start"].iloc[0] and a < t_end[-1])
        for a, b in sz:
            n_sz += 1
            hit = np.flatnonzero(on & (t_end >= a) & (t_end <= b + window_s))
            if len(hit):
                latencies.append(float(t_end[hit[0]] - a))
        edges = np.diff(np.r_[0, on.astype(int), 0])                   # alarm runs
        for i0, i1 in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1):
            w0, w1 = t_end[i0] - window_s, t_end[i1]
            false += not any(w0 < b and a < w1 for a, b in sz)
    hours = inter_s / 3600
    return {"sensitivity": len(latencies) / n_sz if n_sz else float("nan"),
            "false_alarms_per_hour": false / hours if hours > 0 else float("nan"),
            "detection_latency_s": float(np.mean(latencies)) if latencies else float("nan"),
            "n_seizures": n_sz, "n_detected": len(latencies), "n_false_alarms": int(false),
            "interictal_hours": hours, "threshold": threshold, "smooth_k": k}


def score_model(model, spec, tc: TrainConfig, val, test, pre: dict, seizures: dict,
                threshold: float | None = None) -> tuple[dict, dict]:
    """(metrics, raw test results): threshold from val (max F1) unless given."""
    tcm = replace(tc, rule=tc.rule if spec["name"] in SPIKING else "bptt")
    if threshold is None:
        rv = evaluate(model, val, tcm)
        threshold = f1_threshold(rv["scores"], rv["labels"])
    rt = evaluate(model, test, tcm)
    w = compute_metrics(rt["scores"], rt["labels"], "binary", threshold)
    m = {"auc_roc": w["auc"], "auc_pr": w["ap"], "window": w, "threshold": threshold}
    clin = (clinical_metrics(rt["scores"], rt["metas"], threshold, seizures, pre["window_s"],
                             pre["smooth_k"]) if seizures else {})
    m.update({k: clin.get(k, float("nan")) for k in
              ("sensitivity", "false_alarms_per_hour", "detection_latency_s")})
    m["clinical"] = clin
    return m, rt


# ---------------------------------------------------------------- report
def write_outputs(out: Path, main: dict, rows: dict, curves: dict, test, model, pre: dict,
                  info: dict) -> None:
    """roc.png, pr.png (every model of the run), raster.png, metrics.json, report.md."""
    plot_roc_and_pr({k: (v["labels"], v["scores"]) for k, v in curves.items()}, out,
                    "held-out test windows")
    rt = next(iter(curves.values()))  # the main model's test results
    ictal = np.flatnonzero(rt["labels"] == 1)
    if len(ictal):
        i = int(ictal[np.argmax(rt["scores"][ictal])])  # its most confident ictal window
        x, _, meta = test[i]
        panels = [("input (ADM ON|OFF)", x.float())]
        hid = hidden_spikes(model, x)
        if hid is not None:
            panels.append(("hidden LIF", hid))
        where = "/".join(str(meta[k]) for k in ("patient", "file", "set", "segment") if k in meta)
        plot_rasters(panels, out / "raster.png", f"ictal test window {where} at "
                     f"{meta['start_s']:.0f} s (score {rt['scores'][i]:.2f})", 1 / pre["sfreq"])
    write_json({**main, "comparison": rows, **info}, out / "metrics.json")
    (out / "report.md").write_text(report_md(main, rows, pre, info))


def report_md(main: dict, rows: dict, pre: dict, info: dict) -> str:
    head = ["model", "rule", "epochs", "AUC-ROC", "AUC-PR", "seizure sensitivity",
            "false alarms/h", "latency (s)", "train (s)"]
    table = md_table(head, [[n, r["rule"], r.get("epochs"), r["auc_roc"], r["auc_pr"], r["sensitivity"],
                             r["false_alarms_per_hour"], r["detection_latency_s"],
                             r.get("train_s")] for n, r in rows.items()])
    c = main.get("clinical") or {}
    split, nw, ni = info.get("split", {}), info.get("n_windows", {}), info.get("n_ictal", {})
    sizes = " / ".join(f"{k} {nw[k]} ({ni.get(k, 0)} ictal)" for k in nw)
    spec = main["model"]
    lines = [f"# Seizure detection: {info['dataset']}", "",
             f"Data: `{info['data_dir']}`. Windows: {sizes}. {pre['window_s']:g} s windows "
             f"every {pre['stride_s']:g} s at {pre['sfreq']:g} Hz (band-pass "
             f"{pre['l_freq']}–{pre['h_freq']} Hz), {pre['encoder'].upper()} spikes at "
             f"{pre['spike_threshold']:g} robust-z → {info.get('n_inputs')} afferents.", "",
             f"Model: `{spec['name']}` {spec['kwargs']}, rule `{main['rule']}`"
             + (f" (λ = {main['lam']})" if main["rule"] == "hybrid" else "") + ".",
             "", f"Test recordings (never trained on): {', '.join(split.get('test', [])) or 'all'}.",
             f"Validation: {', '.join(split.get('val', [])) or '-'}. "
             f"Train: {', '.join(split.get('train', [])) or '-'}.", "",
             "## Held-out test, all models from this run", "", table, "",
             f"Threshold per model: max F1 on the validation windows (main model: "
             f"{fmt(main['threshold'])}). Alarm: {pre['smooth_k']} consecutive windows above it.",
             f"Main model: {c.get('n_detected', 'n/a')}/{c.get('n_seizures', 'n/a')} seizures "
             f"detected, {c.get('n_false_alarms', 'n/a')} false alarms in "
             f"{fmt(c.get('interictal_hours'), 2)} interictal hours.", "",
             "Definitions (see the recipe's docstring): a seizure counts as detected if an alarm "
             "is on at a window end within [onset, offset + window]; latency = that time − "
             "onset; a false alarm is an alarm run overlapping no seizure.", "",
             f"Timings: {', '.join(f'{k} {v:.1f} s' for k, v in info.get('timings', {}).items())}.",
             "", "Caveats: the demo recordings are simulated (CHB-MIT format, not EEG); with a "
             "handful of test seizures, sensitivity and false-alarm rates have wide error bars. "
             "AUCs are over test windows pooled across recordings.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- main
def load_split_data(cfg: SeizureConfig, pre: dict, root: Path, seed: int):
    ds = open_dataset(pre, root, cfg.patients)
    names = split_recordings(ds.meta, cfg, seed)
    enc = encoder_fn(pre)
    sets = {k: materialize(ds, np.flatnonzero(ds.meta["recording"].isin(v).to_numpy()), enc)
            for k, v in names.items()}
    return ds, names, sets


def main(argv: list[str] | None = None) -> dict:
    t_start = time.perf_counter()
    cfg, mc, tc = parse(SeizureConfig(), MODEL, TRAIN, argv=argv, description=__doc__)
    torch.set_num_threads(cfg.threads)
    dist, _ = _ddp.setup(tc.device)
    default_out = "runs/seizure_detection" + ("_eval" if cfg.eval_only else "")
    out = repo_path(tc.out_dir, default_out)
    tc = replace(tc, out_dir=str(out))
    root = data_root(cfg)
    if cfg.eval_only:
        return eval_only(cfg, tc, out, root, dist, t_start)

    pre = dict(kind="bonn" if cfg.dataset == "bonn" else "chbmit", window_s=cfg.window_s,
               stride_s=cfg.stride_s, sfreq=cfg.sfreq, l_freq=cfg.l_freq, h_freq=cfg.h_freq,
               encoder=cfg.encoder, spike_threshold=cfg.spike_threshold, smooth_k=cfg.smooth_k)
    ds, names, sets = load_split_data(cfg, pre, root, cfg.split_seed)
    pre["channels"] = list(getattr(ds, "channels", []))
    seizures = seizure_table(ds)
    timings = {"data": time.perf_counter() - t_start}
    n_inputs = sets["train"].x.shape[-1]
    loss_fn = class_weighted_ce(sets["train"].labels, 2)

    spec = model_spec(mc, mc.model, n_inputs, 2)
    model, history, secs = train_one(spec, sets["train"], sets["val"], tc, loss_fn)
    timings[f"train {mc.model}"] = secs
    if interrupted(tc):
        print(f"stopped at --max-steps {tc.max_steps}; continue with --resume")
        return {"interrupted": True, "out": str(out)}
    t0, curves = time.perf_counter(), {}
    main_m, curves[mc.model] = score_model(model, spec, tc, sets["val"], sets["test"], pre,
                                           seizures)
    timings[f"eval {mc.model}"] = time.perf_counter() - t0
    rule = tc.rule if mc.model in SPIKING else "bptt"
    rows = {mc.model: {**_row(main_m), "rule": rule, "epochs": tc.epochs, "train_s": secs}}
    for name in mc.baselines:
        bspec = model_spec(mc, name, n_inputs, 2)
        btc = replace(tc, rule="bptt", lr=mc.compare_lr, epochs=mc.compare_epochs or tc.epochs,
                      prune=None, max_steps=None,
                      out_dir=str(out / "compare" / name))
        bmodel, _, bsecs = train_one(bspec, sets["train"], sets["val"], btc, loss_fn)
        bm, curves[name] = score_model(bmodel, bspec, btc, sets["val"], sets["test"], pre, seizures)
        rows[name] = {**_row(bm), "rule": "bptt", "epochs": btc.epochs, "train_s": bsecs}
        timings[f"train {name}"] = bsecs
    timings["total"] = time.perf_counter() - t_start
    result = {**{k: main_m[k] for k in ("auc_roc", "auc_pr", "sensitivity",
                                        "false_alarms_per_hour", "detection_latency_s",
                                        "threshold")},
              "model": spec, "rule": rule, "lam": tc.lam, "window": main_m["window"],
              "clinical": main_m["clinical"]}
    info = {"dataset": cfg.dataset, "data_dir": str(root), "split": names,
            "n_windows": {k: len(v) for k, v in sets.items()},
            "n_ictal": {k: int(v.labels.sum()) for k, v in sets.items()},
            "n_inputs": n_inputs, "timings": timings, "history": history,
            "world_size": dist.world_size,
            "config": {"recipe": asdict(cfg), "model": asdict(mc), "train": asdict(tc)}}
    if dist.is_main:
        save_model(out / "model.pt", model, spec, preprocessing=pre, threshold=main_m["threshold"],
                   rule=rule, lam=tc.lam, train_config=asdict(tc))
        write_outputs(out, result, rows, curves, sets["test"], model, pre, info)
        _print_summary(rows, out, timings["total"])
    return {**result, "comparison": rows, **info, "out": str(out)}


def _row(m: dict) -> dict:
    return {k: m[k] for k in ("auc_roc", "auc_pr", "sensitivity", "false_alarms_per_hour",
                              "detection_latency_s", "threshold")}


def _print_summary(rows: dict, out: Path, total: float) -> None:
    for n, r in rows.items():
        print(f"{n:14s} AUC-ROC {fmt(r['auc_roc'])}  AUC-PR {fmt(r['auc_pr'])}  "
              f"sens {fmt(r['sensitivity'], 2)}  FA/h {fmt(r['false_alarms_per_hour'], 1)}  "
              f"latency {fmt(r['detection_latency_s'], 1)} s")
    print(f"wrote {out} in {total:.0f} s")


def eval_only(cfg: SeizureConfig, tc: TrainConfig, out: Path, root: Path, dist, t_start) -> dict:
    """Score a saved model.pt on every window of --data-dir, with its stored preprocessing
    and threshold; writes the same outputs (no training, no comparison)."""
    ck_path = Path(cfg.checkpoint) if cfg.checkpoint else repo_path(None, "runs/seizure_detection") / "model.pt"
    model, ck = load_model(ck_path)
    pre = dict(ck["preprocessing"])
    ds = open_dataset(pre, root, cfg.patients, channels=pre.get("channels") or None)
    test = materialize(ds, range(len(ds)), encoder_fn(pre))
    seizures = seizure_table(ds)
    spec, rule = ck["spec"], ck["rule"]
    tce = replace(tc, rule=rule, out_dir=None)
    m, rt = score_model(model, spec, tce, None, test, pre, seizures, threshold=ck["threshold"])
    rows = {spec["name"]: {**_row(m), "rule": rule, "train_s": None}}
    timings = {"total": time.perf_counter() - t_start}
    result = {**_row(m), "model": spec, "rule": rule, "lam": ck.get("lam"), "window": m["window"],
              "clinical": m["clinical"], "checkpoint": str(ck_path)}
    info = {"dataset": f"{cfg.dataset} (eval-only)", "data_dir": str(root),
            "split": {"test": sorted(set(ds.meta["recording"]))}, "n_windows": {"test": len(test)},
            "n_ictal": {"test": int(test.labels.sum())}, "n_inputs": test.x.shape[-1],
            "timings": timings}
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_outputs(out, result, rows, {spec["name"]: rt}, test, model, pre, info)
        _print_summary(rows, out, timings["total"])
    return {**result, "comparison": rows, **info, "out": str(out)}


if __name__ == "__main__":
    main()
