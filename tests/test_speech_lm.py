"""Speech and language recipes: CTC decoding, WER/CER, BPC, text data, fit_seq, smoke runs.

Symbols: T time, B batch, V classes/vocabulary, C afferents.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from bimsnn._online import tree_map
from bimsnn.data import DataError
from bimsnn.data.audio import LibriSpeech, LogMel
from bimsnn.metrics_text import (
    bits_per_char,
    cer,
    ctc_beam_decode,
    ctc_collapse,
    ctc_greedy_decode,
    perplexity,
    wer,
)
from bimsnn.text import (
    LMWindows,
    Vocab,
    collate_lm,
    fit_seq,
    online_seq_loss,
    read_wikitext,
    tokenize,
    write_embedded_corpus,
)
from bimsnn.train import TrainConfig

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def recipe(name: str):
    """Import recipes/<name>.py as a module (its folder on sys.path, as when run)."""
    if str(RECIPES) not in sys.path:
        sys.path.insert(0, str(RECIPES))
    return importlib.import_module(name)


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
    lm = recipe("language_modeling")
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


# ---------------------------------------------------------------------------- fit_seq
def _tiny_lm(seed: int = 0):
    lm = recipe("language_modeling")
    torch.manual_seed(seed)
    return lm.SpikingMambaLM(7, 4, d_model=8, n_layers=1, d_state=4)


def test_online_seq_loss_equals_per_step_losses():
    """The two-pass surrogate ⟨g_t, logits_t⟩ gives the rule the same gradients as
    feeding it each step's own (per-step) LM loss."""
    from bimsnn.rules import RTRL

    lm = recipe("language_modeling")
    torch.manual_seed(1)
    x, y = torch.randint(0, 7, (10, 3)), torch.randint(0, 7, (10, 3))
    grads = []
    for mode in ("surrogate", "per_step"):
        model = _tiny_lm(0)
        rule = RTRL(model)
        if mode == "surrogate":
            online_seq_loss(model, rule, x, y, lm.lm_loss)
        else:
            rule.reset(3)
            state = model.init_state(3)
            for t in range(10):
                logits_t, state = model.step(x[t], state)
                state = tree_map(torch.Tensor.detach, state)
                rule.backward(F.cross_entropy(logits_t, y[t]) / 10)
        rule.remove()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert sum(g.abs().sum() for g in grads[0]) > 0


