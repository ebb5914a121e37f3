"""Keyword spotting pipeline: audio clips → log-mel → thermometer spikes → class scores.

Symbols: N items, T frames (one per hop; ``frames`` after crop/pad), F mel bands, L
thermometer levels, C = F·L (+ 2F with delta) spike afferents, B batch, K classes.

One preprocessing spec (:class:`KWSPre`, stored in ``model.pt``) serves training and
``--eval-only`` scoring: waveform [speed-perturbed copies] → log-mel
(:class:`bimsnn.data.audio.LogMel`) → normalisation → fixed length
(:func:`bimsnn.data.speech_features.load_features`) → :class:`~bimsnn.encoding.SpikeCode`
per item (:class:`~bimsnn.data.speech_features.SpikeSet`, which also augments the training
copy) → ``spiking_mamba`` (:mod:`bimsnn.models`).

Data: FSDD (``{digit}_{speaker}_{take}.wav``) from a folder, the shared copy, or a
*synthetic* smoke set (:func:`write_synthetic_fsdd`, not speech); Speech Commands v2 with
its official lists. A seeded ``val_frac`` share of the training items picks the best epoch.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import ConcatDataset

from bimsnn import models
from bimsnn.data import FSDD, LogMel, SpeechCommands
from bimsnn.data.speech_features import SpikeSet, load_features
from bimsnn.encoding import SpikeCode
from bimsnn.metrics import classification_metrics
from bimsnn.paths import shared_data_dir
from bimsnn.tasks.common import SPIKING
from bimsnn.training import CheckpointError, RunError, TrainConfig, distributed, evaluate, fit

RECIPE = "keyword_spotting"


@dataclass
class KWSPre:
    """How a clip becomes model input (kept in model.pt as a dict).

    >>> pre = KWSPre()
    >>> pre.frames, pre.n_inputs, KWSPre(delta=0.3).n_inputs   # T, C = F·L (+ 2F)
    (64, 160, 240)
    """

    dataset: str = "fsdd"          # fsdd | speechcommands
    sample_rate: int = 8000        # FSDD 8 kHz, Speech Commands 16 kHz
    n_mels: int = 40               # F
    hop_ms: float = 10.0           # one frame = one model step
    f_min: float = 50.0
    norm: str = "global"           # bimsnn.data.speech_features.normalise
    fit: str = "crop"              # crop (centre crop / front pad) | stretch
    duration_s: float = 0.64       # T = duration_s / hop
    levels: int = 4                # L
    delta: float | None = None     # ON/OFF spikes when a band moves by this
    classes: str = "all35"         # Speech Commands label set

    @property
    def frames(self) -> int:
        return round(self.duration_s * 1000 / self.hop_ms)

    @property
    def code(self) -> SpikeCode:
        return SpikeCode(self.levels, self.delta)

    @property
    def n_inputs(self) -> int:
        """C, the afferents per step."""
        return self.code.n_channels(self.n_mels)

    def pipeline(self) -> LogMel:
        return LogMel(self.sample_rate, self.n_mels, hop_ms=self.hop_ms, f_min=self.f_min)


def pre_from_checkpoint(ck: dict, path) -> KWSPre:
    """The :class:`KWSPre` of a keyword_spotting model.pt (format 2, or the format-1
    ``features``); another recipe's model.pt is a CheckpointError naming the file."""
    pre, recipe = ck.get("preprocessing"), ck.get("recipe")
    need = ("n_mels", "norm", "fit", "duration_s", "levels")
    if recipe not in (None, RECIPE) or not (isinstance(pre, dict) and all(k in pre for k in need)):
        what = recipe or "no keyword-spotting features in it"
        raise CheckpointError(path, f"another recipe's model.pt ({what}); pass a "
                              "keyword_spotting model.pt")
    return KWSPre(**{k: v for k, v in pre.items() if k in KWSPre.__dataclass_fields__})


# ---------------------------------------------------------------------------- synthetic FSDD
# Three (F1, F2) formant pairs in Hz per digit: a fixed "pronunciation".
_DIGIT_FORMANTS = [[(280, 2250), (650, 1100), (400, 800)], [(500, 900), (650, 1200), (300, 2300)],
                   [(300, 900), (280, 2250), (300, 900)], [(400, 1900), (300, 2300), (650, 1700)],
                   [(450, 800), (500, 1000), (700, 1200)], [(700, 1100), (400, 2100), (350, 1700)],
                   [(400, 1800), (500, 1500), (300, 2200)], [(500, 1800), (650, 1600), (500, 1400)],
                   [(700, 1700), (400, 2100), (300, 2000)], [(500, 1500), (700, 1200), (400, 2000)]]


