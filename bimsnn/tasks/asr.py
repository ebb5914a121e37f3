"""CTC speech recognition (character or word units): utterances → spikes → CTC → WER/CER.

Symbols: T frames (after stacking k of them: T/k model steps), B batch, F mel bands, C
spike afferents per frame, V output classes: 29 for characters (CTC blank 0, space,
apostrophe, A-Z) or 11 for the digit words (blank, ZERO-NINE; :class:`Units`),
S transcript length.

One preprocessing spec (:class:`ASRPre`, stored in ``model.pt``): log-mel → per-utterance
normalisation → thermometer spikes (:class:`~bimsnn.encoding.SpikeCode`) → ``stack``
consecutive frames concatenated (:class:`UttSet`) → ``spiking_mamba`` per-step logits
(T/k, B, V) → ``torch.nn.functional.ctc_loss`` (:func:`ctc_loss`). Decoding
(:func:`ctc_eval`): greedy best path or prefix beam search (:mod:`bimsnn.metrics`); WER /
CER are corpus-level edit-distance rates. :class:`LSTMCTC` is the non-spiking baseline.

Data (:func:`open_sets`): the LibriSpeech layout, or connected digits composed from an
FSDD folder (:class:`~bimsnn.data.FSDDStrings`, 8 kHz; ``--eval-only`` scores each file
as a one-digit utterance).

Training (:func:`train_asr`) starts the output bias at the log CTC frame prior
(:func:`ctc_prior_bias_`). With a zero bias the first CTC gradients drove every hidden path
towards "blank everywhere": after one epoch on the smoke set half of the last block's
neurons were silent and a fifth fired at > 90 % of steps, and the CER stayed at ~0.8
(2 blocks of 96 or 1 of 192 alike). With the prior bias no neuron saturates; one block
of 192 then learns the smoke set (two blocks of 96 still stall for ~15 epochs).

Smoke data (:func:`write_smoke_librispeech`): transcripts of 2-4 words from a 20-word list,
each character, the space included, rendered as a 70 ms two-tone chord; speakers shift all
tones by a few per cent. (A space used to be 60 ms of silence: ambiguous for a causal model,
which cannot tell a pause between words from the end of the utterance until the next word
starts: 90 % of a trained model's character errors were spaces, dropped or trailing.)
It checks that the pipeline runs and learns; it is not speech, and its WER says nothing
about LibriSpeech.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from bimsnn import models
from bimsnn.data import FSDDStrings, LibriSpeech, LogMel
from bimsnn.data.errors import DataError
from bimsnn.data.fsdd_strings import DIGIT_WORDS, fsdd_files
from bimsnn.data.speech_features import normalise
from bimsnn.encoding import SpikeCode
from bimsnn.metrics import ctc_beam_decode, ctc_greedy_decode, error_counts
from bimsnn.models.baselines import LSTMCTC
from bimsnn.tasks.common import SPIKING
from bimsnn.training import CheckpointError, TrainConfig, distributed, fit
from bimsnn.training.online import seq_logits

RECIPE = "speech_recognition"
CHARS = " 'ABCDEFGHIJKLMNOPQRSTUVWXYZ"   # id = 1 + index; 0 is the CTC blank
BLANK = 0
UNITS = ("auto", "char", "word")


@dataclass(frozen=True)
class Units:
    """The CTC output units: characters (:data:`CHARS`) or the words of a closed vocabulary.

    Symbol ``k`` has label id ``k + 1`` (0 is the CTC blank), so V = ``n_classes`` =
    1 + len(symbols). Word units spell a transcript as one label per word: on connected
    digits the model then emits one label per digit instead of 3-5 letters, each of
    which had to be right for the word to be (``benchmarks/RESULTS.md``, issue 13).
    """

    kind: str = "char"                       # char | word
    symbols: tuple[str, ...] = tuple(CHARS)

    @property
    def n_classes(self) -> int:
        return 1 + len(self.symbols)

    def encode(self, text: str) -> list[int]:
        """Upper-cased transcript → label ids. Characters outside the alphabet are dropped;
        a word outside a word vocabulary is a ValueError naming it."""
        if self.kind == "char":
            return [1 + self.symbols.index(c) for c in text.upper() if c in self.symbols]
        ids = []
        for w in text.upper().split():
            if w not in self.symbols:
                raise ValueError(f"word {w!r} is not in the model's vocabulary "
                                 f"{' '.join(self.symbols)}")
            ids.append(1 + self.symbols.index(w))
        return ids

    def decode(self, ids) -> str:
        """Label ids → text (words joined by single spaces); the blank and unknown ids are
        dropped."""
        toks = [self.symbols[i - 1] for i in ids if 0 < i <= len(self.symbols)]
        return ("" if self.kind == "char" else " ").join(toks)


CHAR_UNITS = Units()
DIGIT_UNITS = Units("word", tuple(w.upper() for w in DIGIT_WORDS))


def default_units(dataset: str) -> str:
    """``--units auto``: words on connected digits (a closed 10-word vocabulary), else
    characters."""
    return "word" if dataset == "fsdd_strings" else "char"


@dataclass
class ASRPre:
    """How an utterance becomes model input (kept in model.pt as a dict)."""

    dataset: str = "librispeech"  # librispeech | fsdd_strings (what it was trained on)
    sample_rate: int = 16000      # 16 kHz LibriSpeech, 8 kHz FSDD
    n_mels: int = 40              # F
    norm: str = "global"          # per utterance: global | cmn
    levels: int = 4               # thermometer levels per band
    delta: float | None = None    # ON/OFF spikes when a band moves by this
    stack: int = 2                # k frames per model step
    units: str = "char"           # CTC labels: char | word (fsdd_strings: the digit words)

    @property
    def vocab(self) -> Units:
        """The output units (:class:`Units`); word units are the ten digit words."""
        if self.units == "word":
            return DIGIT_UNITS
        if self.units != "char":
            raise ValueError(f"units must be 'char' or 'word', got {self.units!r}")
        return CHAR_UNITS

    @property
    def code(self) -> SpikeCode:
        return SpikeCode(self.levels, self.delta)

    @property
    def n_inputs(self) -> int:
        """k·C afferents per model step."""
        return self.code.n_channels(self.n_mels) * self.stack


def pre_from_checkpoint(ck: dict, path) -> ASRPre:
    """The :class:`ASRPre` of a speech_recognition model.pt (format 2, or format 1's
    ``features``); another recipe's model.pt is a CheckpointError naming the file."""
    pre, recipe = ck.get("preprocessing"), ck.get("recipe")
    need = ("n_mels", "norm", "levels", "stack")
    if recipe not in (None, RECIPE) or not (isinstance(pre, dict) and all(k in pre for k in need)):
        what = recipe or "no speech-recognition features in it"
        raise CheckpointError(path, f"another recipe's model.pt ({what}); pass a "
                              "speech_recognition model.pt")
    return ASRPre(**{k: v for k, v in pre.items() if k in ASRPre.__dataclass_fields__})


