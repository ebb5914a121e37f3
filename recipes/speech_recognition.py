"""Character CTC speech recognition (LibriSpeech layout) with a spiking Mamba.

Symbols: T frames (after stacking), B batch, F mel bands, C spike afferents, D model
width, V = 29 output classes (CTC blank, space, apostrophe, A-Z), S transcript length.

    python recipes/speech_recognition.py                       # smoke set (see Data)
    python recipes/speech_recognition.py --data-dir /data --train-url train-clean-100 \
        --val-url dev-clean --test-url test-clean --stack 3 --no-cache
    python recipes/speech_recognition.py --rule hybrid --beam 8
    python recipes/speech_recognition.py --eval-only --checkpoint runs/speech_recognition/model.pt
    torchrun --nproc_per_node=2 recipes/speech_recognition.py  # data parallel

Data: ``<data-dir>/LibriSpeech/<url>/<speaker>/<chapter>/<spk>-<chap>-<utt>.flac`` with
``<spk>-<chap>.trans.txt`` (:class:`bimsnn.data.audio.LibriSpeech`, soundfile I/O). With no
``--data-dir`` a *smoke* set in that layout is written to ``<out>/smoke_librispeech``
(FLAC, 16 kHz): transcripts of 2-4 words from a 20-word list, each character rendered as
a 70 ms two-tone chord (one pair of 8 mel-spaced tones per character; a space is 60 ms of
silence), speakers shift all tones by a few per cent. It checks that the pipeline runs
and learns; it is not speech, and its WER says nothing about LibriSpeech.

Pipeline: log-mel → per-utterance normalisation and spike code of
``recipes/keyword_spotting.py`` (thermometer levels [+ delta]) → ``--stack`` consecutive
frames concatenated (T/k steps) → SpikingMambaNet per-step logits (T, B, V) →
``torch.nn.CTCLoss`` (blank 0). Decoding: greedy best path, or prefix beam search
(``--beam N``). WER / CER are corpus-level edit-distance rates
(:mod:`bimsnn.metrics_text`, ``torchaudio.functional.edit_distance``).

Training goes through :func:`bimsnn.text.fit_seq` (``bimsnn.train.fit`` scores one label
per sequence): BPTT, or ``--rule`` online, where CTC's per-step error from a first pass
drives the rule step by step (:func:`bimsnn.text.online_seq_loss`). Outputs in
``--out-dir``: metrics.json (``wer``, ``cer``, examples), curves.png, model.pt, ckpt.pt, best.pt.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from bimsnn import _ddp
from bimsnn._ckpt import atomic_torch_save, load_checkpoint, write_json
from bimsnn._online import seq_logits
from bimsnn.data.audio import LibriSpeech, LogMel
from bimsnn.data.speech_features import SpikeCode, normalise
from bimsnn.metrics_text import ctc_beam_decode, ctc_greedy_decode, error_counts
from bimsnn.ssm.mamba import MambaConfig, SpikingMambaNet
from bimsnn.text import fit_seq
from bimsnn.train import TrainConfig, parse_config

TRAIN_DEFAULTS = TrainConfig(epochs=30, batch_size=8, lr=3e-3, grad_clip=1.0,
                             out_dir="runs/speech_recognition")
CHARS = " 'ABCDEFGHIJKLMNOPQRSTUVWXYZ"   # id = 1 + index; 0 is the CTC blank
BLANK = 0


def _f(default, help: str, choices: tuple | None = None):
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class ASRConfig:
    """Data, feature and model flags (training flags: :class:`TrainConfig`)."""

    data_dir: str | None = _f(None, "folder holding LibriSpeech/<url>/ (none: smoke set)")
    train_url: str = _f("train-clean-100", "training subset folder")
    val_url: str = _f("dev-clean", "validation subset folder (model selection)")
    test_url: str = _f("test-clean", "test subset folder")
    ext_audio: str = _f(".flac", "audio file extension")
    n_mels: int = _f(40, "F, mel bands")
    norm: str = _f("global", "per-utterance normalisation (speech_features.normalise)",
                   ("global", "cmn"))
    levels: int = _f(4, "thermometer levels per band")
    delta: float | None = _f(None, "ON/OFF spikes when a band moves by this (none: off)")
    stack: int = _f(2, "frames concatenated per model step")
    d_model: int = _f(96, "D")
    n_layers: int = _f(2, "SpikingMamba blocks")
    d_state: int = _f(16, "SSM state size N")
    readout_beta: float = _f(0.5, "per-step readout leak (0: no smoothing of logits)")
    beam: int = _f(0, "prefix beam width (0: greedy)")
    cache: bool = _f(True, "keep encoded utterances in memory (off for large subsets)")
    max_utts: int | None = _f(None, "cap per subset (quick runs)")
    smoke_utts: int = _f(160, "smoke set: training utterances (val/test get a quarter)")
    hybrid_grad: str = _f("autograd", "Hybrid's gradient part", ("rtrl", "autograd"))
    eval_only: bool = _f(False, "score --checkpoint on the test subset; no training")
    checkpoint: str | None = _f(None, "model.pt of this recipe (--eval-only)")
    threads: int = _f(0, "torch CPU threads (0: torch's default)")


# ---------------------------------------------------------------------------- text
def text_to_ids(text: str) -> list[int]:
    """Upper-cased transcript → ids; characters outside CHARS are dropped."""
    return [1 + CHARS.index(c) for c in text.upper() if c in CHARS]


def ids_to_text(ids: list[int]) -> str:
    return "".join(CHARS[i - 1] for i in ids if 0 < i <= len(CHARS))


# ---------------------------------------------------------------------------- smoke data
_WORDS = ("THE", "AND", "OF", "TO", "A", "IN", "HE", "IT", "WAS", "FOR", "ON", "IS", "WITH",
          "HIS", "AS", "AT", "BY", "BE", "NOT", "SHE")


_TONES = (400.0, 600.0, 900.0, 1300.0, 1800.0, 2500.0, 3400.0, 4600.0)  # Hz, ~mel-spaced
_PAIRS = [(i, j) for i in range(8) for j in range(i + 1, 8)]          # 28 ≥ 27 symbols


def _render(text: str, pitch: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Each character → 70 ms (±10 %) two-tone chord (its own pair of _TONES, scaled by the
    speaker's ``pitch``) under a Hann window; the dip between characters marks repeats."""
    segs = [np.zeros(int(0.08 * sr))]
    for c in text:
        if c == " ":
            segs.append(np.zeros(int(0.06 * sr)))
            continue
        n = int(sr * 0.07 * rng.uniform(0.9, 1.1))
        t = np.arange(n) / sr
        i, j = _PAIRS[CHARS.index(c) - 1]
        chord = sum(np.sin(2 * np.pi * pitch * _TONES[k] * t + rng.uniform(0, 2 * np.pi))
                    for k in (i, j))
        segs.append(chord * np.hanning(n))
    segs.append(np.zeros(int(0.08 * sr)))
    wave = np.concatenate(segs)
    wave = 0.5 * wave / np.abs(wave).max() + 0.002 * rng.standard_normal(len(wave))
    return wave.astype(np.float32)