def test_fit_seq_resume_matches_uninterrupted(tmp_path):
    lm = recipe("language_modeling")
    torch.manual_seed(0)
    ds = LMWindows(torch.randint(0, 7, (200,)), 8)                # 24 windows, 3 batches
    def run(out, **kw):
        model = _tiny_lm(0)
        cfg = TrainConfig(epochs=2, batch_size=8, out_dir=str(out), progress=False,
                          plots=False, **kw)
        fit_seq(model, ds, cfg, loss_fn=lm.lm_loss, collate_fn=collate_lm)
        return model
    full = run(tmp_path / "a")
    run(tmp_path / "b", max_steps=4)                                # stops mid-epoch 2
    resumed = run(tmp_path / "b", resume=True)
    for p, q in zip(full.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q)
    hist = json.loads((tmp_path / "b" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in hist] == [1, 2]


# ---------------------------------------------------------------------------- LibriSpeech
def _tiny_librispeech(root: Path) -> Path:
    """Two FLAC utterances (+ one WAV) with a .trans.txt, LibriSpeech layout."""
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
    asr = recipe("speech_recognition")
    kws = recipe("keyword_spotting")
    base = LibriSpeech(_tiny_librispeech(tmp_path), "tiny", pipeline=LogMel(16000, 16))
    assert [m["utterance_id"] for *_, m, _ in base.items] == [0, 1]
    ds = asr.UttSet(base, kws.SpikeCode(levels=2), stack=2)
    x, target, metas = asr.collate_ctc([ds[0], ds[1]])
    labels, in_lens, tgt_lens = target
    assert x.shape == (int(in_lens.max()), 2, 64) and set(x.unique().tolist()) <= {0.0, 1.0}
    assert asr.ids_to_text(labels[0, : tgt_lens[0]].tolist()) == "HE SAID"
    assert tgt_lens.tolist() == [7, 2] and metas[1]["text"] == "NO"
    torch.manual_seed(0)
    model = asr.build_model({"d_model": 16, "n_inputs": 64, "n_classes": 29, "d_state": 4})
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = asr.ctc_loss(model.forward_seq(x)[0], target)
    loss.backward()
    opt.step()
    assert math.isfinite(loss.item()) and loss.item() > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


# ---------------------------------------------------------------------------- smoke runs
def test_keyword_spotting_synthetic_runs_and_reloads(tmp_path, monkeypatch):
    monkeypatch.setenv("BIMSNN_SHARED_DATA", str(tmp_path / "absent"))
    kws = recipe("keyword_spotting")
    out = tmp_path / "kws"
    args = ["--out-dir", str(out), "--epochs", "2", "--d-model", "16", "--d-state", "4",
            "--duration-s", "0.3", "--max-items", "40", "--no-progress"]
    res = kws.main(args)
    assert res["data"]["synthetic"] and 0.0 <= res["accuracy"] <= 1.0
    assert np.asarray(res["confusion"]).shape == (10, 10)
    assert json.loads((out / "metrics.json").read_text())["accuracy"] == res["accuracy"]
    assert (out / "confusion.png").stat().st_size > 0
    again = kws.main(["--eval-only", "--checkpoint", str(out / "model.pt"), "--out-dir",
                      str(tmp_path / "eval"), "--data-dir", str(out / "synthetic_fsdd"),
                      "--max-items", "40"])
    assert again["accuracy"] == pytest.approx(res["accuracy"])


def test_keyword_spotting_real_fsdd_hybrid(shared_data, tmp_path):
    kws = recipe("keyword_spotting")
    res = kws.main(["--out-dir", str(tmp_path), "--rule", "hybrid", "--epochs", "1",
                    "--d-model", "16", "--d-state", "4", "--duration-s", "0.3",
                    "--max-items", "30", "--split", "speaker", "--test-speakers", "theo",
                    "--no-progress"])
    assert res["data"]["test_speakers"] == ["theo"] and res["n_test"] == 30
    assert 0.0 <= res["accuracy"] <= 1.0 and res["rule"] == "hybrid"


@pytest.mark.parametrize("rule", ["bptt", "hybrid"])
def test_speech_recognition_smoke(tmp_path, rule):
    asr = recipe("speech_recognition")
    res = asr.main(["--out-dir", str(tmp_path), "--smoke-utts", "8", "--epochs", "1",
                    "--d-model", "16", "--n-layers", "1", "--d-state", "4", "--batch-size",
                    "4", "--rule", rule, "--beam", "2" if rule == "bptt" else "0",
                    "--no-progress"])
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["wer"] == res["wer"] >= 0 and saved["cer"] == res["cer"] >= 0
    assert res["n_test"] == 2 and len(res["examples"]) == 2
    assert (tmp_path / "smoke_librispeech/LibriSpeech/train-clean-100").is_dir()


@pytest.mark.parametrize("level,model", [("char", "mamba"), ("word", "mamba"),
                                         ("char", "lstm")])
def test_language_modeling_smoke(tmp_path, level, model):
    lm = recipe("language_modeling")
    args = ["--out-dir", str(tmp_path), "--level", level, "--model", model, "--epochs", "1",
            "--max-train-tokens", "1500", "--max-eval-tokens", "400", "--seq-len", "16",
            "--d-model", "16", "--d-embed", "8", "--n-layers", "1", "--d-state", "4",
            "--no-progress"]
    res = lm.main(args)
    V = res["vocab_size"]
    assert math.isfinite(res["bpc"]) and res["bpc"] > 0 and res["ppl"] > 1
    if level == "char":
        assert res["bpc"] < math.log2(V) + 0.5        # ≈ uniform at worst after 1 epoch
        assert res["ppl"] == pytest.approx(2 ** res["bpc"], rel=1e-6)
    again = lm.main(["--eval-only", "--checkpoint", str(tmp_path / "model.pt"), "--out-dir",
                     str(tmp_path / "eval"), *args[2:]])
    assert again["bpc"] == pytest.approx(res["bpc"], rel=1e-5)


def test_language_modeling_online_rule(tmp_path):
    lm = recipe("language_modeling")
    res = lm.main(["--out-dir", str(tmp_path), "--rule", "hybrid", "--epochs", "1",
                   "--max-train-tokens", "300", "--max-eval-tokens", "200", "--seq-len", "8",
                   "--d-model", "8", "--d-embed", "4", "--n-layers", "1", "--d-state", "4",
                   "--no-progress"])
    assert math.isfinite(res["bpc"]) and res["rule"] == "hybrid"
    with pytest.raises(SystemExit):
        lm.main(["--out-dir", str(tmp_path), "--model", "lstm", "--rule", "rtrl"])


def test_keyword_spotting_speech_commands_layout(tmp_path):
    """A tiny Speech Commands v2 folder (yes/no/cat + noise): the 12-class task runs."""
    kws = recipe("keyword_spotting")
    root = tmp_path / "sc"
    rng = np.random.default_rng(0)
    lists = {"validation": [], "testing": []}
    for w, word in enumerate(("yes", "no", "cat")):
        (root / word).mkdir(parents=True)
        for k in range(6):
            name = f"{word}/{k:08x}_nohash_0.wav"
            t = np.arange(8000) / 16000
            sf.write(root / name, (0.3 * np.sin(2 * np.pi * (300 + 400 * w) * t)
                                   + 0.01 * rng.standard_normal(len(t))).astype(np.float32),
                     16000)
            if k == 4:
                lists["validation"].append(name)
            elif k == 5:
                lists["testing"].append(name)
    (root / "_background_noise_").mkdir()
    sf.write(root / "_background_noise_" / "white.wav",
             (0.1 * rng.standard_normal(32000)).astype(np.float32), 16000)
    for split, names in lists.items():
        (root / f"{split}_list.txt").write_text("\n".join(names) + "\n")
    res = kws.main(["--dataset", "speechcommands", "--data-dir", str(root), "--classes",
                    "v2_12", "--out-dir", str(tmp_path / "run"), "--epochs", "1",
                    "--d-model", "8", "--d-state", "4", "--duration-s", "0.2",
                    "--no-progress"])
    assert res["classes"][:3] == ["_silence_", "_unknown_", "yes"] and len(res["classes"]) == 12
    assert res["n_test"] == 4 and np.asarray(res["confusion"]).shape == (12, 12)
