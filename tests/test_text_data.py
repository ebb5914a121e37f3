"""bimsnn.data.text: vocabulary, tokenizer, WikiText layout, LM windows.
Symbols: S tokens, T window length, B batch."""

from __future__ import annotations

import doctest

import pytest
import torch

import bimsnn.data.text as text
from bimsnn.data import DataError


def test_doctests():
    assert doctest.testmod(text).failed == 0


def test_vocab_counts_order_limits_and_state_dict():
    tokens = list("aaabbc") + ["<unk>"]
    v = text.Vocab.build(tokens)
    assert v.itos == ["<unk>", "a", "b", "c"]                      # by count, <unk> first
    assert text.Vocab.build(tokens, min_count=2).itos == ["<unk>", "a", "b"]
    assert text.Vocab.build(tokens, max_size=2).itos == ["<unk>", "a"]
    assert text.Vocab.from_state_dict(v.state_dict()).itos == v.itos
    assert v.encode(["c", "z"]).tolist() == [3, 0] and v.decode([1, 0], " ") == "a <unk>"
    with pytest.raises(ValueError):
        text.Vocab(["a", "<unk>"])
    with pytest.raises(ValueError):
        text.Vocab(["<unk>", "a", "a"])


def test_tokenize_levels():
    assert text.tokenize("ab\n", "char") == ["a", "b", "\n"]
    assert text.tokenize(" x y \n\n z \n", "word") == ["x", "y", "<eos>", "z", "<eos>"]
    with pytest.raises(ValueError):
        text.tokenize("x", "byte")


def test_wikitext_layout_subfolder_and_errors(tmp_path):
    with pytest.raises(DataError):
        text.wikitext_paths(tmp_path)
    sub = tmp_path / "wikitext-2"
    sub.mkdir()
    for split in text.SPLITS:
        (sub / f"wiki.{split}.tokens").write_text(f" = {split} = \n a b \n", encoding="utf-8")
    assert text.wikitext_paths(tmp_path)["valid"] == sub / "wiki.valid.tokens"
    assert text.read_wikitext(tmp_path)["test"].startswith(" = test = ")
    (sub / "wiki.test.tokens").write_text("  \n", encoding="utf-8")
    with pytest.raises(DataError, match="empty"):
        text.read_wikitext(tmp_path)


def test_embedded_corpus_is_idempotent(tmp_path):
    paths = text.write_embedded_corpus(tmp_path)
    first = {k: p.read_text(encoding="utf-8") for k, p in paths.items()}
    mtimes = {k: p.stat().st_mtime_ns for k, p in paths.items()}
    assert text.write_embedded_corpus(tmp_path) == paths
    assert {k: p.stat().st_mtime_ns for k, p in paths.items()} == mtimes   # not rewritten
    assert len(first["train"]) > 10 * len(first["test"]) > 0


@pytest.mark.parametrize("S,T", [(2, 1), (10, 3), (11, 5), (100, 7)])
def test_lm_windows_cover_the_documented_tokens(S, T):
    ids = torch.arange(S)
    ds = text.LMWindows(ids, T)
    assert len(ds) == (S - 1) // T
    xs, ys, metas = text.collate_lm([ds[n] for n in range(len(ds))])
    assert xs.shape == ys.shape == (T, len(ds))                      # time-major (T, B)
    assert torch.equal(ys, xs + 1)                                   # next-token targets
    assert ys.numel() == S - 1 - (S - 1) % T
    assert [m["start"] for m in metas] == [n * T for n in range(len(ds))]
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_lm_windows_reject_short_streams():
    with pytest.raises(ValueError):
        text.LMWindows(torch.arange(3), 3)
    with pytest.raises(ValueError):
        text.LMWindows(torch.arange(3), 0)
