"""ECG classification with a spiking Mamba trained online by the Hybrid rule.

    python recipes/ecg_classification.py                          # simulated PTB-XL layout
    python recipes/ecg_classification.py --dataset ptbxl --data-dir /data/ptb-xl/1.0.3
    python recipes/ecg_classification.py --dataset mitbih --data-dir ../shared/data/ecg
    python recipes/ecg_classification.py --dataset mitbih --data-dir ../shared/data/ecg \\
        --records 208 --classes N V F                             # AAMI subset
    python recipes/ecg_classification.py --eval-only --checkpoint runs/ecg_classification/model.pt \\
        --data-dir ../shared/data/ecg --records 100               # every beat of record 100

Pipeline (bimsnn.tasks.ecg): signal (mV) → resample to --sfreq → ADM spikes per item →
model, trained online by Hybrid in chunks of 16 steps (per-dataset defaults: tasks.ecg). PTB-XL (and the demo): superdiagnostic classes, multilabel, folds 1–8 / 9 / 10,
macro AUC. MIT-BIH: AAMI beat classes (or the --classes subset; beats of the others are
left out and counted), multiclass, time split within records (or whole records), macro-F1
and accuracy. Validation picks the best epoch; the test split is scored once. The demo
data (simulated, PTB-XL layout) is written once to ``datasets/demo_ptbxl_<n>``.

Outputs in ``--out`` (default runs/ecg_classification): metrics.json, report.md, roc.png,
pr.png (one curve per class), confusion.png (mitbih), raster.png, curves.png, model.pt
(weights + model spec + preprocessing + classes; ``bimsnn.models.load``), ckpt.pt/best.pt
(``--resume``), compare/<model>/.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

import torch

from bimsnn import models
from bimsnn.tasks import ecg as task
from bimsnn.tasks.common import (
    SPIKING,
    model_spec,
    peak_rss_mb,
    run_dir,
    stopped_at_max_steps,
    train_model,
)
from bimsnn.training import (
    RunConfig,
    RunError,
    TrainConfig,
    check_out_dir,
    class_weighted_ce,
    distributed,
    flag,
    main_guard,
    parse_config,
    peek_flag,
)


@dataclass
class ECGConfig(RunConfig):
    dataset: str = flag("demo", "demo (simulated PTB-XL layout) | ptbxl | mitbih",
                        ("demo", "ptbxl", "mitbih"))
    demo_records: int = flag(300, "records in the generated demo set")
    records: list[str] | None = flag(None, "mitbih: records read, e.g. 100 208 (default: "
                                     "every record with an .atr file in --data-dir)")
    classes: list[str] | None = flag(None, "mitbih: AAMI classes kept, e.g. N V F (beats of "
                                     "the others are left out and counted; default: all 5)")
    sfreq: int | None = flag(None, "resample to this rate (Hz) = steps per second "
                             "(none: 25 for PTB-XL records, 90 for MIT-BIH beats)")
    lead: list[str] = flag(["auto"], "mitbih: signal indices or names kept (e.g. 0 1, or "
                           "MLII); auto: both leads")
    split: str = flag("time", "mitbih: time-ordered within records, or whole records",
                      ("time", "record"))
    encoder: str = flag("auto", "spike encoder: adm (level crossing) | delta | multi_adm "
                        "(ADM at θ, 3θ, 10θ side by side: P/T detail and steep QRS); auto: "
                        "multi_adm for MIT-BIH, adm for PTB-XL",
                        ("auto", "adm", "delta", "multi_adm"))
    spike_threshold: float | str = flag("auto", "encoder threshold θ (mV); auto: 0.03 for "
                                        "MIT-BIH, 0.05 for PTB-XL")
    l_freq: float | str | None = flag("auto", "mitbih: causal high-pass edge (Hz) against "
                                      "baseline wander; auto: 0.5; none: unfiltered")
    limit: int | None = flag(None, "at most this many items per split (evenly spaced; smoke runs)")


def main(argv: list[str] | None = None) -> dict:
    t_start = time.perf_counter()
    dataset = peek_flag(argv, "dataset", ECGConfig.dataset)
    cfg, mc, tc = parse_config(ECGConfig(), task.default_model(dataset),
                               task.default_train(dataset), argv=argv, description=__doc__)
    torch.set_num_threads(cfg.threads)
    dist, _ = distributed.setup(tc.device)
    out = check_out_dir(run_dir(tc.out_dir, task.RECIPE + ("_eval" if cfg.eval_only else "")))
    if cfg.dataset != "demo" and not cfg.data_dir:
        raise RunError(None, f"--dataset {cfg.dataset} needs --data-dir (see datasets/README.md)")
    root = task.demo_root(cfg.data_dir, cfg.demo_records)
    if cfg.eval_only:
        return eval_only(cfg, tc, out, root, dist, t_start)

    kind = "mitbih" if cfg.dataset == "mitbih" else "ptbxl"
    check_mitbih_flags(cfg, kind)
    pre = task.ECGPre(kind=kind, sfreq=cfg.sfreq or {"mitbih": 90, "ptbxl": 25}[kind],
                      **task.resolve_flags(cfg.dataset, cfg.lead, cfg.encoder,
                                           cfg.spike_threshold, cfg.l_freq),
                      task="multiclass" if kind == "mitbih" else "multilabel",
                      classes=task.aami_subset(cfg.classes) if kind == "mitbih" else ())
    tc = replace(tc, out_dir=str(out), task=pre.task,
                 metric="macro_f1" if pre.task == "multiclass" else "macro_auc")
    sets, data = task.load_sets(pre, root, split=cfg.split, records=cfg.records,
                                limit=cfg.limit, strict=cfg.strict)
    n_in, K = sets["train"].x.shape[-1], len(data["classes"])
    pre = replace(pre, classes=tuple(data["classes"]),
                  prior=task.class_prior(sets["train"].labels, K) if kind == "mitbih" else ())
    timings = {"data": time.perf_counter() - t_start}
    loss_fn = class_weighted_ce(sets["train"].labels, K) if pre.task == "multiclass" else None

    spec = model_spec(mc, mc.model, n_in, K)
    model, history, secs = train_model(spec, sets["train"], sets["val"], tc, loss_fn)
    timings[f"train {mc.model}"] = secs
    if stopped_at_max_steps(tc):
        print(f"stopped at --max-steps {tc.max_steps}; continue with --resume")
        return {"interrupted": True, "out": str(out)}
    m, rt = task.score(model, spec, tc, sets["test"], list(pre.classes), pre.prior)
    rule = tc.rule if mc.model in SPIKING else "bptt"
    rows = {mc.model: task.summary_row(m, rule=rule, epochs=tc.epochs, train_s=secs)}
    for name in mc.baselines:
        bspec = model_spec(mc, name, n_in, K)
        btc = replace(tc, rule="bptt", lr=mc.compare_lr, epochs=mc.compare_epochs or tc.epochs,
                      prune=None, max_steps=None, out_dir=str(out / "compare" / name))
        bmodel, _, bsecs = train_model(bspec, sets["train"], sets["val"], btc, loss_fn)
        bm, _ = task.score(bmodel, bspec, btc, sets["test"], list(pre.classes), pre.prior)
        rows[name] = task.summary_row(bm, rule="bptt", epochs=btc.epochs, train_s=bsecs)
        timings[f"train {name}"] = bsecs
    timings["total"] = time.perf_counter() - t_start
    result = {**m, "model": spec, "rule": rule, "lam": tc.lam, "classes": list(pre.classes),
              "class_prior": list(pre.prior), "train_seconds": secs, "peak_rss_mb": peak_rss_mb()}
    split = ("strat_fold 1-8 / 9 / 10" if kind == "ptbxl" else f"{cfg.split} ("
             + ("60/20/20 % of each record" if cfg.split == "time" else "whole records") + ")")
    info = {"dataset": cfg.dataset, "kind": cfg.dataset, "data_dir": str(root), "split": split,
            "n_items": {k: len(v) for k, v in sets.items()}, "n_inputs": n_in, **data,
            "timings": timings, "history": history, "world_size": dist.world_size,
            "config": {"recipe": asdict(cfg), "model": asdict(mc), "train": asdict(tc)}}
    if dist.is_main:
        models.save(out / "model.pt", model, spec, preprocessing=task.pre_dict(pre),
                    recipe=task.RECIPE, classes=list(pre.classes), rule=rule, lam=tc.lam,
                    train_config=asdict(tc))
        task.write_outputs(out, result, rows, rt, sets["test"], model, pre, info)
        task.print_summary(rows, info, out, timings["total"])
    return {**result, "comparison": rows, **info, "out": str(out)}


def check_mitbih_flags(cfg: ECGConfig, kind: str) -> None:
    if kind != "mitbih" and (cfg.records or cfg.classes):
        raise RunError(None, "--records and --classes apply to MIT-BIH beats only "
                       "(--dataset mitbih, or an --eval-only model trained on them)")


def eval_only(cfg: ECGConfig, tc: TrainConfig, out, root, dist, t_start) -> dict:
    """Score a saved model.pt on every item of --data-dir (PTB-XL: all folds; MIT-BIH:
    every beat of --records, or of every record) with its stored preprocessing; writes
    the same outputs (no training, no comparison)."""
    ck_path = cfg.checkpoint or run_dir(None, task.RECIPE) / "model.pt"
    model, ck = models.load(ck_path)
    pre = task.pre_from_checkpoint(ck, ck_path)
    check_mitbih_flags(cfg, pre.kind)
    if cfg.classes and task.aami_subset(cfg.classes) != pre.classes:
        raise RunError(ck_path, f"the model was trained on classes {' '.join(pre.classes)}, "
                       f"not --classes {' '.join(cfg.classes)}")
    sets, data = task.load_sets(pre, root, split=None, records=cfg.records, limit=cfg.limit,
                                strict=cfg.strict)
    if pre.classes and list(data["classes"]) != list(pre.classes):
        raise RunError(root, f"classes {data['classes']} differ from the model's "
                       f"{list(pre.classes)}")
    test, spec, rule = sets["test"], ck["spec"], ck.get("rule", "bptt")
    m, rt = task.score(model, spec, replace(tc, rule=rule, task=pre.task, out_dir=None), test,
                       list(pre.classes), pre.prior)
    rows = {spec["name"]: task.summary_row(m, rule=rule, train_s=None)}
    result = {**m, "model": spec, "rule": rule, "lam": ck.get("lam"),
              "classes": list(pre.classes), "checkpoint": str(ck_path),
              "peak_rss_mb": peak_rss_mb()}
    info = {"dataset": f"{pre.kind} (eval-only)", "kind": pre.kind, "data_dir": str(root),
            "split": "all items", "n_items": {"test": len(test)}, "n_inputs": test.x.shape[-1],
            **data, "timings": {"total": time.perf_counter() - t_start}}
    if dist.is_main:
        task.write_outputs(out, result, rows, rt, test, model, pre, info)
        task.print_summary(rows, info, out, info["timings"]["total"])
    return {**result, "comparison": rows, **info, "out": str(out)}


if __name__ == "__main__":
    main_guard(main)
