"""Keyword spotting (spoken digits, Speech Commands) with a spiking Mamba, any learning rule.

Symbols: T frames (one per hop), F mel bands, L thermometer levels, C = F·L (+ 2F with
delta) spike afferents, B batch, D model width, K classes.

    python recipes/keyword_spotting.py                              # FSDD (see Data)
    python recipes/keyword_spotting.py --data-dir /data/fsdd --split speaker --test-speakers theo \
        --norm speaker --fit stretch --speed-perturb 0.8 0.9 1.1 1.2 --epochs 6 --d-model 128
    python recipes/keyword_spotting.py --dataset speechcommands --data-dir /data/SC --classes v2_12
    python recipes/keyword_spotting.py --rule hybrid --lr 1e-3 --epochs 15  # online, step by step
    python recipes/keyword_spotting.py --eval-only --checkpoint runs/keyword_spotting/model.pt \
        --data-dir NEW_FSDD_FOLDER --eval-subset all
    torchrun --nproc_per_node=2 recipes/keyword_spotting.py         # data parallel

Data: FSDD (``{digit}_{speaker}_{take}.wav``) from ``--data-dir``, else the shared copy
(``shared_data_dir()/fsdd``), else — so the recipe runs anywhere — a *synthetic* smoke set
written to ``<out>/synthetic_fsdd`` (each digit 3 vowel-like sounds: harmonic source, 2
formants; per-speaker pitch and formant scale): not speech, its accuracy means nothing.
``--split takes``: takes 0-4 are test (FSDD README); ``--split speaker``: the
``--test-speakers`` (default one drawn with ``--seed``); the second command above is the
setup of benchmarks/speech.py for unseen speakers. Speech Commands v2: ``--classes
all35 | v2_12`` with the official lists.

Pipeline (:mod:`bimsnn.data.speech_features`): [``--speed-perturb`` copies of the training
audio] → log-mel (:class:`bimsnn.data.audio.LogMel`) → ``--norm`` (``global`` is best on
held-out takes; ``speaker``, speaker-level CMVN, on unseen speakers: see
benchmarks/speech.py) → ``--fit`` to ``duration_s`` (centre crop / front pad, or stretch)
→ :class:`SpikeCode` (thermometer: afferent (f, l) on while band f ≥ level l; optional
ON/OFF delta spikes) → SpikingMambaNet, readout the running mean of its leaky-integrator
membrane (the last step scores the whole clip). ``--augment``: random time shift,
stretch and mel warp.

A ``--val-frac`` share of the training items (seeded) picks the best epoch; the test split
is scored once. Outputs in ``--out-dir``: metrics.json (``accuracy``, ``macro_f1``,
``confusion``), confusion.png, curves.png, model.pt (weights + model/feature spec),
ckpt.pt / best.pt (``--resume``). ``--threads 1`` on a shared machine.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import ConcatDataset

from bimsnn import _ddp
from bimsnn._ckpt import atomic_torch_save, load_checkpoint, write_json
from bimsnn._paths import shared_data_dir
from bimsnn.data.audio import FSDD, LogMel, SpeechCommands
from bimsnn.data.speech_features import (  # noqa: F401  (re-exported for speech_recognition)
    FITS,
    NORMS,
    SpikeCode,
    SpikeSet,
    load_features,
    normalise,
    speed_resampler,
)
from bimsnn.ssm.mamba import MambaConfig, SpikingMambaNet
from bimsnn.train import (
    TrainConfig,
    compute_metrics,
    evaluate,
    fit,
    parse_config,
    plot_confusion,
)

TRAIN_DEFAULTS = TrainConfig(epochs=20, batch_size=32, lr=3e-3, weight_decay=0.01,
                             balance=True, out_dir="runs/keyword_spotting")


def _f(default, help: str, choices: tuple | None = None):
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class KWSConfig:
    """Data, feature and model flags (training flags: :class:`TrainConfig`)."""

    dataset: str = _f("fsdd", "corpus", ("fsdd", "speechcommands"))
    data_dir: str | None = _f(None, "dataset folder (FSDD: shared copy, else synthetic)")
    split: str = _f("takes", "FSDD test split", ("takes", "speaker"))
    test_speakers: tuple[str, ...] | None = _f(None, "FSDD --split speaker: held-out speakers")
    classes: str = _f("all35", "Speech Commands label set", ("all35", "v2_12"))
    n_mels: int = _f(40, "F, mel bands")
    norm: str = _f("global", "normalisation (bimsnn.data.speech_features.normalise)", NORMS)
    fit: str = _f("crop", "fixed length: centre crop / front pad, or stretch in time", FITS)
    speed_perturb: tuple[float, ...] | None = _f(None, "extra training copies speed-"
                                                 "perturbed by these factors, e.g. 0.9 1.1")
    hop_ms: float = _f(10.0, "frame hop (one time step)")
    duration_s: float = _f(0.64, "clip length after crop/pad: T = duration / hop")
    levels: int = _f(4, "L, thermometer levels per band")
    delta: float | None = _f(None, "ON/OFF spikes when a band moves by this (none: off)")
    augment: bool = _f(True, "random time shift, stretch and mel warp while training")
    val_frac: float = _f(0.1, "share of training items held out for model selection")
    schedule: str = _f("cosine", "learning rate over epochs", ("cosine", "constant"))
    d_model: int = _f(64, "D")
    n_layers: int = _f(1, "SpikingMamba blocks")
    d_state: int = _f(16, "SSM state size N")
    readout: str = _f("auto", "logits: running mean of the readout membrane, or the "
                      "membrane itself (li: a per-step target, which online rules need); "
                      "auto: mean_mem for bptt, li otherwise", ("auto", "mean_mem", "li"))
    hybrid_grad: str = _f("autograd", "Hybrid's gradient part", ("rtrl", "autograd"))
    eval_only: bool = _f(False, "score --checkpoint on the test (or all) items; no training")
    checkpoint: str | None = _f(None, "model.pt of this recipe (--eval-only)")
    eval_subset: str = _f("test", "items scored by --eval-only", ("test", "all"))
    max_items: int | None = _f(None, "cap per split (quick runs)")
    threads: int = _f(0, "torch CPU threads (0: torch's default)")


# ---------------------------------------------------------------------------- synthetic FSDD
# Three (F1, F2) formant pairs in Hz per digit: a fixed "pronunciation".
_DIGIT_FORMANTS = [[(280, 2250), (650, 1100), (400, 800)], [(500, 900), (650, 1200), (300, 2300)],
                   [(300, 900), (280, 2250), (300, 900)], [(400, 1900), (300, 2300), (650, 1700)],
                   [(450, 800), (500, 1000), (700, 1200)], [(700, 1100), (400, 2100), (350, 1700)],
                   [(400, 1800), (500, 1500), (300, 2200)], [(500, 1800), (650, 1600), (500, 1400)],
                   [(700, 1700), (400, 2100), (300, 2000)], [(500, 1500), (700, 1200), (400, 2000)]]


def write_synthetic_fsdd(root: str | Path, speakers: tuple[str, ...] = ("ann", "bob", "cat"),
                         takes: int = 10, sample_rate: int = 8000, seed: int = 0) -> Path:
    """Write ``{digit}_{speaker}_{take}.wav`` smoke clips (see module docstring) to
    ``root/recordings``; returns ``root``. Idempotent for the same arguments."""
    root = Path(root)
    folder = root / "recordings"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for s, speaker in enumerate(speakers):
        f0, tract = 100.0 + 60.0 * s, 1.0 + 0.08 * (s - 1)           # pitch, formant scale
        for digit, formants in enumerate(_DIGIT_FORMANTS):
            for take in range(takes):
                path = folder / f"{digit}_{speaker}_{take}.wav"
                wave = _vowels(rng, formants, f0 * rng.uniform(0.93, 1.07),
                               tract * rng.uniform(0.97, 1.03), sample_rate)
                if not path.is_file():
                    sf.write(path, wave, sample_rate, subtype="PCM_16")
    return root


def _vowels(rng, formants, f0: float, tract: float, sr: int) -> np.ndarray:
    """Concatenated vowel-like segments: a harmonic source (f0) shaped by two resonances."""
    segs = []
    for f1, f2 in formants:
        n = int(sr * rng.uniform(0.09, 0.14))
        t = np.arange(n) / sr
        harmonics = np.arange(1, int(sr / 2 / f0))
        amp = sum(1.0 / (1.0 + ((harmonics * f0 - f * tract) / (0.12 * f)) ** 2)
                  for f in (f1, f2))                                   # resonance envelope
        seg = (amp[:, None] * np.sin(2 * np.pi * f0 * harmonics[:, None] * t)).sum(0)
        segs.append(seg * np.hanning(n))
    wave = np.concatenate([np.zeros(int(0.03 * sr)), *segs, np.zeros(int(0.03 * sr))])
    wave = wave / np.abs(wave).max() * 0.5 + 0.003 * rng.standard_normal(len(wave))
    return wave.astype(np.float32)


# ---------------------------------------------------------------------------- data
def resolve_fsdd(cfg: KWSConfig, out: Path) -> tuple[Path, bool]:
    """(FSDD folder, is_synthetic)."""
    if cfg.data_dir:
        return Path(cfg.data_dir), False
    shared = shared_data_dir()
    if shared is not None and (shared / "fsdd").is_dir():
        return shared / "fsdd", False
    if _ddp.dist_info().is_main:
        write_synthetic_fsdd(out / "synthetic_fsdd")
    _ddp.barrier()
    return out / "synthetic_fsdd", True


def build_splits(cfg: KWSConfig, tc: TrainConfig, out: Path) -> tuple[dict, list[str], dict]:
    """{"train", "val", "test": (ds, index array)} over one base dataset per split, the class
    names, and a description of the data."""
    pipe = LogMel(8000 if cfg.dataset == "fsdd" else 16000, cfg.n_mels, hop_ms=cfg.hop_ms,
                  f_min=50.0)
    if cfg.dataset == "fsdd":
        root, synthetic = resolve_fsdd(cfg, out)
        ds = FSDD(root, pipeline=pipe)
        if cfg.eval_only and cfg.eval_subset == "all":
            test = np.arange(len(ds))
            train = np.zeros(0, dtype=int)
        else:
            speakers = sorted({m["speaker"] for _, _, m, _ in ds.items})
            held = cfg.test_speakers or (
                [speakers[np.random.default_rng(tc.seed).integers(len(speakers))]]
                if cfg.split == "speaker" else None)
            train, test = ds.split("takes" if cfg.split == "takes" else "speakers", held)
        parts = {"train": (ds, train), "test": (ds, test)}
        classes = [str(d) for d in range(10)]
        info = {"dataset": "fsdd", "root": str(root), "synthetic": synthetic,
                "split": cfg.split, "test_speakers": None if cfg.split == "takes" else
                sorted({ds.items[i][2]["speaker"] for i in test})}
    else:
        if not cfg.data_dir:
            raise SystemExit("--dataset speechcommands needs --data-dir (torchaudio layout)")
        sub = {s: SpeechCommands(cfg.data_dir, s, cfg.classes, pipeline=pipe)
               for s in ("training", "validation", "testing")}
        parts = {"train": (sub["training"], np.arange(len(sub["training"]))),
                 "val": (sub["validation"], np.arange(len(sub["validation"]))),
                 "test": (sub["testing"], np.arange(len(sub["testing"])))}
        classes = sub["testing"].classes
        info = {"dataset": "speechcommands", "root": cfg.data_dir, "classes": cfg.classes}
    if "val" not in parts and cfg.val_frac > 0 and len(parts["train"][1]):
        perm = np.random.default_rng(tc.seed).permutation(parts["train"][1])
        n_val = max(1, round(cfg.val_frac * len(perm)))
        parts["val"] = (parts["train"][0], np.sort(perm[:n_val]))
        parts["train"] = (parts["train"][0], np.sort(perm[n_val:]))
    if cfg.max_items:
        parts = {k: (d, i[:: max(1, len(i) // cfg.max_items)][: cfg.max_items])
                 for k, (d, i) in parts.items()}
    return parts, classes, info


def spike_sets(parts: dict, cfg: KWSConfig) -> dict:
    """{split: SpikeSet}; the training set gains one speed-perturbed copy per factor of
    ``--speed-perturb`` (a ConcatDataset of SpikeSets)."""
    frames = round(cfg.duration_s * 1000 / cfg.hop_ms)
    code = SpikeCode(cfg.levels, cfg.delta)
    out = {}
    for k, (ds, idx) in parts.items():
        metas = [dict(ds.items[int(i)][2]) for i in idx]
        labels = [int(ds.items[int(i)][1]) for i in idx]
        aug = cfg.augment and k == "train"
        speeds = [1.0, *(cfg.speed_perturb or ())] if k == "train" else [1.0]
        sets = [SpikeSet(load_features(ds, idx, frames, cfg.norm, cfg.fit, a), labels, metas,
                         code, augment=aug) for a in speeds]
        out[k] = sets[0] if len(sets) == 1 else ConcatDataset(sets)
    return out


def model_spec(cfg: KWSConfig, n_inputs: int, n_classes: int, rule: str = "bptt") -> dict:
    """MambaConfig keyword arguments (primitives: stored in model.pt)."""
    readout = cfg.readout if cfg.readout != "auto" else ("mean_mem" if rule == "bptt" else "li")
    return {"d_model": cfg.d_model, "n_inputs": n_inputs, "n_classes": n_classes,
            "n_layers": cfg.n_layers, "d_state": cfg.d_state, "readout": readout}


def build_model(spec: dict) -> SpikingMambaNet:
    return SpikingMambaNet(MambaConfig(**spec))


def hybrid_factory(tc: TrainConfig, grad: str):
    """Rule factory for ``fit`` (None: ``make_rule``'s default for tc.rule)."""
    if tc.rule != "hybrid":
        return None
    from bimsnn.rules import Hybrid

    return lambda m: Hybrid(m, lam=tc.lam, grad=grad, balance=tc.balance)


def train_model(spec: dict, sets: dict, tc: TrainConfig, cfg: KWSConfig):
    """Seed, build, fit (AdamW, cosine or constant learning rate) → (model, history)."""
    torch.manual_seed(tc.seed)
    model = build_model(spec)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(tc.epochs, 1))
             if cfg.schedule == "cosine" else None)
    history = fit(model, sets["train"], sets.get("val"), tc, optimizer=opt, scheduler=sched,
                  rule=hybrid_factory(tc, cfg.hybrid_grad))
    return model, history


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    tc, cfg = parse_config(TRAIN_DEFAULTS, KWSConfig(), argv=argv, description=__doc__)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    info, device = _ddp.setup(tc.device)
    out = Path(tc.out_dir or "runs/keyword_spotting")
    t0 = time.perf_counter()
    if cfg.eval_only:
        if not cfg.checkpoint:
            raise SystemExit("--eval-only needs --checkpoint PATH (a model.pt of this recipe)")
        ck = load_checkpoint(cfg.checkpoint)
        cfg = KWSConfig(**{**asdict(cfg), **ck["features"]})  # the features it was trained on
    parts, classes, data_info = build_splits(cfg, tc, out)
    sets = spike_sets(parts, cfg)
    n_in = SpikeCode(cfg.levels, cfg.delta).n_channels(cfg.n_mels)
    logging.info("%s: %s items, %d afferents, features in %.0f s", data_info["dataset"],
                 {k: len(v) for k, v in sets.items()}, n_in, time.perf_counter() - t0)
    if cfg.eval_only:
        spec = ck["spec"]
        model = build_model(spec)
        model.load_state_dict(ck["model"])
        tc = TrainConfig(**{**asdict(tc), "rule": ck.get("rule", tc.rule)})
        history = []
    else:
        spec = model_spec(cfg, n_in, len(classes), tc.rule)
        model, history = train_model(spec, sets, tc, cfg)
    model.to(device)
    res = evaluate(model, sets["test"], tc)
    m = compute_metrics(res["scores"], res["labels"], "multiclass")
    result = {"accuracy": m["acc"], "macro_f1": m["macro_f1"], "confusion": m["confusion"],
              "classes": classes, "n_test": m["n"], "rule": tc.rule, "data": data_info,
              "wall_s": time.perf_counter() - t0, "history": history,
              "config": {"train": asdict(tc), "kws": asdict(cfg)}}
    if info.is_main:
        plot_confusion(m["confusion"], out / "confusion.png", classes)
        if not cfg.eval_only:
            feats = {k: getattr(cfg, k) for k in ("n_mels", "norm", "fit", "hop_ms",
                                                  "duration_s", "levels", "delta")}
            atomic_torch_save({"format": 1, "model": {k: v.cpu() for k, v in
                                                      model.state_dict().items()},
                               "spec": spec, "features": feats, "classes": classes,
                               "rule": tc.rule}, out / "model.pt")
        write_json(result, out / "metrics.json")
        logging.info("test accuracy %.4f (%d items) in %.0f s", m["acc"], m["n"],
                     result["wall_s"])
    return result


if __name__ == "__main__":
    main()