def save_model(path: Path, model: nn.Module, spec: dict, pre: ASRPre, tc: TrainConfig) -> Path:
    """Write ``model.pt`` (:func:`bimsnn.models.save`) with the features and alphabet."""
    return models.save(path, model, spec, preprocessing=asdict(pre), recipe=RECIPE,
                       chars=CHARS, symbols=list(pre.vocab.symbols), rule=tc.rule,
                       train_config=asdict(tc))


def asr_spec(n_inputs: int, *, model: str = "mamba", d_model: int = 96, n_layers: int = 2,
             d_state: int = 16, readout_beta: float = 0.5, beta: float = 0.9,
             n_classes: int = CHAR_UNITS.n_classes) -> dict:
    """V = ``n_classes`` per-step outputs (:attr:`Units.n_classes`). ``model="mamba"``: ``spiking_mamba`` (LIF decay
    ``beta`` per model step) with readout "li" (the integrator's membrane at each step, leak
    ``readout_beta``; 0: no smoothing);
    ``"lstm"``: :class:`LSTMCTC` (``d_model`` hidden units, ``n_layers`` layers), the
    non-spiking baseline."""
    if model == "lstm":
        return models.spec("lstm_ctc", n_inputs=n_inputs, n_classes=n_classes,
                           hidden=d_model, num_layers=n_layers)
    if model != "mamba":
        raise ValueError(f"model must be 'mamba' or 'lstm', got {model!r}")
    return models.spec("spiking_mamba", d_model=d_model, n_inputs=n_inputs,
                       n_classes=n_classes, n_layers=n_layers, d_state=d_state,
                       beta=beta, readout="li", readout_beta=readout_beta)


def output_layer(model: nn.Module) -> tuple[nn.Linear, float]:
    """(the Linear that produces the logits, its steady-state gain): a spiking Mamba's
    ``out_fc`` feeds a leaky integrator, which multiplies a constant input by 1/(1 - β)."""
    if isinstance(model, LSTMCTC):
        return model.head, 1.0
    return model.out_fc, 1.0 / (1.0 - model.cfg.readout_beta)


