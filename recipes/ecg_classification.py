"""ECG classification with a spiking Mamba trained online by the Hybrid rule.

Symbols: N items (records or beats), T steps (seconds·fs), L leads, 2L ADM afferents (ON
then OFF), K classes, D model width.

    python recipes/ecg_classification.py                          # simulated PTB-XL layout
    python recipes/ecg_classification.py --dataset ptbxl --data-dir /data/ptb-xl/1.0.3
    python recipes/ecg_classification.py --dataset mitbih --data-dir ../shared/data/ecg
    python recipes/ecg_classification.py --eval-only --checkpoint runs/ecg_classification/model.pt

Tasks:
    ptbxl, demo  superdiagnostic statements (NORM MI STTC CD HYP), multilabel; the standard
                 folds: strat_fold 1–8 train, 9 validation, 10 test; macro AUC over classes.
                 Records (10 s, 100 Hz) are resampled to fs. demo = the simulated
                 PTB-XL-layout set of :func:`bimsnn.data.demo.ptbxl`, written once to
                 datasets/demo_ptbxl[_<n>].
    mitbih       AAMI beat classes (N S V F Q) from WFDB records with .atr annotations,
                 beats (−0.25 s, +0.45 s) around each R peak at fs; macro-F1 and a confusion
                 matrix. Split ``time`` (default): within every record the first 60 % of beats
                 train, the next 20 % validate, the last 20 % test, with beats whose window
                 crosses a cut dropped (intra-patient: for a handful of records an
                 inter-patient split is not meaningful); ``record``: whole records per side.

Signals (mV) → ADM spikes per item (threshold in mV) → model. On the shared MIT-BIH
records (100, 208, 800; 5 AAMI classes, time split) the default Hybrid run reaches
macro-F1 0.26 with ``adm``, 0.42 with ``--encoder multi_adm --spike_threshold 0.03``;
``--rule bptt`` 0.54 with either (measured 2026-11-23, 10 epochs). The best epoch is chosen on
validation (macro AUC / macro-F1); the test split is scored once. Outputs in --out
(default runs/ecg_classification): metrics.json, report.md, roc.png, pr.png (one curve per
class), confusion.png (mitbih), raster.png, curves.png, model.pt, ckpt.pt/best.pt,
compare/<model>/.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, when run as a script

from _common import (  # noqa: E402
    SPIKING,
    ModelConfig,
    _f,
    class_weighted_ce,
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
from bimsnn.data import DataError, demo  # noqa: E402
from bimsnn.data.ecg import MITBIH, PTBXL  # noqa: E402
from bimsnn.encoding import adm, delta  # noqa: E402
from bimsnn.train import TrainConfig, compute_metrics, evaluate, plot_confusion  # noqa: E402


@dataclass
class ECGConfig:
    dataset: str = _f("demo", "demo (simulated PTB-XL layout) | ptbxl | mitbih",
                      ("demo", "ptbxl", "mitbih"))
    data_dir: str | None = _f(None, "dataset root (demo default: datasets/demo_ptbxl_<n>)")
    demo_records: int = _f(300, "records in the generated demo set")
    sfreq: int | None = _f(None, "resample to this rate (Hz) = steps per second "
                           "(none: 25 for PTB-XL records, 90 for MIT-BIH beats)")
    lead: list[str] = _f(["0"], "mitbih: signal indices or names kept (e.g. 0, or MLII)")
    split: str = _f("time", "mitbih: time-ordered within records, or whole records",
                    ("time", "record"))
    encoder: str = _f("adm", "spike encoder: adm (level crossing) | delta | multi_adm (ADM at "
                      "θ, 3θ, 10θ side by side: P/T detail and steep QRS)",
                      ("adm", "delta", "multi_adm"))
    spike_threshold: float = _f(0.05, "encoder threshold (mV)")
    limit: int | None = _f(None, "at most this many items per split (evenly spaced; smoke runs)")
    eval_only: bool = _f(False, "evaluate --checkpoint on every item of --data-dir")
    checkpoint: str | None = _f(None, "--eval-only model (default: runs/ecg_classification/model.pt)")
    threads: int = _f(1, "torch intra-op threads; tiny per-step ops run fastest on 1")


TRAIN = TrainConfig(epochs=10, batch_size=32, lr=5e-3, rule="hybrid", lam=0.9,
                    task="multilabel", loss_window=1.0, grad_clip=1.0)
# The BPTT baselines cost ~1 s per epoch here, so they get more epochs (they need them).
MODEL = ModelConfig(model="spiking_mamba", d_model=16, d_state=8, compare_epochs=30)


# ---------------------------------------------------------------- data
class Resampled:
    """A dataset view whose items' signals (T, L) are polyphase-resampled to ``fs``."""

    def __init__(self, ds, fs_in: int, fs: int):
        from math import gcd

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


