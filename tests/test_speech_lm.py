"""Speech and language pipelines (bimsnn.tasks.asr / lm): CTC decoding, WER/CER, BPC, text
data, the per-step training path (fit(per_step=True), SequenceTarget), model specs.

The recipes themselves are tested in tests/test_recipe_speech.py.
Symbols: T time, B batch, V classes/vocabulary, C afferents.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from bimsnn import models
from bimsnn.data import DataError, LibriSpeech, LMWindows, LogMel, Vocab, collate_lm
from bimsnn.data.text import read_wikitext, tokenize, write_embedded_corpus
from bimsnn.encoding import SpikeCode
from bimsnn.metrics import (
    bits_per_char,
    cer,
    ctc_beam_decode,
    ctc_collapse,
    ctc_greedy_decode,
    perplexity,
    wer,
)
from bimsnn.models import SpikingMambaLM
from bimsnn.ssm.mamba import MambaConfig, SpikingMambaNet
from bimsnn.state import detach_tree
from bimsnn.tasks import asr, lm, speech
from bimsnn.training import SequenceTarget, TrainConfig, fit, online_pass


# ---------------------------------------------------------------------------- CTC decoding
def _one_hot_logp(path: list[int], V: int) -> torch.Tensor:
    """(T, 1, V) log-probs whose best path is ``path`` (0.9 on it, rest shared)."""
    p = torch.full((len(path), 1, V), 0.1 / (V - 1))
    p[torch.arange(len(path)), 0, torch.tensor(path)] = 0.9
    return p.log()


def test_ctc_collapse_and_greedy_by_hand():
    assert ctc_collapse([1, 1, 0, 1, 2, 2, 0, 0, 3]) == [1, 1, 2, 3]
    assert ctc_collapse([0, 0, 0]) == []
    lp = torch.cat([_one_hot_logp([0, 3, 3, 0, 3, 5, 5, 0], 6),
                    _one_hot_logp([2, 0, 2, 2, 4, 4, 0, 1], 6)], dim=1)   # (8, 2, 6)
    assert ctc_greedy_decode(lp) == [[3, 3, 5], [2, 2, 4, 1]]
    # lengths cut each item: item 0 after 3 steps, item 1 after 5
    assert ctc_greedy_decode(lp, torch.tensor([3, 5])) == [[3], [2, 2, 4]]


def test_ctc_beam_sums_paths_that_greedy_misses():
    # T=2, V=2: p(blank)=0.6 per step. Greedy path (blank, blank) → "" with p 0.36, but
    # "a" collects (a,a) + (a,-) + (-,a) = 0.16 + 0.24 + 0.24 = 0.64: beam must pick "a".
    lp = torch.tensor([[[0.6, 0.4]], [[0.6, 0.4]]]).log()
    assert ctc_greedy_decode(lp) == [[]]
    assert ctc_beam_decode(lp, beam=4) == [[1]]


def test_ctc_beam_agrees_with_greedy_on_peaked_outputs():
    torch.manual_seed(0)
    paths = torch.randint(0, 5, (12, 3))
    lp = torch.cat([_one_hot_logp(paths[:, b].tolist(), 5) for b in range(3)], dim=1)
    assert ctc_beam_decode(lp, beam=4) == ctc_greedy_decode(lp)


# ---------------------------------------------------------------------------- error rates
def test_wer_cer_hand_computed():
    # "sat" → "sit" (1 substitution), "the" before "mat" deleted: 2 edits / 6 words
    assert wer(["the cat sat on the mat"], ["the cat sit on mat"]) == pytest.approx(2 / 6)
    # kitten → sitting: k→s, e→i, +g = 3 edits / 6 characters
    assert cer(["kitten"], ["sitting"]) == pytest.approx(0.5)
    # corpus level: (0 + 1) word edits / (2 + 1) words, not the mean of per-item rates
    assert wer(["a b", "c"], ["a b", "d"]) == pytest.approx(1 / 3)
    assert cer(["ab"], [""]) == 1.0 and wer(["x"], ["x y z"]) == 2.0  # insertions count
    with pytest.raises(ValueError):
        wer(["a"], [])


# ---------------------------------------------------------------------------- entropy
@pytest.mark.parametrize("V", [2, 27, 104])
def test_bpc_of_uniform_predictions_is_log2_V(V):
    torch.manual_seed(V)
    y = torch.randint(0, V, (500,))
    nll = F.cross_entropy(torch.zeros(500, V), y, reduction="sum").item()
    assert bits_per_char(nll, 500) == pytest.approx(math.log2(V), rel=1e-6)
    assert perplexity(nll, 500) == pytest.approx(V, rel=1e-5)


def test_lm_eval_on_a_known_categorical():
    """A model that predicts p = (½, ¼, ¼) on a stream with exactly those frequencies
    scores its entropy, 1.5 bits per character, and perplexity 2^1.5."""
    p = torch.tensor([0.5, 0.25, 0.25])

    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward_seq(self, ids):
            return (p.log() + 0 * self.w).expand(*ids.shape, 3)

    g = torch.Generator().manual_seed(0)
    stream = torch.tensor([0, 0, 1, 2] * 64)[torch.randperm(256, generator=g)]
    stream = torch.cat([stream, stream[:1]])                 # 257 tokens → 256 targets
    ds = LMWindows(stream, 16)
    res = lm.lm_eval(Fixed(), ds, 4, torch.ones(3))
    # targets are stream[1:], whose counts differ from 2:1:1 by the first token only
    counts = torch.bincount(stream[1:], minlength=3).double()
    expect = -(counts * p.double().log2()).sum().item() / 256
    assert res["tokens"] == 256
    assert res["bpc"] == pytest.approx(expect, rel=1e-6)
    assert abs(res["bpc"] - 1.5) < 0.01
    assert res["ppl"] == pytest.approx(2 ** expect, rel=1e-5)


# ---------------------------------------------------------------------------- text data
def test_vocab_tokenize_windows_roundtrip():
    v = Vocab.build(tokenize(" = T = \n a b a \n", "word"), min_count=2)
    assert v.itos == ["<unk>", "=", "<eos>", "a"]
    assert v.decode(v.encode(["a", "zzz"]), " ") == "a <unk>"
    assert Vocab.from_state_dict(v.state_dict()).itos == v.itos
    c = Vocab.build("hello")
    assert c.decode(c.encode("hole")) == "hole" and len(c) == 5
    ds = LMWindows(torch.arange(20), 6)
    x, y, _ = collate_lm([ds[0], ds[2]])
    assert len(ds) == 3 and x.shape == (6, 2)
    assert torch.equal(y[:-1], x[1:]) and x[0].tolist() == [0, 12]
    with pytest.raises(ValueError):
        tokenize("a", "byte")


def test_embedded_corpus_layout(tmp_path):
    paths = write_embedded_corpus(tmp_path)
    assert sorted(p.name for p in paths.values()) == ["wiki.test.tokens", "wiki.train.tokens",
                                                      "wiki.valid.tokens"]
    texts = read_wikitext(tmp_path)
    sizes = {k: len(v) for k, v in texts.items()}
    assert sizes["train"] > 10 * sizes["valid"] > 0 and sizes["test"] > 10_000
    assert texts["train"].startswith(" = ") and not set(texts["valid"].splitlines()) & {""}
    assert write_embedded_corpus(tmp_path) == paths                 # idempotent
    (tmp_path / "wiki.test.tokens").unlink()
    with pytest.raises(DataError, match="wiki"):
        read_wikitext(tmp_path)


# ---------------------------------------------------------------------------- per-step training
def _tiny_lm(seed: int = 0, dtype: torch.dtype = torch.float64) -> SpikingMambaLM:
    torch.manual_seed(seed)
    return SpikingMambaLM(7, 4, d_model=8, n_layers=1, d_state=4).to(dtype)


def test_sequence_target_equals_per_step_losses():
    """online_pass with a SequenceTarget (the surrogate ⟨g_t, logits_t⟩, g from a first
    no-grad pass) gives the rule the same gradients as feeding it each step's own LM loss,
    and returns the sequence loss of the forward pass. float64; tolerance 1e-10."""
    from bimsnn.rules import RTRL

    torch.manual_seed(1)
    x, y = torch.randint(0, 7, (10, 3)), torch.randint(0, 7, (10, 3))
    grads, losses = [], []
    for mode in ("sequence_target", "per_step"):
        model = _tiny_lm(0)
        rule = RTRL(model)
        if mode == "sequence_target":
            losses.append(online_pass(model, rule, x, SequenceTarget(y, lm.lm_loss)))
        else:
            rule.reset(3)
            state, total = model.init_state(3), 0.0
            for t in range(10):
                logits_t, state = model.step(x[t], state)
                state = detach_tree(state)
                loss_t = F.cross_entropy(logits_t, y[t]) / 10
                rule.backward(loss_t)
                total += loss_t.item()
            losses.append(total)
        rule.remove()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert sum(g.abs().sum() for g in grads[0]) > 0
    with torch.no_grad():
        forward = lm.lm_loss(_tiny_lm(0).forward_seq(x)[0], y).item()
    assert losses[0].item() == pytest.approx(forward, rel=1e-12)
    assert losses[1] == pytest.approx(forward, rel=1e-10)


def test_fit_per_step_resume_matches_uninterrupted(tmp_path):
    torch.manual_seed(0)
    ds = LMWindows(torch.randint(0, 7, (200,)), 8)                # 24 windows, 3 batches

    def run(out, **kw):
        model = _tiny_lm(0, torch.float32)
        cfg = TrainConfig(epochs=2, batch_size=8, out_dir=str(out), progress=False,
                          plots=False, **kw)
        fit(model, ds, None, cfg, loss_fn=lm.lm_loss, per_step=True, collate_fn=collate_lm)
        return model
    full = run(tmp_path / "a")
    run(tmp_path / "b", max_steps=4)                                # stops mid-epoch 2
    resumed = run(tmp_path / "b", resume=True)
    for p, q in zip(full.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    hist = json.loads((tmp_path / "b" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in hist] == [1, 2]


# ---------------------------------------------------------------------------- model specs
class _OldSpikingMambaLM(torch.nn.Module):
    """recipes/language_modeling.SpikingMambaLM before issue 11 (frozen copy)."""

    def __init__(self, vocab_size: int, d_embed: int, **mamba):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab_size, d_embed)
        self.net = SpikingMambaNet(MambaConfig(n_inputs=d_embed, n_classes=vocab_size,
                                               readout_beta=0.0, **mamba))


class _OldLSTMLM(torch.nn.Module):
    """recipes/language_modeling.LSTMLM before issue 11 (frozen copy)."""

    def __init__(self, vocab_size: int, d_embed: int, hidden: int, num_layers: int):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab_size, d_embed)
        self.lstm = torch.nn.LSTM(d_embed, hidden, num_layers=num_layers)
        self.head = torch.nn.Linear(hidden, vocab_size)


_OLD_BUILDERS = {  # the three recipes' default models as their own builders made them
    "kws": (lambda: SpikingMambaNet(MambaConfig(d_model=64, n_inputs=160, n_classes=10,
                                                n_layers=1, d_state=16, readout="mean_mem")),
            lambda: speech.kws_spec(160, 10)),
    "kws_online": (lambda: SpikingMambaNet(MambaConfig(d_model=64, n_inputs=160, n_classes=10,
                                                       n_layers=1, d_state=16, readout="li")),
                   lambda: speech.kws_spec(160, 10, rule="hybrid")),
    "asr": (lambda: SpikingMambaNet(MambaConfig(d_model=96, n_inputs=320, n_classes=29,
                                                n_layers=2, d_state=16, readout="li",
                                                readout_beta=0.5)),
            lambda: asr.asr_spec(320)),
    "lm": (lambda: _OldSpikingMambaLM(104, 32, d_model=96, n_layers=1, d_state=16, beta=0.9),
           lambda: lm.lm_spec("mamba", 104, beta=0.9)),
    "lm_lstm": (lambda: _OldLSTMLM(104, 32, 96, 1), lambda: lm.lm_spec("lstm", 104)),
}


@pytest.mark.parametrize("which", sorted(_OLD_BUILDERS))
def test_task_specs_build_the_old_recipe_models_but_for_the_readout_bias(which):
    """Same seed → same tensors and RNG stream as the old recipe builders; the one
    difference is the zeroed readout bias of the spiking models (issue 11: one init),
    and with zero_readout_bias=False there is none."""
    old_fn, new_spec = _OLD_BUILDERS[which]
    torch.manual_seed(3)
    old = old_fn().state_dict()
    rng = torch.get_rng_state()
    spec = new_spec()
    torch.manual_seed(3)
    new = models.build(spec).state_dict()
    assert torch.equal(rng, torch.get_rng_state())
    assert list(old) == list(new)
    bias = [k for k in old if k.endswith("out_fc.bias")]
    assert len(bias) == (0 if which == "lm_lstm" else 1)
    for k in old:
        if k in bias:
            assert not torch.equal(old[k], new[k]) and not new[k].any()
        else:
            assert torch.equal(old[k], new[k]), k
    if bias:
        torch.manual_seed(3)
        kept = models.build(models.spec(spec["name"], **spec["kwargs"],
                                        zero_readout_bias=False)).state_dict()
        assert all(torch.equal(old[k], kept[k]) for k in old)


def test_each_task_refuses_another_recipes_model_file():
    """pre_from_checkpoint of each task: another recipe's (or a featureless) model.pt is a
    CheckpointError that names the file."""
    from bimsnn.training import CheckpointError

    cks = {"keyword_spotting": {"recipe": "keyword_spotting",
                                "preprocessing": vars(speech.KWSPre()).copy()},
           "speech_recognition": {"recipe": "speech_recognition",
                                  "preprocessing": vars(asr.ASRPre()).copy()},
           "language_modeling": {"recipe": "language_modeling", "preprocessing": lm.lm_pre(
               Vocab(["<unk>", "a"]), "char", 8)},
           "seizure_detection": {"recipe": "seizure_detection",
                                 "preprocessing": {"window_s": 4.0}},
           "format1 seizure": {"preprocessing": {"window_s": 4.0}}}
    readers = {"keyword_spotting": speech.pre_from_checkpoint,
               "speech_recognition": asr.pre_from_checkpoint,
               "language_modeling": lm.pre_from_checkpoint}
    for name, read in readers.items():
        read(cks[name], "own.pt")                                    # its own: fine
        for other, ck in cks.items():
            if other != name:
                with pytest.raises(CheckpointError, match="other.pt"):
                    read(ck, "other.pt")
    assert speech.pre_from_checkpoint(cks["keyword_spotting"], "m") == speech.KWSPre()
    vocab, level = lm.pre_from_checkpoint(cks["language_modeling"], "m")
    assert vocab.itos == ["<unk>", "a"] and level == "char"


# ---------------------------------------------------------------------------- LibriSpeech
def _tiny_librispeech(root: Path) -> Path:
    """Two FLAC utterances with a .trans.txt, LibriSpeech layout."""
    folder = root / "LibriSpeech" / "tiny" / "19" / "198"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k, f in enumerate((300.0, 700.0)):
        t = np.arange(int(0.4 * 16000)) / 16000
        sf.write(folder / f"19-198-000{k}.flac",
                 (0.3 * np.sin(2 * np.pi * f * t) + 0.01 * rng.standard_normal(len(t))
                  ).astype(np.float32), 16000)
    (folder / "19-198.trans.txt").write_text("19-198-0000 HE SAID\n19-198-0001 NO\n")
    return root


def test_tiny_librispeech_loads_and_trains_one_step(tmp_path):
    base = LibriSpeech(_tiny_librispeech(tmp_path), "tiny", pipeline=LogMel(16000, 16))
    assert [m["utterance_id"] for *_, m, _ in base.items] == [0, 1]
    ds = asr.UttSet(base, SpikeCode(levels=2), stack=2)
    x, target, metas = asr.collate_ctc([ds[0], ds[1]])                # x (T, B, k·C)
    labels, in_lens, tgt_lens = target
    assert x.shape == (int(in_lens.max()), 2, 64) and set(x.unique().tolist()) <= {0.0, 1.0}
    assert asr.ids_to_text(labels[0, : tgt_lens[0]].tolist()) == "HE SAID"
    assert tgt_lens.tolist() == [7, 2] and metas[1]["text"] == "NO"
    pre = asr.ASRPre(n_mels=16, levels=2, stack=2)
    assert pre.n_inputs == 64
    opened = asr.UttSet.open(tmp_path, "tiny", pre)
    assert torch.equal(opened[1][0], ds[1][0])
    torch.manual_seed(0)
    model = models.build(asr.asr_spec(64, d_model=16, n_layers=1, d_state=4))
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = asr.ctc_loss(model.forward_seq(x)[0], target)
    loss.backward()
    opt.step()
    assert math.isfinite(loss.item()) and loss.item() > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    res = asr.ctc_eval(model, ds, batch_size=2, beam=2, n_examples=1)
    assert res["examples"][0]["ref"] == "HE SAID" and res["wer"] >= 0 and res["cer"] >= 0


def test_lm_windows_and_bits_per_character_at_word_level():
    """Word level: bpc spreads the bits over each word + one space (<eos>: a newline)."""
    texts = {"train": " a bb \n a \n", "valid": " bb a \n", "test": " a a bb \n"}
    vocab = Vocab.build(tokenize(texts["train"], "word"))
    data = lm.windows(texts, vocab, "word", 2, max_train=4)        # train: 5 tokens → 4
    assert [len(d.ids) for d in data.values()] == [4, 3, 4]
    assert data["test"].ids.tolist() == vocab.encode(["a", "a", "bb", "<eos>"]).tolist()
    x, y, _ = collate_lm([data["test"][0]])                        # (T, B) each
    assert x.shape == (2, 1) and torch.equal(y[:1], x[1:])
    char_len = lm.chars_per_token(vocab, "word")
    assert {w: char_len[vocab.encode([w])[0]].item() for w in ("a", "bb", "<eos>")} == {
        "a": 2.0, "bb": 3.0, "<eos>": 1.0}
    assert torch.equal(lm.chars_per_token(vocab, "char"), torch.ones(len(vocab)))


@pytest.mark.parametrize("name", ["mamba", "lstm"])
def test_unigram_bias_gives_smoothed_frequencies_at_init(name):
    """The output bias starts at log p(v), p add-one smoothed over the training ids: the
    softmax of the bias alone is that distribution, for both LM models."""
    ids = torch.tensor([0, 1, 1, 2, 2, 2, 2, 4])                 # V = 6: 3 and 5 unseen
    model = models.build(lm.lm_spec(name, 6, d_embed=4, d_model=8, d_state=4))
    lm.unigram_bias_(model, ids)
    head = model.net.out_fc if name == "mamba" else model.head
    want = torch.tensor([2.0, 3.0, 5.0, 1.0, 2.0, 1.0]) / 14.0
    torch.testing.assert_close(F.softmax(head.bias.double(), 0), want.double(),
                               rtol=1e-6, atol=1e-7)