@torch.no_grad()
def ctc_prior_bias_(model: nn.Module, train: Dataset, floor: float = 1e-4) -> Tensor:
    """Start the output bias at the log frame prior of the CTC labels (in place; the CTC
    analogue of :func:`bimsnn.tasks.lm.unigram_bias_`). Returns the bias (V,).

    The blank's prior is the share of model steps that carry no character,
    ``1 - Σ label lengths / Σ steps`` over ``train``; each character shares the rest in
    proportion to its count in the transcripts (``floor`` for characters never seen). The
    bias is divided by the readout's steady-state gain, so the logits at rest are these
    log priors. With a zero bias the first CTC gradients pushed every hidden path towards
    "blank everywhere": the last spiking layers split into always-on and silent neurons
    and the loss stalled at the prior's level (smoke set, see the module docstring).
    """
    vocab = getattr(train, "vocab", CHAR_UNITS)
    counts = torch.zeros(vocab.n_classes)
    steps = 0
    for i in range(len(train)):
        x, text, _ = train[i]
        counts += torch.bincount(torch.tensor(vocab.encode(text), dtype=torch.long),
                                 minlength=len(counts)).float()
        steps += len(x)
    chars = counts.sum().item()
    p_blank = min(max(1.0 - chars / max(steps, 1), floor), 1.0 - floor)
    prior = (1.0 - p_blank) * counts / max(chars, 1.0)
    prior[BLANK] = p_blank
    fc, gain = output_layer(model)
    bias = prior.clamp_min(floor).log() / gain
    fc.bias.copy_(bias.to(fc.bias))
    return bias


# ---------------------------------------------------------------------------- text
def text_to_ids(text: str) -> list[int]:
    """Upper-cased transcript → ids; characters outside CHARS are dropped.

    >>> text_to_ids("He's 2!"), ids_to_text(text_to_ids("He's 2!"))
    ([10, 7, 2, 21, 1], "HE'S ")
    """
    return CHAR_UNITS.encode(text)


def ids_to_text(ids: list[int]) -> str:
    """Label ids (1..len(CHARS); 0 is the CTC blank) to text; other ids are dropped."""
    return CHAR_UNITS.decode(ids)


# ---------------------------------------------------------------------------- smoke data
_WORDS = ("THE", "AND", "OF", "TO", "A", "IN", "HE", "IT", "WAS", "FOR", "ON", "IS", "WITH",
          "HIS", "AS", "AT", "BY", "BE", "NOT", "SHE")
_TONES = (400.0, 600.0, 900.0, 1300.0, 1800.0, 2500.0, 3400.0, 4600.0)  # Hz, ~mel-spaced
_PAIRS = [(i, j) for i in range(8) for j in range(i + 1, 8)]          # 28 ≥ 27 symbols


