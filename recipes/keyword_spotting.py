"""Keyword spotting (spoken digits, Speech Commands) with a spiking Mamba, any learning rule.

    python recipes/keyword_spotting.py                              # FSDD (see Data)
    python recipes/keyword_spotting.py --data-dir /data/fsdd --split speaker --test-speakers theo
    python recipes/keyword_spotting.py --dataset speechcommands --data-dir /data/SC --classes v2_12
    python recipes/keyword_spotting.py --rule hybrid      # online: chunks of 32 steps, traces across
    python recipes/keyword_spotting.py --eval-only --checkpoint runs/keyword_spotting/model.pt \
        --data-dir NEW_FSDD_FOLDER                                  # scores every file
    torchrun --nproc_per_node=2 recipes/keyword_spotting.py         # data parallel

Data: FSDD (``{digit}_{speaker}_{take}.wav``) from ``--data-dir``, else the shared copy
(``shared_data_dir()/fsdd``), else, so that the recipe runs anywhere, a *synthetic* smoke
set written to ``<out>/synthetic_fsdd`` (not speech: its accuracy means nothing).
``--split takes``: takes 0-4 are test (FSDD README); ``--split speaker``: the
``--test-speakers`` (default one drawn with ``--seed``), with the unseen-speaker defaults
of :data:`bimsnn.tasks.speech.SPLIT_DEFAULTS` (``--norm speaker --fit stretch
--speed-perturb 0.9 1.1``; flags given override them), as benchmarks/speech.py runs it. Speech Commands v2: ``--classes all35 |
v2_12`` with the official lists.

Pipeline (:mod:`bimsnn.tasks.speech`): [``--speed-perturb`` copies of the training audio]
→ log-mel → ``--norm`` (``global`` is best on held-out takes; ``speaker``, speaker-level
CMVN, on unseen speakers) → ``--fit`` to ``--duration-s`` → thermometer spikes
(``--levels``, optional ON/OFF ``--delta``) → spiking Mamba whose readout is the running
mean of its leaky-integrator membrane (BPTT) or the membrane itself (online rules).
``--augment``: random time shift, stretch and mel warp. A ``--val-frac`` share of the
training items (seeded) picks the best epoch; the test split is scored once.

Outputs in ``--out`` (default runs/keyword_spotting): metrics.json (``accuracy``,
``macro_f1``, ``confusion``, ``train_seconds``, ``peak_rss_mb``), confusion.png, curves.png,
model.pt (weights + spec + features + classes; ``bimsnn.models.load``), ckpt.pt / best.pt
(``--resume``). ``--eval-only`` writes metrics.json and confusion.png to runs/..._eval.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace

import torch

from bimsnn import models
from bimsnn.data.speech_features import FITS, NORMS
from bimsnn.plots import plot_confusion
from bimsnn.tasks import speech as task
from bimsnn.tasks.common import peak_rss_mb, run_dir, stopped_at_max_steps
from bimsnn.training import (
    RunConfig,
    check_out_dir,
    distributed,
    flag,
    main_guard,
    parse_config,
    peek_flag,
    write_json,
)


@dataclass
class KWSConfig(RunConfig):
    dataset: str = flag("fsdd", "corpus", ("fsdd", "speechcommands"))
    split: str = flag("takes", "FSDD test split", ("takes", "speaker"))
    test_speakers: list[str] | None = flag(None, "FSDD --split speaker: held-out speakers")
    classes: str = flag("all35", "Speech Commands label set", ("all35", "v2_12"))
    n_mels: int = flag(40, "F, mel bands")
    norm: str = flag("global", "normalisation (bimsnn.data.speech_features.normalise)", NORMS)
    fit: str = flag("crop", "fixed length: centre crop / front pad, or stretch in time", FITS)
    speed_perturb: list[float] | None = flag(None, "extra training copies speed-perturbed "
                                             "by these factors, e.g. 0.9 1.1")
    hop_ms: float = flag(10.0, "frame hop (one time step)")
    duration_s: float = flag(0.64, "clip length after crop/pad: T = duration / hop")
    levels: int = flag(4, "L, thermometer levels per band")
    delta: float | None = flag(None, "ON/OFF spikes when a band moves by this (none: off)")
    augment: bool = flag(True, "random time shift, stretch and mel warp while training")
    val_frac: float = flag(0.1, "share of training items held out for model selection")
    schedule: str = flag("cosine", "learning rate over epochs", ("cosine", "constant"))
    model: str = flag("mamba", "spiking Mamba, or the non-spiking LSTM baseline (BPTT)",
                      ("mamba", "lstm"))
    d_model: int = flag(64, "D (lstm: hidden units)")
    n_layers: int = flag(1, "SpikingMamba blocks")
    d_state: int = flag(16, "SSM state size N")
    readout: str = flag("auto", "logits: running mean of the readout membrane, or the "
                        "membrane itself (li: a per-step target, which online rules need); "
                        "auto: mean_mem for bptt, li otherwise", ("auto", "mean_mem", "li"))
    max_items: int | None = flag(None, "cap per split (quick runs)")


def main(argv: list[str] | None = None) -> dict:
    t_start = time.perf_counter()
    split = task.SPLIT_DEFAULTS.get(peek_flag(argv, "split", KWSConfig.split), {})
    cfg, tc = parse_config(replace(KWSConfig(), **split), task.DEFAULT_TRAIN, argv=argv,
                           description=__doc__)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(cfg.threads)
    dist, device = distributed.setup(tc.device)
    out = check_out_dir(run_dir(tc.out_dir, "keyword_spotting_eval" if cfg.eval_only
                                else "keyword_spotting"))
    tc = replace(tc, out_dir=str(out))
    if cfg.eval_only:  # features, rule and classes as trained
        ck_path = cfg.checkpoint or run_dir(None, "keyword_spotting") / "model.pt"
        model, ck = models.load(ck_path)
        pre, spec = task.pre_from_checkpoint(ck, ck_path), ck["spec"]
        tc = replace(tc, rule=ck.get("rule", "bptt"), out_dir=None,
                     loss_window=ck.get("loss_window", tc.loss_window))
    else:
        if cfg.model == "lstm" and tc.rule != "bptt":  # no step(): BPTT, and say so in metrics
            print(f"the LSTM baseline has no step(): trained with BPTT, not {tc.rule}")
            tc = replace(tc, rule="bptt")
        pre = task.KWSPre(dataset=cfg.dataset, classes=cfg.classes,
                          sample_rate=8000 if cfg.dataset == "fsdd" else 16000,
                          **{k: getattr(cfg, k) for k in ("n_mels", "hop_ms", "norm", "fit",
                                                          "duration_s", "levels", "delta")})
    parts, classes, info = task.load_data(
        pre, cfg.data_dir, out, eval_only=cfg.eval_only, split=cfg.split,
        test_speakers=cfg.test_speakers, seed=tc.seed, val_frac=cfg.val_frac,
        max_items=cfg.max_items, strict=cfg.strict)
    sets = task.spike_sets(parts, pre, cfg.augment, cfg.speed_perturb)
    print(f"{info['dataset']}: {dict((k, len(v)) for k, v in sets.items())} items, "
          f"{pre.n_inputs} afferents, features in {time.perf_counter() - t_start:.0f} s")
    history, secs = [], None
    if cfg.eval_only:
        classes = ck.get("classes", classes)
    else:
        spec = task.kws_spec(pre.n_inputs, len(classes), d_model=cfg.d_model,
                             n_layers=cfg.n_layers, d_state=cfg.d_state, readout=cfg.readout,
                             rule=tc.rule, model=cfg.model)
        model, history, secs = task.train_kws(spec, sets, tc, cfg.schedule)
        if stopped_at_max_steps(tc):
            print(f"stopped at --max-steps {tc.max_steps}; continue with --resume")
            return {"interrupted": True, "out": str(out)}
    model.to(device)
    m = task.score(model, sets["test"], tc)
    result = {**m, "classes": classes, "model": spec, "rule": tc.rule, "data": info,
              "train_seconds": secs, "peak_rss_mb": peak_rss_mb(),
              "wall_s": time.perf_counter() - t_start, "history": history,
              "checkpoint": str(ck_path) if cfg.eval_only else None,
              "config": {"recipe": asdict(cfg), "train": asdict(tc), "features": asdict(pre)}}
    if dist.is_main:
        plot_confusion(m["confusion"], out / "confusion.png", classes)
        if not cfg.eval_only:
            task.save_model(out / "model.pt", model, spec, pre, classes, tc)
        write_json(result, out / "metrics.json")
        print(f"test accuracy {m['accuracy']:.4f} ({m['n_test']} items) in "
              f"{result['wall_s']:.0f} s; wrote {out}")
    return {**result, "out": str(out)}


if __name__ == "__main__":
    main_guard(main)