def _lead(v: str):
    return int(v) if v.lstrip("-").isdigit() else v


def time_split(ds: MITBIH, fracs=(0.6, 0.2)) -> dict[str, np.ndarray]:
    """Per record, beats in time order: train / val / test at the cumulative ``fracs``;
    a beat whose window starts before the previous part's last window ends is dropped."""
    parts: dict[str, list] = {"train": [], "val": [], "test": []}
    for r in range(len(ds.records)):
        idx = np.flatnonzero(ds.beat_record == r)
        idx = idx[np.argsort(ds.beat_sample[idx], kind="stable")]
        cuts = np.round(np.cumsum(fracs) * len(idx)).astype(int)
        end = -np.inf
        for name, chunk in zip(parts, np.split(idx, cuts)):
            chunk = chunk[ds.beat_sample[chunk] - ds.pre >= end]
            parts[name].append(chunk)
            if len(chunk):
                end = ds.beat_sample[chunk[-1]] + ds.post
    return {k: np.concatenate(v) for k, v in parts.items()}


def record_split(ds: MITBIH, seed: int = 0) -> dict[str, np.ndarray]:
    """Whole records: shuffled (seeded), ~60/20/20 with at least one record per side."""
    recs = list(np.random.default_rng(seed).permutation(ds.records))
    if len(recs) < 3:
        raise DataError(ds.root, f"--split record needs >= 3 records, found {len(recs)}")
    n_test = n_val = max(1, round(0.2 * len(recs)))
    names = {"test": recs[:n_test], "val": recs[n_test:n_test + n_val],
             "train": recs[n_test + n_val:]}
    rec_of = np.asarray(ds.records)[ds.beat_record]
    return {k: np.flatnonzero(np.isin(rec_of, v)) for k, v in names.items()}


def open_data(cfg: ECGConfig, pre: dict, root: Path, split: bool = True):
    """(datasets or one dataset, classes): {"train", "val", "test"} → (dataset, indices)."""
    if pre["kind"] == "mitbih":
        ds = MITBIH(root, lead=pre["lead"], fs=pre["sfreq"])
        if not split:
            return {"test": (ds, np.arange(len(ds)))}, ds.classes
        idx = time_split(ds) if cfg.split == "time" else record_split(ds)
        return {k: (ds, v) for k, v in idx.items()}, ds.classes
    out, classes = {}, None
    for name in ("train", "val", "test") if split else ("test",):
        folds = name if split else list(range(1, 11))
        ds = PTBXL(root, sampling_rate=100, folds=folds)
        out[name] = (Resampled(ds, 100, pre["sfreq"]), np.arange(len(ds)))
        classes = ds.classes
    return out, classes


def limited(idx: np.ndarray, limit: int | None) -> np.ndarray:
    if limit is None or len(idx) <= limit:
        return idx
    return idx[np.linspace(0, len(idx) - 1, limit).round().astype(int)]


def encoder_fn(pre: dict):
    th = pre["spike_threshold"]
    if pre["encoder"] == "multi_adm":
        return lambda x: torch.cat([adm(x, k * th) for k in (1.0, 3.0, 10.0)], dim=-1)
    fn = adm if pre["encoder"] == "adm" else delta
    return lambda x: fn(x, th)


def data_root(cfg: ECGConfig) -> Path:
    if cfg.dataset != "demo":
        if not cfg.data_dir:
            raise DataError(None, f"--dataset {cfg.dataset} needs --data-dir (see datasets/README.md)")
        return Path(cfg.data_dir)
    suffix = "" if cfg.demo_records == 100 else f"_{cfg.demo_records}"
    root = repo_path(cfg.data_dir, f"datasets/demo_ptbxl{suffix}")
    if _ddp.dist_info().is_main and not cfg.data_dir:
        demo.ptbxl(root, n_records=cfg.demo_records)  # idempotent
    _ddp.barrier()
    return root