def _render(text: str, pitch: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """(N,) float32: each character, the space included, a 70 ms (±10 %) two-tone chord (its
    own pair of _TONES, scaled by the speaker's ``pitch``) under a Hann window, between 80 ms
    of silence; the dip between characters marks repeats."""
    segs = [np.zeros(int(0.08 * sr))]
    for c in text:
        n = int(sr * 0.07 * rng.uniform(0.9, 1.1))
        t = np.arange(n) / sr
        i, j = _PAIRS[CHARS.index(c) - 1]               # the space: the last pair
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
    """Utterances → ``(spikes (T/k, k·C) uint8, transcript, meta)``, memoised.

    Args:
        base: a :class:`~bimsnn.data.LibriSpeech` or :class:`~bimsnn.data.FSDDStrings`
            whose items are ((T, F) log-mel, transcript, meta).
        code: thermometer spike code. stack: k. cache: keep encoded items in memory.
        max_utts: use only the first ones. norm: :func:`~bimsnn.data.speech_features.normalise`.
        vocab: the CTC output units its transcripts are labelled in (:class:`Units`).
    """

    def __init__(self, base: Dataset, code: SpikeCode, stack: int, cache: bool = True,
                 max_utts: int | None = None, norm: str = "global", vocab: Units = CHAR_UNITS):
        self.base, self.code, self.stack, self.cache, self.norm = base, code, stack, cache, norm
        self.vocab = vocab
        self.n = min(len(base), max_utts) if max_utts else len(base)
        self._memo: dict[int, tuple] = {}

    @classmethod
    def open(cls, root: str | Path, url: str, pre: ASRPre, *, ext_audio: str = ".flac",
             cache: bool = True, max_utts: int | None = None, strict: bool = False) -> UttSet:
        """The ``url`` subset of the LibriSpeech layout under ``root``, coded as ``pre`` says."""
        base = LibriSpeech(root, url, ext_audio=ext_audio, strict=strict,
                           pipeline=LogMel(pre.sample_rate, pre.n_mels))
        return cls(base, pre.code, pre.stack, cache, max_utts, pre.norm, pre.vocab)

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


# ---------------------------------------------------------------------------- data sets
DATASETS = ("auto", "librispeech", "fsdd_strings")

# The recipe's per-dataset defaults (flags given override them): ASRConfig fields under
# "recipe", TrainConfig fields under "train". Connected digits: 4 frames (40 ms) per model
# step and a faster LIF leak (β = 0.5 per step) suit word-length units; 15 epochs of BPTT
# reach held-out-takes WER 0.05 (benchmarks/RESULTS.md, issue 13).
DATASET_DEFAULTS: dict[str, dict[str, dict]] = {
    "fsdd_strings": {"recipe": {"stack": 4, "beta": 0.5}, "train": {"epochs": 15}},
}


def dataset_defaults(dataset: str, data_dir: str | Path | None = None) -> dict[str, dict]:
    """``{"recipe": {...}, "train": {...}}`` for ``--dataset`` (``"auto"``: as
    :func:`detect_dataset` finds ``data_dir``); empty dicts for the smoke set/LibriSpeech."""
    if dataset == "auto":
        dataset = detect_dataset(data_dir)
    d = DATASET_DEFAULTS.get(dataset, {})
    return {"recipe": dict(d.get("recipe", {})), "train": dict(d.get("train", {}))}


def detect_dataset(data_dir: str | Path | None) -> str:
    """``"fsdd_strings"`` when ``data_dir`` holds FSDD WAVs (itself or ``recordings/``) and
    no ``LibriSpeech/`` folder, else ``"librispeech"`` (also with no ``data_dir``)."""
    if data_dir is None or (Path(data_dir) / "LibriSpeech").is_dir():
        return "librispeech"
    try:
        fsdd_files(data_dir)
    except DataError:
        return "librispeech"
    return "fsdd_strings"


def open_sets(pre: ASRPre, root: str | Path, *, eval_only: bool = False,
              urls: dict[str, str] | None = None, ext_audio: str = ".flac",
              split: str = "takes", test_speakers: list[str] | None = None,
              n_utts: int = 1000, seed: int = 0, cache: bool = True,
              max_utts: int | None = None, strict: bool = False) -> tuple[dict, dict]:
    """({"train", "val", "test": UttSet}, description) for ``pre.dataset``.

    LibriSpeech: the ``urls`` subsets ({split: folder}) under ``root``. FSDD digit strings
    (:class:`~bimsnn.data.FSDDStrings` over the FSDD folder ``root``): ``split`` "takes" or
    "speaker" (its ``by``), ``n_utts`` training utterances and a quarter of that for val and
    test, drawn with ``seed``. ``eval_only``: "test" only, which for FSDD is every file of
    ``root`` as a single-digit utterance.
    """
    if pre.dataset == "librispeech":
        urls = {"test": urls["test"]} if eval_only else urls
        sets = {k: UttSet.open(root, url, pre, ext_audio=ext_audio, cache=cache,
                               max_utts=max_utts, strict=strict) for k, url in urls.items()}
        return sets, {"dataset": "librispeech", "root": str(root), "urls": urls}
    if pre.dataset != "fsdd_strings":
        raise ValueError(f"dataset must be one of {DATASETS[1:]}, got {pre.dataset!r}")
    mel = LogMel(pre.sample_rate, pre.n_mels)
    kw = dict(by="takes" if split == "takes" else "speaker", test_speakers=test_speakers,
              seed=seed, sample_rate=pre.sample_rate, pipeline=mel)
    if eval_only:
        bases = {"test": FSDDStrings(root, per_file=True, **kw)}
    else:
        bases = {k: FSDDStrings(root, n_utts if k == "train" else max(1, n_utts // 4),
                                split=k, **kw) for k in ("train", "val", "test")}
    sets = {k: UttSet(b, pre.code, pre.stack, cache, max_utts, pre.norm, pre.vocab)
            for k, b in bases.items()}
    test_spk = sorted({f[2] for f in bases["test"].files})
    return sets, {"dataset": "fsdd_strings", "root": str(root),
                  "split": "every file" if eval_only else split,
                  "test_speakers": test_spk if eval_only or split == "speaker" else None}


def collate_ctc(batch: list[tuple], vocab: Units = CHAR_UNITS
                ) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor], list]:
    """→ x (T_max, B, C) zero-padded at the end; target = (labels (B, S_max) in ``vocab``,
    input lengths (B,), label lengths (B,)); metas (with ``text``)."""
    xs, texts, metas = zip(*batch)
    x = torch.nn.utils.rnn.pad_sequence([s.float() for s in xs])      # (T_max, B, C)
    ids = [torch.tensor(vocab.encode(t), dtype=torch.long) for t in texts]
    labels = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True)  # (B, S_max), 0-padded
    return (x, (labels, torch.tensor([len(s) for s in xs]), torch.tensor([len(i) for i in ids])),
            list(metas))


