"""Seizure detection on scalp EEG with a spiking Mamba trained online by the Hybrid rule.

    python recipes/seizure_detection.py                        # demo data, ~1 min on 2 cores
    python recipes/seizure_detection.py --dataset chbmit --data-dir /data/chbmit/1.0.0 --patients chb01 chb03
    python recipes/seizure_detection.py --dataset bonn --data-dir ../shared/data/bonn
    python recipes/seizure_detection.py --eval-only --data-dir NEW_RECORDINGS  # runs/..._eval
    torchrun --nproc_per_node=2 recipes/seizure_detection.py   # data parallel, rank 0 writes

Pipeline (bimsnn.tasks.seizure): EDF → causal band-pass and decimation, robust z-score
fitted on the training recordings → windows → ADM spikes → model (the same chain that
``python -m bimsnn.monitor model.pt RECORDING.edf`` runs during a recording). Whole
recordings go to train, val or test; val picks the best epoch and the alarm threshold;
test is scored once. The demo data (simulated, CHB-MIT
layout) is written once to ``datasets/demo_chbmit``.

Outputs in ``--out`` (default runs/seizure_detection): metrics.json, report.md, roc.png,
pr.png, raster.png, curves.png, model.pt (weights + model spec + preprocessing +
threshold; ``bimsnn.models.load``), ckpt.pt/best.pt (``--resume``), compare/<model>/.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

import torch

from bimsnn import models
from bimsnn.paths import repo_root
from bimsnn.tasks import seizure as task
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
class SeizureConfig(RunConfig):
    dataset: str = flag("demo", "demo (generated CHB-MIT layout) | chbmit | siena | bonn",
                        ("demo", "chbmit", "siena", "bonn"))
    patients: list[str] | None = flag(None, "CHB-MIT patients, e.g. chb01 chb03 (default: all)")
    split: str = flag("recording", "hold out whole recordings, or whole patients",
                      ("recording", "patient"))
    test_patients: list[str] | None = flag(None, "--split patient: test patients (default: last)")
    test_frac: float = flag(0.25, "fraction of recordings held out for test (per group)")
    val_frac: float = flag(0.25, "fraction of recordings for validation (per group)")
    split_seed: int = flag(0, "seed of the recording shuffle (--seed seeds the model)")
    window_s: float = flag(4.0, "window length (s)")
    stride_s: float = flag(2.0, "window hop (s); also the alarm timeline's resolution")
    # "auto": what the dataset needs (bimsnn.tasks.seizure.DATASET_DEFAULTS)
    sfreq: float | str | None = flag("auto", "resample to this rate (Hz); none: native")
    l_freq: float | str | None = flag("auto", "band-pass low edge (Hz); none: no high-pass")
    h_freq: float | str | None = flag("auto", "band-pass high edge (Hz), below sfreq / 2")
    encoder: str = flag("auto", "spike encoder: adm | delta (per channel) | filterbank "
                        "(six band envelopes, ADM)", ("auto", "adm", "delta", "filterbank"))
    spike_threshold: float | str = flag("auto", "encoder threshold: robust-z units (adm, "
                                        "delta) or decades of µV (filterbank)")
    normalize: str | None = flag("auto", "scaling: file/segment z-score, window, running "
                                 "(causal, --phase causal), train (robust z fitted on the "
                                 "train recordings), or none (µV)",
                                 ("auto", "file", "segment", "window", "train", "running",
                                  None))
    phase: str = flag("auto", "filters: causal (IIR, what bimsnn.monitor replays during a "
                      "recording) or zero (mne zero-phase FIR, non-causal)",
                      ("auto", "causal", "zero"))
    smooth_k: int = flag(2, "alarm when k consecutive windows score >= threshold")


def main(argv: list[str] | None = None) -> dict:
    t_start = time.perf_counter()
    train = task.default_train(peek_flag(argv, "dataset", SeizureConfig.dataset))
    cfg, mc, tc = parse_config(SeizureConfig(), task.DEFAULT_MODEL, train, argv=argv,
                               description=__doc__)
    torch.set_num_threads(cfg.threads)
    dist, _ = distributed.setup(tc.device)
    out = run_dir(tc.out_dir, "seizure_detection" + ("_eval" if cfg.eval_only else ""))
    tc = replace(tc, out_dir=str(check_out_dir(out)))
    if cfg.dataset != "demo" and not cfg.data_dir:
        raise RunError(None, f"--dataset {cfg.dataset} needs --data-dir (see datasets/README.md)")
    root = task.demo_root(cfg.data_dir, repo_root() / "datasets" / "demo_chbmit")
    if cfg.eval_only:
        return eval_only(cfg, tc, out, root, dist, t_start)

    pre = task.resolve_pre(cfg.dataset, **{k: getattr(cfg, k) for k in (
        "window_s", "stride_s", "sfreq", "l_freq", "h_freq", "encoder", "spike_threshold",
        "normalize", "phase", "smooth_k")})
    ds, names, sets, pre = task.load_split(pre, root, patients=cfg.patients, split=cfg.split,
                                           test_patients=cfg.test_patients,
                                           test_frac=cfg.test_frac, val_frac=cfg.val_frac,
                                           seed=cfg.split_seed, strict=cfg.strict)
    seizures = task.seizure_table(ds)
    timings = {"data": time.perf_counter() - t_start}
    n_inputs = sets["train"].x.shape[-1]
    loss_fn = class_weighted_ce(sets["train"].labels, 2)

    spec = model_spec(mc, mc.model, n_inputs, 2)
    model, history, secs = train_model(spec, sets["train"], sets["val"], tc, loss_fn)
    timings[f"train {mc.model}"] = secs
    if stopped_at_max_steps(tc):
        print(f"stopped at --max-steps {tc.max_steps}; continue with --resume")
        return {"interrupted": True, "out": str(out)}
    t0, curves = time.perf_counter(), {}
    main_m, curves[mc.model] = task.score(model, spec, tc, sets["val"], sets["test"], pre,
                                          seizures)
    timings[f"eval {mc.model}"] = time.perf_counter() - t0
    rule = tc.rule if mc.model in SPIKING else "bptt"
    rows = {mc.model: task.summary_row(main_m, rule=rule, epochs=tc.epochs, train_s=secs)}
    for name in mc.baselines:
        bspec = model_spec(mc, name, n_inputs, 2)
        btc = replace(tc, rule="bptt", lr=mc.compare_lr, epochs=mc.compare_epochs or tc.epochs,
                      prune=None, max_steps=None, out_dir=str(out / "compare" / name))
        bmodel, _, bsecs = train_model(bspec, sets["train"], sets["val"], btc, loss_fn)
        bm, curves[name] = task.score(bmodel, bspec, btc, sets["val"], sets["test"], pre,
                                      seizures)
        rows[name] = task.summary_row(bm, rule="bptt", epochs=btc.epochs, train_s=bsecs)
        timings[f"train {name}"] = bsecs
    timings["total"] = time.perf_counter() - t_start
    result = {**task.summary_row(main_m), "model": spec, "rule": rule, "lam": tc.lam,
              "window": main_m["window"], "clinical": main_m["clinical"],
              "train_seconds": secs, "peak_rss_mb": peak_rss_mb()}
    info = {"dataset": cfg.dataset, "kind": cfg.dataset, "data_dir": str(root), "split": names,
            "n_windows": {k: len(v) for k, v in sets.items()},
            "n_ictal": {k: int(v.labels.sum()) for k, v in sets.items()},
            "n_inputs": n_inputs, "timings": timings, "history": history,
            "world_size": dist.world_size, "skipped": task.skipped_files(ds),
            "config": {"recipe": asdict(cfg), "model": asdict(mc), "train": asdict(tc)}}
    if dist.is_main:
        models.save(out / "model.pt", model, spec, preprocessing=task.pre_dict(pre),
                    recipe="seizure_detection", threshold=main_m["threshold"], rule=rule,
                    lam=tc.lam, train_config=asdict(tc))
        task.write_outputs(out, result, rows, curves, sets["test"], model, pre, info)
        task.print_summary(rows, out, timings["total"], info["skipped"])
    return {**result, "comparison": rows, **info, "out": str(out)}


def eval_only(cfg: SeizureConfig, tc: TrainConfig, out, root, dist, t_start) -> dict:
    """Score a saved model.pt on every window of --data-dir, with its stored preprocessing
    and threshold; writes the same outputs (no training, no comparison)."""
    ck_path = cfg.checkpoint or run_dir(None, "seizure_detection") / "model.pt"
    model, ck = models.load(ck_path)
    pre = task.pre_from_checkpoint(ck, ck_path)
    ds, test = task.load_all(pre, root, cfg.patients, cfg.strict)
    spec, rule = ck["spec"], ck.get("rule", "bptt")
    m, rt = task.score(model, spec, replace(tc, rule=rule, out_dir=None), None, test, pre,
                       task.seizure_table(ds), threshold=ck["threshold"])
    rows = {spec["name"]: task.summary_row(m, rule=rule, train_s=None)}
    timings = {"total": time.perf_counter() - t_start}
    result = {**task.summary_row(m), "model": spec, "rule": rule, "lam": ck.get("lam"),
              "window": m["window"], "clinical": m["clinical"], "checkpoint": str(ck_path)}
    info = {"dataset": f"{cfg.dataset} (eval-only)", "kind": cfg.dataset, "data_dir": str(root),
            "split": {"test": sorted(set(ds.meta["recording"]))}, "n_windows": {"test": len(test)},
            "n_ictal": {"test": int(test.labels.sum())}, "n_inputs": test.x.shape[-1],
            "timings": timings, "skipped": task.skipped_files(ds)}
    if dist.is_main:
        task.write_outputs(out, result, rows, {spec["name"]: rt}, test, model, pre, info)
        task.print_summary(rows, out, timings["total"], info["skipped"])
    return {**result, "comparison": rows, **info, "out": str(out)}


if __name__ == "__main__":
    main_guard(main)