# ---------------------------------------------------------------- metrics and report
def score(model, spec, tc: TrainConfig, test, task: str, classes: list[str]) -> tuple[dict, dict]:
    """(metrics, raw results) on ``test``; AUC/AP per class one-vs-rest for both tasks."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    tcm = replace(tc, rule=tc.rule if spec["name"] in SPIKING else "bptt")
    rt = evaluate(model, test, tcm)
    m = compute_metrics(rt["scores"], rt["labels"], task)
    y = rt["labels"] if task == "multilabel" else np.eye(len(classes))[rt["labels"].astype(int)]
    per = {}
    for k, c in enumerate(classes):
        if 0 < y[:, k].sum() < len(y):
            per[c] = {"auc": float(roc_auc_score(y[:, k], rt["scores"][:, k])),
                      "ap": float(average_precision_score(y[:, k], rt["scores"][:, k]))}
    m["per_class"] = per
    m["macro_auc"] = m.get("macro_auc", float(np.mean([v["auc"] for v in per.values()]))
                           if per else float("nan"))
    m["macro_ap"] = m.get("macro_ap", float(np.mean([v["ap"] for v in per.values()]))
                          if per else float("nan"))
    m["auc_roc"], m["auc_pr"] = m["macro_auc"], m["macro_ap"]
    return m, rt


def write_outputs(out: Path, result: dict, rows: dict, rt: dict, test, model, classes, pre,
                  info: dict) -> None:
    y = rt["labels"] if pre["task"] == "multilabel" else \
        np.eye(len(classes))[rt["labels"].astype(int)]
    plot_roc_and_pr({c: (y[:, k], rt["scores"][:, k]) for k, c in enumerate(classes)}, out,
                    f"{result['model']['name']}, test, one-vs-rest")
    if pre["task"] == "multiclass":
        plot_confusion(result["confusion"], out / "confusion.png", classes)
    if len(test):
        x, _, meta = test[0]
        panels = [("input (ADM ON|OFF)", x.float())]
        hid = hidden_spikes(model, x)
        if hid is not None:
            panels.append(("hidden LIF", hid))
        what = meta.get("record", meta.get("ecg_id"))
        plot_rasters(panels, out / "raster.png", f"test item {Path(str(what)).name}",
                     1 / pre["sfreq"])
    write_json({**result, "comparison": rows, **info}, out / "metrics.json")
    key = "macro_auc" if pre["task"] == "multilabel" else "macro_f1"
    head = ["model", "rule", "epochs", "macro AUC", "macro AP", "macro-F1", "train (s)"]
    table = md_table(head, [[n, r["rule"], r.get("epochs"), r["macro_auc"], r["macro_ap"],
                             r["macro_f1"], r.get("train_s")] for n, r in rows.items()])
    per = md_table(["class", "AUC", "AP"], [[c, v["auc"], v["ap"]]
                                            for c, v in result["per_class"].items()])
    sizes = " / ".join(f"{k} {v}" for k, v in info["n_items"].items())
    text = [f"# ECG classification: {info['dataset']}", "",
            f"Data: `{info['data_dir']}`; items {sizes}; {pre['sfreq']} Hz, "
            f"{pre['encoder'].upper()} spikes at {pre['spike_threshold']:g} mV → "
            f"{info['n_inputs']} afferents. Task: {pre['task']} over {', '.join(classes)}.",
            f"Split: {info['split']}.", "",
            f"## Test set, all models from this run (selection metric: {key})", "", table, "",
            "## Main model per class (one-vs-rest)", "", per, "",
            f"Timings: {', '.join(f'{k} {v:.1f} s' for k, v in info['timings'].items())}.", "",
            "Caveats: the demo set is simulated (PTB-XL layout, not real ECG); small test "
            "splits give wide error bars. Classes absent from the test split are not scored.",
            ""]
    (out / "report.md").write_text("\n".join(text))


def _row(m: dict) -> dict:
    return {k: m.get(k) for k in ("macro_auc", "macro_ap", "macro_f1", "acc")}


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    t_start = time.perf_counter()
    cfg, mc, tc = parse(ECGConfig(), MODEL, TRAIN, argv=argv, description=__doc__)
    torch.set_num_threads(cfg.threads)
    dist, _ = _ddp.setup(tc.device)
    out = repo_path(tc.out_dir, "runs/ecg_classification" + ("_eval" if cfg.eval_only else ""))
    root = data_root(cfg)
    if cfg.eval_only:
        return eval_only(cfg, tc, out, root, dist, t_start)
    task = "multiclass" if cfg.dataset == "mitbih" else "multilabel"
    tc = replace(tc, out_dir=str(out), task=task,
                 metric="macro_f1" if task == "multiclass" else "macro_auc")
    kind = "mitbih" if cfg.dataset == "mitbih" else "ptbxl"
    pre = dict(kind=kind, sfreq=cfg.sfreq or {"mitbih": 90, "ptbxl": 25}[kind],
               lead=[_lead(v) for v in cfg.lead], encoder=cfg.encoder,
               spike_threshold=cfg.spike_threshold, task=task)
    parts, classes = open_data(cfg, pre, root)
    enc = encoder_fn(pre)
    sets = {k: materialize(ds, limited(idx, cfg.limit), enc) for k, (ds, idx) in parts.items()}
    timings = {"data": time.perf_counter() - t_start}
    n_in, K = sets["train"].x.shape[-1], len(classes)
    loss_fn = class_weighted_ce(sets["train"].labels, K) if task == "multiclass" else None

    spec = model_spec(mc, mc.model, n_in, K)
    model, history, secs = train_one(spec, sets["train"], sets["val"], tc, loss_fn)
    timings[f"train {mc.model}"] = secs
    if interrupted(tc):
        print(f"stopped at --max-steps {tc.max_steps}; continue with --resume")
        return {"interrupted": True, "out": str(out)}
    m, rt = score(model, spec, tc, sets["test"], task, classes)
    rule = tc.rule if mc.model in SPIKING else "bptt"
    rows = {mc.model: {**_row(m), "rule": rule, "epochs": tc.epochs, "train_s": secs}}
    for name in mc.baselines:
        bspec = model_spec(mc, name, n_in, K)
        btc = replace(tc, rule="bptt", lr=mc.compare_lr, epochs=mc.compare_epochs or tc.epochs,
                      prune=None, max_steps=None,
                      out_dir=str(out / "compare" / name))
        bmodel, _, bsecs = train_one(bspec, sets["train"], sets["val"], btc, loss_fn)
        rows[name] = {**_row(score(bmodel, bspec, btc, sets["test"], task, classes)[0]),
                      "rule": "bptt", "epochs": btc.epochs, "train_s": bsecs}
        timings[f"train {name}"] = bsecs
    timings["total"] = time.perf_counter() - t_start
    result = {**m, "model": spec, "rule": rule, "lam": tc.lam, "classes": classes}
    split = ("strat_fold 1-8 / 9 / 10" if task == "multilabel" else
             f"{cfg.split} ({'60/20/20 % of each record' if cfg.split == 'time' else 'whole records'})")
    info = {"dataset": cfg.dataset, "data_dir": str(root), "split": split,
            "n_items": {k: len(v) for k, v in sets.items()}, "n_inputs": n_in,
            "timings": timings, "history": history, "world_size": dist.world_size,
            "config": {"recipe": asdict(cfg), "model": asdict(mc), "train": asdict(tc)}}
    if dist.is_main:
        save_model(out / "model.pt", model, spec, preprocessing=pre, classes=classes, rule=rule,
                   lam=tc.lam, train_config=asdict(tc))
        write_outputs(out, result, rows, rt, sets["test"], model, classes, pre, info)
        _print_summary(rows, out, timings["total"])
    return {**result, "comparison": rows, **info, "out": str(out)}


def _print_summary(rows: dict, out: Path, total: float) -> None:
    for n, r in rows.items():
        print(f"{n:14s} macro AUC {fmt(r['macro_auc'])}  macro AP {fmt(r['macro_ap'])}  "
              f"macro-F1 {fmt(r['macro_f1'])}")
    print(f"wrote {out} in {total:.0f} s")


def eval_only(cfg: ECGConfig, tc: TrainConfig, out: Path, root: Path, dist, t_start) -> dict:
    """Score a saved model.pt on every item of --data-dir (PTB-XL: all folds) with its
    stored preprocessing; writes the same outputs."""
    ck_path = Path(cfg.checkpoint) if cfg.checkpoint else \
        repo_path(None, "runs/ecg_classification") / "model.pt"
    model, ck = load_model(ck_path)
    pre, classes, spec = dict(ck["preprocessing"]), list(ck["classes"]), ck["spec"]
    parts, data_classes = open_data(cfg, pre, root, split=False)
    if list(data_classes) != classes:
        raise DataError(root, f"classes {data_classes} differ from the checkpoint's {classes}")
    ds, idx = parts["test"]
    test = materialize(ds, limited(idx, cfg.limit), encoder_fn(pre))
    tce = replace(tc, rule=ck["rule"], task=pre["task"], out_dir=None)
    m, rt = score(model, spec, tce, test, pre["task"], classes)
    rows = {spec["name"]: {**_row(m), "rule": ck["rule"], "train_s": None}}
    result = {**m, "model": spec, "rule": ck["rule"], "lam": ck.get("lam"), "classes": classes,
              "checkpoint": str(ck_path)}
    info = {"dataset": f"{cfg.dataset} (eval-only)", "data_dir": str(root), "split": "all items",
            "n_items": {"test": len(test)}, "n_inputs": test.x.shape[-1],
            "timings": {"total": time.perf_counter() - t_start}}
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_outputs(out, result, rows, rt, test, model, classes, pre, info)
        _print_summary(rows, out, info["timings"]["total"])
    return {**result, "comparison": rows, **info, "out": str(out)}


if __name__ == "__main__":
    main()
