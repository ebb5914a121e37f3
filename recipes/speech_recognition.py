"""CTC speech recognition (LibriSpeech layout, FSDD digit strings) with a spiking Mamba.

    python recipes/speech_recognition.py                       # smoke set (see Data)
    python recipes/speech_recognition.py --dataset fsdd_strings --data-dir /data/fsdd
                                                              # connected digits
    python recipes/speech_recognition.py --dataset fsdd_strings --data-dir /data/fsdd \
        --model lstm --d-model 128                              # the LSTM baseline
    python recipes/speech_recognition.py --data-dir /data --train-url train-clean-100 \
        --val-url dev-clean --test-url test-clean --stack 3 --no-cache
    python recipes/speech_recognition.py --rule hybrid --beam 8
    python recipes/speech_recognition.py --eval-only --checkpoint runs/speech_recognition/model.pt \
        --data-dir /data --test-url test-other                # every utterance of that subset
    python recipes/speech_recognition.py --eval-only --checkpoint M --data-dir FSDD_FOLDER
                                                              # every file: one digit each
    torchrun --nproc_per_node=2 recipes/speech_recognition.py  # data parallel

Data: ``<data-dir>/LibriSpeech/<url>/<speaker>/<chapter>/<spk>-<chap>-<utt>.flac`` with
``<spk>-<chap>.trans.txt``. With no ``--data-dir`` a *smoke* set in that layout is written
to ``<out>/smoke_librispeech`` (FLAC, 16 kHz, characters rendered as two-tone chords; see
:mod:`bimsnn.tasks.asr`): it checks that the pipeline runs and learns, and its WER says
nothing about LibriSpeech. ``--dataset fsdd_strings`` (:class:`bimsnn.data.FSDDStrings`):
2-7 digits of one FSDD speaker joined by 50-300 ms pauses, transcripts like "THREE ONE
FOUR", ``--fsdd-utts`` for training (val and test a quarter each), ``--split takes``
(test takes 0-4, val 5-9, train the rest, every speaker) or ``speaker`` (``--test-speakers``,
default one drawn with ``--seed``), with the dataset's defaults
(:data:`bimsnn.tasks.asr.DATASET_DEFAULTS`: ``--stack 4 --beta 0.5``, 15 epochs; flags
given override them). ``--eval-only`` on a folder of FSDD WAVs (``--dataset auto`` detects
it) scores every file as a one-digit utterance.

Pipeline (:mod:`bimsnn.tasks.asr`): log-mel → per-utterance ``--norm`` → thermometer spikes
(``--levels`` [+ ``--delta``]) → ``--stack`` consecutive frames concatenated → spiking
Mamba per-step logits (T, B, V) → CTC (blank 0) over ``--units``: characters (V = 29) or,
on connected digits (``auto``), the ten digit words (V = 11: one label per digit instead of
3-5 letters that must all be right). Decoding: greedy best path, or prefix beam search
(``--beam N``). WER / CER are corpus-level edit-distance rates.

Training (:func:`bimsnn.tasks.asr.train_asr`): the output bias starts at the log CTC frame
prior (``--no-prior-bias``: zero), then :func:`bimsnn.training.fit` with ``per_step=True``:
BPTT, or an online ``--rule`` (chunks of ``--chunk`` 16 steps, traces across), where CTC's
per-step error from a first pass drives the rule (:class:`bimsnn.training.SequenceTarget`);
the validation CER picks the best epoch. Connected digits, held-out takes, 1000 training
utterances, greedy, WER / CER, the defaults (2 busy cores): spiking BPTT 0.051 / 0.044
(4.5 min), LSTM 0.044 / 0.041 (2 min), ``--rule hybrid --epochs 8`` 0.088 / 0.079 (6.5
min). With ``--units char`` (15 epochs): spiking BPTT 0.209 / 0.072, LSTM 0.150 / 0.047.
Outputs in ``--out`` (default runs/speech_recognition): metrics.json (``wer``, ``cer``,
examples, ``train_seconds``, ``peak_rss_mb``), curves.png, model.pt
(``bimsnn.models.load``), ckpt.pt, best.pt (``--resume``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from bimsnn import models
from bimsnn.paths import shared_data_dir
from bimsnn.tasks import asr as task
from bimsnn.tasks.common import peak_rss_mb, run_dir, stopped_at_max_steps
from bimsnn.training import (
    RunConfig,
    RunError,
    TrainConfig,
    check_out_dir,
    distributed,
    flag,
    main_guard,
    parse_config,
    peek_flag,
    write_json,
)


@dataclass
class ASRConfig(RunConfig):
    dataset: str = flag("auto", "librispeech layout or FSDD digit strings; auto: "
                        "fsdd_strings when --data-dir holds FSDD WAVs", task.DATASETS)
    data_dir: str | None = flag(None, "folder holding LibriSpeech/<url>/ or FSDD WAVs (none: "
                                "smoke set; fsdd_strings: the shared FSDD copy)")
    split: str = flag("takes", "fsdd_strings test split", ("takes", "speaker"))
    test_speakers: list[str] | None = flag(None, "fsdd_strings --split speaker: held out")
    fsdd_utts: int = flag(1000, "fsdd_strings: training utterances (val/test a quarter)")
    train_url: str = flag("train-clean-100", "training subset folder")
    val_url: str = flag("dev-clean", "validation subset folder (model selection)")
    test_url: str = flag("test-clean", "test subset folder (--eval-only: the one scored)")
    ext_audio: str = flag(".flac", "audio file extension")
    n_mels: int = flag(40, "F, mel bands")
    norm: str = flag("global", "per-utterance normalisation (speech_features.normalise)",
                     ("global", "cmn"))
    levels: int = flag(4, "thermometer levels per band")
    delta: float | None = flag(None, "ON/OFF spikes when a band moves by this (none: off)")
    stack: int = flag(2, "frames concatenated per model step (fsdd_strings default: 4)")
    units: str = flag("auto", "CTC output units; auto: the ten digit words on fsdd_strings, "
                      "characters otherwise", task.UNITS)
    model: str = flag("mamba", "spiking Mamba, or the non-spiking LSTM baseline (BPTT)",
                      ("mamba", "lstm"))
    d_model: int = flag(192, "D (lstm: hidden units)")
    n_layers: int = flag(1, "SpikingMamba blocks (lstm: layers)")
    d_state: int = flag(16, "SSM state size N")
    beta: float = flag(0.9, "LIF membrane decay per model step (fsdd_strings default: 0.5)")
    readout_beta: float = flag(0.5, "per-step readout leak (0: no smoothing of logits)")
    prior_bias: bool = flag(True, "output bias starts at the log CTC frame prior (off: 0)")
    beam: int = flag(0, "prefix beam width (0: greedy)")
    cache: bool = flag(True, "keep encoded utterances in memory (off for large subsets)")
    max_utts: int | None = flag(None, "cap per subset (quick runs)")
    smoke_utts: int = flag(160, "smoke set: training utterances (val/test get a quarter)")


# One block of 192 with the prior output bias learns the smoke set (test CER 0.008 and 0.016
# in two runs, 2 min each on 2 busy cores); two blocks of 96 with a zero output bias stalled
# at CER ~0.8 (bimsnn.tasks.asr docstring).
# Online rules as keyword spotting's: chunks of 16 steps with traces across, Hybrid's λ = 0.9
# a per-weight share, no x_proj traces.
TRAIN = TrainConfig(epochs=40, batch_size=8, lr=3e-3, schedule="cosine", grad_clip=1.0,
                    lam=0.9, balance="element", chunk=16, x_proj_traces=False)


def main(argv: list[str] | None = None) -> dict:
    t_start = time.perf_counter()
    d = task.dataset_defaults(peek_flag(argv, "dataset", "auto"),
                              peek_flag(argv, "data_dir", None))
    cfg, tc = parse_config(replace(ASRConfig(), **d["recipe"]), replace(TRAIN, **d["train"]),
                           argv=argv, description=__doc__)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(cfg.threads)
    dist, device = distributed.setup(tc.device)
    out = check_out_dir(run_dir(tc.out_dir, "speech_recognition_eval" if cfg.eval_only
                                else "speech_recognition"))
    tc = replace(tc, out_dir=str(out))
    dataset = task.detect_dataset(cfg.data_dir) if cfg.dataset == "auto" else cfg.dataset
    if dataset == "fsdd_strings" and not cfg.data_dir:
        shared = shared_data_dir()
        if shared is None or not (shared / "fsdd").is_dir():
            raise RunError(None, "--dataset fsdd_strings needs --data-dir (an FSDD folder)")
        cfg = replace(cfg, data_dir=str(shared / "fsdd"))
    if cfg.eval_only:  # features and rule as trained; the data as --dataset says
        ck_path = cfg.checkpoint or run_dir(None, "speech_recognition") / "model.pt"
        model, ck = models.load(ck_path)
        pre = replace(task.pre_from_checkpoint(ck, ck_path), dataset=dataset)
        spec = ck["spec"]
        tc = replace(tc, rule=ck.get("rule", "bptt"), out_dir=None)
    else:
        pre = task.ASRPre(dataset=dataset, sample_rate=8000 if dataset == "fsdd_strings"
                          else 16000, units=task.default_units(dataset) if cfg.units == "auto"
                          else cfg.units, **{k: getattr(cfg, k) for k in (
                              "n_mels", "norm", "levels", "delta", "stack")})
    root = Path(cfg.data_dir) if cfg.data_dir else out / "smoke_librispeech"
    urls = {"train": cfg.train_url, "val": cfg.val_url, "test": cfg.test_url}
    if not cfg.data_dir and dist.is_main:
        task.write_smoke_librispeech(root, cfg.smoke_utts, tc.seed, tuple(urls.values()),
                                     ext=cfg.ext_audio)
    distributed.barrier()
    sets, info = task.open_sets(pre, root, eval_only=cfg.eval_only, urls=urls,
                                ext_audio=cfg.ext_audio, split=cfg.split,
                                test_speakers=cfg.test_speakers, n_utts=cfg.fsdd_utts,
                                seed=tc.seed, cache=cfg.cache, max_utts=cfg.max_utts,
                                strict=cfg.strict)
    print(f"{info['dataset']} at {root}: {dict((k, len(v)) for k, v in sets.items())} "
          f"utterances, {pre.n_inputs} afferents")
    history, secs = [], None
    if not cfg.eval_only:
        spec = task.asr_spec(pre.n_inputs, model=cfg.model, d_model=cfg.d_model,
                             n_layers=cfg.n_layers, d_state=cfg.d_state,
                             readout_beta=cfg.readout_beta, beta=cfg.beta,
                             n_classes=pre.vocab.n_classes)
        model, history, secs = task.train_asr(spec, sets["train"], sets["val"], tc,
                                              prior_bias=cfg.prior_bias)
        if stopped_at_max_steps(tc):
            print(f"stopped at --max-steps {tc.max_steps}; continue with --resume")
            return {"interrupted": True, "out": str(out)}
    model.to(device)
    test = task.ctc_eval(model, sets["test"], tc.batch_size, cfg.beam, n_examples=5)
    result = {"wer": test["wer"], "cer": test["cer"], "loss": test["loss"],
              "n_test": len(sets["test"]), "data": info,
              "decoder": f"beam{cfg.beam}" if cfg.beam else "greedy", "smoke_data": cfg.data_dir is None, "examples": test["examples"],
              "model": spec, "rule": tc.rule, "train_seconds": secs,
              "peak_rss_mb": peak_rss_mb(), "wall_s": time.perf_counter() - t_start,
              "history": history, "checkpoint": str(ck_path) if cfg.eval_only else None,
              "config": {"recipe": asdict(cfg), "train": asdict(tc), "features": asdict(pre)}}
    if dist.is_main:
        if not cfg.eval_only:
            task.save_model(out / "model.pt", model, spec, pre, tc)
        write_json(result, out / "metrics.json")
        print(f"test: WER {test['wer']:.3f}, CER {test['cer']:.3f} ({len(sets['test'])} "
              f"utterances, {result['decoder']}) in {result['wall_s']:.0f} s; wrote {out}")
    return {**result, "out": str(out)}


if __name__ == "__main__":
    main_guard(main)