def write_synthetic_fsdd(root: str | Path, speakers: tuple[str, ...] = ("ann", "bob", "cat"),
                         takes: int = 10, sample_rate: int = 8000, seed: int = 0) -> Path:
    """Write ``{digit}_{speaker}_{take}.wav`` smoke clips to ``root/recordings``; returns
    ``root``. Each digit is 3 vowel-like sounds (harmonic source, 2 formants) with a
    per-speaker pitch and formant scale: not speech, its accuracy means nothing.
    Idempotent for the same arguments (existing files are kept)."""
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
    """(N,) float32: vowel-like segments, a harmonic source (f0) shaped by two resonances."""
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
def fsdd_root(data_dir: str | None, synthetic_dir: Path) -> tuple[Path, bool]:
    """(FSDD folder, is_synthetic): ``data_dir``, else the shared copy, else the synthetic
    set written once to ``synthetic_dir`` (rank 0; the others wait)."""
    if data_dir:
        return Path(data_dir), False
    shared = shared_data_dir()
    if shared is not None and (shared / "fsdd").is_dir():
        return shared / "fsdd", False
    if distributed.dist_info().is_main:
        write_synthetic_fsdd(synthetic_dir)
    distributed.barrier()
    return synthetic_dir, True


def fsdd_parts(pre: KWSPre, root: Path, *, split: str = "takes", test_speakers=None,
               seed: int = 0, every_item: bool = False) -> tuple[dict, list[str], dict]:
    """({"train", "test": (FSDD, index array)}, class names, data description). ``split``:
    takes 0-4 are test (FSDD README), or ``speaker``: ``test_speakers`` (default one drawn
    with ``seed``). ``every_item``: all of ``root`` is test (``--eval-only``)."""
    ds = FSDD(root, pipeline=pre.pipeline())
    if every_item:
        train, test = np.zeros(0, dtype=int), np.arange(len(ds))
    else:
        speakers = sorted({m["speaker"] for _, _, m, _ in ds.items})
        held = test_speakers or ([speakers[np.random.default_rng(seed).integers(len(speakers))]]
                                 if split == "speaker" else None)
        train, test = ds.split("takes" if split == "takes" else "speakers", held)
    info = {"dataset": "fsdd", "root": str(root), "split": "all" if every_item else split,
            "test_speakers": None if split == "takes" and not every_item else
            sorted({ds.items[i][2]["speaker"] for i in test})}
    return {"train": (ds, train), "test": (ds, test)}, [str(d) for d in range(10)], info


def speechcommands_parts(pre: KWSPre, root: str | Path, strict: bool = False,
                         test_only: bool = False) -> tuple[dict, list[str], dict]:
    """The official training / validation / testing lists of Speech Commands v2."""
    subsets = {"test": "testing"} if test_only else {
        "train": "training", "val": "validation", "test": "testing"}
    parts = {}
    for k, name in subsets.items():
        ds = SpeechCommands(root, name, pre.classes, pipeline=pre.pipeline(), strict=strict)
        parts[k] = (ds, np.arange(len(ds)))
    return parts, parts["test"][0].classes, {"dataset": "speechcommands", "root": str(root),
                                             "classes": pre.classes}