def write_smoke_librispeech(root: str | Path, n_train: int = 160, seed: int = 0,
                            urls: tuple[str, str, str] = ("train-clean-100", "dev-clean",
                                                          "test-clean"),
                            sample_rate: int = 16000, ext: str = ".flac") -> Path:
    """Write the smoke set (module docstring) as ``root/LibriSpeech/<url>/...``; val and
    test get ``n_train // 4`` utterances each, from their own speakers. Returns root."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    for u, url in enumerate(urls):
        n = n_train if u == 0 else max(1, n_train // 4)
        for spk in range(2):
            speaker, chapter = 100 * (u + 1) + spk, 10 + spk
            folder = root / "LibriSpeech" / url / str(speaker) / str(chapter)
            folder.mkdir(parents=True, exist_ok=True)
            lines = []
            pitch = 0.94 + 0.04 * spk + 0.02 * u                      # speaker "voice"
            for k in range(spk, n, 2):
                text = " ".join(rng.choice(_WORDS, int(rng.integers(2, 5))))
                uid = f"{speaker}-{chapter}-{k:04d}"
                sf.write(folder / f"{uid}{ext}", _render(text, pitch * rng.uniform(0.98, 1.02),
                                                         sample_rate, rng), sample_rate)
                lines.append(f"{uid} {text}")
            (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return root


# ---------------------------------------------------------------------------- dataset
class UttSet(Dataset):
    """LibriSpeech items → ``(spikes (T/k, k·C) uint8, transcript, meta)``, memoised."""

    def __init__(self, base: LibriSpeech, code: SpikeCode, stack: int, cache: bool = True,
                 max_utts: int | None = None, norm: str = "global"):
        self.base, self.code, self.stack, self.cache, self.norm = base, code, stack, cache, norm
        self.n = min(len(base), max_utts) if max_utts else len(base)
        self._memo: dict[int, tuple] = {}

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if i in self._memo:
            return self._memo[i]
        logmel, text, meta = self.base[i]
        s = self.code(normalise(logmel, self.norm)).to(torch.uint8)  # (T, C)
        T = len(s) // self.stack * self.stack
        s = s[:T].reshape(T // self.stack, -1) if T else s[:1].repeat(1, self.stack)
        item = (s, text, {**meta, "text": text})
        if self.cache:
            self._memo[i] = item
        return item


def collate_ctc(batch: list[tuple]) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor], list]:
    """→ x (T_max, B, C) zero-padded at the end; target = (labels (B, S_max), input lengths
    (B,), label lengths (B,)); metas (with ``text``)."""
    xs, texts, metas = zip(*batch)
    x = torch.nn.utils.rnn.pad_sequence([s.float() for s in xs])      # (T_max, B, C)
    ids = [torch.tensor(text_to_ids(t), dtype=torch.long) for t in texts]
    labels = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True)  # (B, S_max), 0-padded
    return (x, (labels, torch.tensor([len(s) for s in xs]), torch.tensor([len(i) for i in ids])),
            list(metas))


def ctc_loss(logits: Tensor, target: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """Mean CTC loss per target character (``reduction="mean"``), logits (T, B, V)."""
    labels, in_lens, tgt_lens = target
    return F.ctc_loss(logits.log_softmax(-1), labels, in_lens, tgt_lens, blank=BLANK,
                      zero_infinity=True)


@torch.no_grad()
def ctc_eval(model, ds: Dataset, batch_size: int, beam: int = 0, n_examples: int = 0) -> dict:
    """Decode every item (all ranks; sharded) → loss, wer, cer (+ examples on request)."""
    info = _ddp.dist_info()
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    sums = np.zeros(6)      # Σ loss·items, items, word edits, words, char edits, chars
    examples = []
    idx = list(range(info.rank, len(ds), info.world_size))
    for k in range(0, len(idx), batch_size):
        x, target, metas = collate_ctc([ds[i] for i in idx[k:k + batch_size]])
        target = tuple(t.to(device) for t in target)
        logits = seq_logits(model, x.to(device))                     # (T, B, V)
        lp = logits.log_softmax(-1)
        hyp_ids = (ctc_beam_decode(lp, target[1], BLANK, beam) if beam
                   else ctc_greedy_decode(lp, target[1], BLANK))
        hyps = [ids_to_text(h) for h in hyp_ids]
        refs = [ids_to_text(text_to_ids(m["text"])) for m in metas]
        sums += [ctc_loss(logits, target).item() * len(refs), len(refs),
                 *error_counts(refs, hyps, "word"), *error_counts(refs, hyps, "char")]
        examples += list(zip(refs, hyps))[: max(0, n_examples - len(examples))]
    model.train(was)
    loss_n, n, we, wn, ce, cn = _ddp.allreduce_sum(sums.tolist(), device)
    return {"loss": loss_n / max(n, 1), "wer": we / max(wn, 1), "cer": ce / max(cn, 1),
            **({"examples": [{"ref": r, "hyp": h} for r, h in examples]} if n_examples else {})}


def build_model(spec: dict) -> SpikingMambaNet:
    return SpikingMambaNet(MambaConfig(**spec))


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    tc, cfg = parse_config(TRAIN_DEFAULTS, ASRConfig(), argv=argv, description=__doc__)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    info, device = _ddp.setup(tc.device)
    out = Path(tc.out_dir or "runs/speech_recognition")
    t0 = time.perf_counter()
    root = Path(cfg.data_dir) if cfg.data_dir else out / "smoke_librispeech"
    if cfg.data_dir is None and info.is_main:
        write_smoke_librispeech(root, cfg.smoke_utts, tc.seed,
                                (cfg.train_url, cfg.val_url, cfg.test_url), ext=cfg.ext_audio)
    _ddp.barrier()
    if cfg.eval_only:
        if not cfg.checkpoint:
            raise SystemExit("--eval-only needs --checkpoint PATH (a model.pt of this recipe)")
        ck = load_checkpoint(cfg.checkpoint)
        cfg = ASRConfig(**{**asdict(cfg), **ck["features"]})
    pipe = LogMel(16000, cfg.n_mels)
    code = SpikeCode(cfg.levels, cfg.delta)
    urls = {"test": cfg.test_url} if cfg.eval_only else {
        "train": cfg.train_url, "val": cfg.val_url, "test": cfg.test_url}
    sets = {k: UttSet(LibriSpeech(root, url, ext_audio=cfg.ext_audio, pipeline=pipe), code,
                      cfg.stack, cfg.cache, cfg.max_utts, cfg.norm) for k, url in urls.items()}
    n_in = code.n_channels(cfg.n_mels) * cfg.stack
    logging.info("LibriSpeech layout at %s: %s utterances, %d afferents", root,
                 {k: len(v) for k, v in sets.items()}, n_in)
    if cfg.eval_only:
        spec = ck["spec"]
        model = build_model(spec)
        model.load_state_dict(ck["model"])
        history = []
    else:
        spec = {"d_model": cfg.d_model, "n_inputs": n_in, "n_classes": 1 + len(CHARS),
                "n_layers": cfg.n_layers, "d_state": cfg.d_state, "readout": "li",
                "readout_beta": cfg.readout_beta}
        torch.manual_seed(tc.seed)
        model = build_model(spec)
        rule = None
        if tc.rule == "hybrid":
            from bimsnn.rules import Hybrid

            def rule(m):
                return Hybrid(m, lam=tc.lam, grad=cfg.hybrid_grad, balance=tc.balance)
        history = fit_seq(model, sets["train"], tc, loss_fn=ctc_loss, collate_fn=collate_ctc,
                          validate=lambda m: ctc_eval(m, sets["val"], tc.batch_size),
                          monitor="cer", rule=rule)
    model.to(device)
    test = ctc_eval(model, sets["test"], tc.batch_size, cfg.beam, n_examples=5)
    result = {"wer": test["wer"], "cer": test["cer"], "loss": test["loss"],
              "n_test": len(sets["test"]), "decoder": f"beam{cfg.beam}" if cfg.beam else
              "greedy", "smoke_data": cfg.data_dir is None, "examples": test["examples"],
              "rule": tc.rule, "wall_s": time.perf_counter() - t0, "history": history,
              "config": {"train": asdict(tc), "asr": asdict(cfg)}}
    if info.is_main:
        if not cfg.eval_only:
            feats = {k: getattr(cfg, k) for k in ("n_mels", "norm", "levels", "delta", "stack")}
            atomic_torch_save({"format": 1, "model": {k: v.cpu() for k, v in
                                                      model.state_dict().items()},
                               "spec": spec, "features": feats}, out / "model.pt")
        write_json(result, out / "metrics.json")
        logging.info("test: WER %.3f, CER %.3f (%d utterances, %s) in %.0f s", test["wer"],
                     test["cer"], len(sets["test"]), result["decoder"], result["wall_s"])
    return result


if __name__ == "__main__":
    main()