def ctc_loss(logits: Tensor, target: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """Mean CTC loss per target character (``reduction="mean"``) of logits (T, B, V)."""
    labels, in_lens, tgt_lens = target
    return F.ctc_loss(logits.log_softmax(-1), labels, in_lens, tgt_lens, blank=BLANK,
                      zero_infinity=True)


def train_asr(spec: dict, train: Dataset, val: Dataset, tc: TrainConfig, *,
              prior_bias: bool = True) -> tuple[nn.Module, list[dict], float]:
    """Seed, build, [:func:`ctc_prior_bias_`], :func:`bimsnn.training.fit` with per-step
    CTC, the validation CER picking the best epoch. A model without ``step`` (the LSTM) is
    trained with BPTT whatever ``tc.rule``. Returns (model, history, training seconds)."""
    if spec["name"] not in SPIKING and tc.rule != "bptt":
        print(f"{spec['name']} has no step(): trained with BPTT, not {tc.rule}")
        tc = replace(tc, rule="bptt")
    torch.manual_seed(tc.seed)
    model = models.build(spec)
    if prior_bias:
        ctc_prior_bias_(model, train)
    t0 = time.perf_counter()
    history = fit(model, train, None, tc, loss_fn=ctc_loss, per_step=True,
                  collate_fn=partial(collate_ctc, vocab=getattr(train, "vocab", CHAR_UNITS)), monitor="cer", higher_is_better=False,
                  validate=lambda m: ctc_eval(m, val, tc.batch_size))
    return model, history, time.perf_counter() - t0


@torch.no_grad()
def ctc_eval(model: nn.Module, ds: Dataset, batch_size: int, beam: int = 0,
             n_examples: int = 0) -> dict:
    """Decode every item of ``ds`` (sharded over ranks, sums reduced) → loss (mean per
    utterance of :func:`ctc_loss`), wer, cer, and the first ``n_examples`` (ref, hyp).

    Hypotheses are whitespace-normalised before scoring (edge spaces stripped, runs of
    spaces collapsed), as the references are: a causal model cannot tell the pause after the
    last word from a pause between words until the next word starts, so a trailing space is
    not a recognition error."""
    info = distributed.dist_info()
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    sums = np.zeros(6)      # Σ loss·items, items, word edits, words, char edits, chars
    examples = []
    vocab = getattr(ds, "vocab", CHAR_UNITS)
    idx = list(range(info.rank, len(ds), info.world_size))
    for k in range(0, len(idx), batch_size):
        x, target, metas = collate_ctc([ds[i] for i in idx[k:k + batch_size]], vocab)
        target = tuple(t.to(device) for t in target)
        logits = seq_logits(model, x.to(device))                     # (T, B, V)
        lp = logits.log_softmax(-1)
        hyp_ids = (ctc_beam_decode(lp, target[1], BLANK, beam) if beam
                   else ctc_greedy_decode(lp, target[1], BLANK))
        hyps = [" ".join(vocab.decode(h).split()) for h in hyp_ids]  # as refs: no edge spaces
        refs = [vocab.decode(vocab.encode(m["text"])) for m in metas]
        sums += [ctc_loss(logits, target).item() * len(refs), len(refs),
                 *error_counts(refs, hyps, "word"), *error_counts(refs, hyps, "char")]
        examples += list(zip(refs, hyps))[: max(0, n_examples - len(examples))]
    model.train(was)
    loss_n, n, we, wn, ce, cn = distributed.allreduce_sum(sums.tolist(), device)
    return {"loss": loss_n / max(n, 1), "wer": we / max(wn, 1), "cer": ce / max(cn, 1),
            **({"examples": [{"ref": r, "hyp": h} for r, h in examples]} if n_examples else {})}