def hold_out_val(parts: dict, val_frac: float, seed: int, max_items: int | None = None) -> dict:
    """Move a seeded ``val_frac`` share of train to "val" (unless there is one); then cap
    every split at ``max_items`` (evenly spaced) for quick runs."""
    if "val" not in parts and val_frac > 0 and len(parts["train"][1]):
        perm = np.random.default_rng(seed).permutation(parts["train"][1])
        n_val = max(1, round(val_frac * len(perm)))
        parts = {**parts, "val": (parts["train"][0], np.sort(perm[:n_val])),
                 "train": (parts["train"][0], np.sort(perm[n_val:]))}
    if max_items:
        parts = {k: (d, i[:: max(1, len(i) // max_items)][:max_items])
                 for k, (d, i) in parts.items()}
    return parts


def spike_sets(parts: dict, pre: KWSPre, augment: bool = True,
               speed_perturb: tuple[float, ...] | None = None) -> dict:
    """{split: SpikeSet of items (spikes (frames, C), label, meta)}, split lengths N. The
    training set is augmented and gains one speed-perturbed copy per factor (a
    ConcatDataset of SpikeSets); empty splits are left out."""
    out = {}
    for k, (ds, idx) in parts.items():
        if not len(idx):
            continue
        metas = [dict(ds.items[int(i)][2]) for i in idx]
        labels = [int(ds.items[int(i)][1]) for i in idx]
        speeds = [1.0, *(speed_perturb or ())] if k == "train" else [1.0]
        sets = [SpikeSet(load_features(ds, idx, pre.frames, pre.norm, pre.fit, a), labels,
                         metas, pre.code, augment=augment and k == "train") for a in speeds]
        out[k] = sets[0] if len(sets) == 1 else ConcatDataset(sets)
    return out


# ---------------------------------------------------------------------------- model, training
# The recipe's training defaults (and benchmarks/online_speed.py's). BPTT by default; the
# online rules (--rule rtrl | hybrid) run in chunks of 32 steps (64-frame clips: 2 chunks);
# Hybrid's λ = 0.9 is each weight's share of its update (balance="element"). The x_proj
# traces (Δ and B rows, O(B·N·E²) per step: 2x the epoch time at E = 128) are off, so
# x_proj learns within a chunk only. Measured on FSDD held-out takes (benchmarks/RESULTS.md):
# K = 32 without them RTRL 0.975 / Hybrid 0.965; K = 16 with them 0.970 / 0.970.
DEFAULT_TRAIN = TrainConfig(epochs=20, batch_size=32, lr=3e-3, weight_decay=0.01, lam=0.9,
                            balance="element", chunk=32, x_proj_traces=False)


# Per-split recipe defaults (flags given override them). Unseen speakers: speaker-level
# CMVN, stretch to length and speed-perturbed copies at 0.9 / 1.1, the measured order of
# gains on the 3 -> 1 speaker rotation (a GRU proxy: per-utterance norm 0.67, speaker CMVN
# 0.79, + speed copies 0.835; benchmarks/RESULTS.md). Held-out takes keep the recipe's own
# defaults (global norm, crop: 0.975 BPTT / 0.965 Hybrid).
SPLIT_DEFAULTS: dict[str, dict] = {
    "speaker": {"norm": "speaker", "fit": "stretch", "speed_perturb": [0.9, 1.1]},
}


def kws_spec(n_inputs: int, n_classes: int, *, d_model: int = 64, n_layers: int = 1,
             d_state: int = 16, readout: str = "auto", rule: str = "bptt",
             model: str = "mamba") -> dict:
    """The ``spiking_mamba`` spec. ``readout`` auto: the running mean of the readout
    membrane (mean_mem) for BPTT; its membrane itself (li, a per-step target) for the
    online rules. ``model="lstm"``: the non-spiking baseline
    (:class:`~bimsnn.models.baselines.LSTMClassifier`, ``d_model`` hidden units, BPTT)."""
    if model == "lstm":
        return models.spec("lstm", n_inputs=n_inputs, n_classes=n_classes, hidden=d_model,
                           num_layers=n_layers)
    if model != "mamba":
        raise ValueError(f"model must be 'mamba' or 'lstm', got {model!r}")
    if readout == "auto":
        readout = "mean_mem" if rule == "bptt" else "li"
    return models.spec("spiking_mamba", d_model=d_model, n_inputs=n_inputs,
                       n_classes=n_classes, n_layers=n_layers, d_state=d_state, readout=readout)


def train_kws(spec: dict, sets: dict, tc: TrainConfig, schedule: str = "cosine"):
    """Seed, build, :func:`bimsnn.training.fit` with AdamW and a cosine (or constant)
    learning rate over the epochs; the online rules come from ``tc`` (rule, lam, balance,
    hybrid_grad); a model without ``step`` (the LSTM) is trained with BPTT whatever
    ``tc.rule``. Returns (model at its best val epoch, history, training seconds)."""
    if spec["name"] not in SPIKING and tc.rule != "bptt":
        print(f"{spec['name']} has no step(): trained with BPTT, not {tc.rule}")
        tc = replace(tc, rule="bptt")
    torch.manual_seed(tc.seed)
    model = models.build(spec)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(tc.epochs, 1))
             if schedule == "cosine" else None)
    t0 = time.perf_counter()
    history = fit(model, sets["train"], sets.get("val"), tc, optimizer=opt, scheduler=sched)
    return model, history, time.perf_counter() - t0


def score(model, test, tc: TrainConfig) -> dict:
    """accuracy, macro_f1, confusion (K × K) and n over every item of ``test``."""
    res = evaluate(model, test, tc)
    m = classification_metrics(res["scores"], res["labels"], "multiclass")
    return {"accuracy": m["acc"], "macro_f1": m["macro_f1"], "confusion": m["confusion"],
            "n_test": m["n"]}


def load_data(pre: KWSPre, data_dir: str | None, out: Path, *, eval_only: bool, split: str,
              test_speakers, seed: int, val_frac: float, max_items: int | None,
              strict: bool) -> tuple[dict, list[str], dict]:
    """(parts, classes, info) for training (train / val / test) or ``eval_only`` (every
    FSDD file of the folder; Speech Commands' testing list)."""
    if pre.dataset == "speechcommands":
        if not data_dir:
            raise RunError(None, "--dataset speechcommands needs --data-dir (torchaudio layout)")
        parts, classes, info = speechcommands_parts(pre, data_dir, strict, eval_only)
    else:
        root, synthetic = fsdd_root(data_dir, out / "synthetic_fsdd")
        parts, classes, info = fsdd_parts(pre, root, split=split, test_speakers=test_speakers,
                                          seed=seed, every_item=eval_only)
        info["synthetic"] = synthetic
    return hold_out_val(parts, 0.0 if eval_only else val_frac, seed, max_items), classes, info


def save_model(path: Path, model, spec: dict, pre: KWSPre, classes: list[str],
               tc: TrainConfig) -> Path:
    """Write ``model.pt`` (:func:`bimsnn.models.save`) with the features and classes."""
    return models.save(path, model, spec, preprocessing=asdict(pre), recipe=RECIPE,
                       classes=list(classes), rule=tc.rule, loss_window=tc.loss_window,
                       train_config=asdict(tc))
