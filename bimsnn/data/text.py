"""Text data for sequence models: vocabularies, the WikiText-103 file layout, LM windows.

Symbols: S tokens in a split, T window length (time steps), B batch, V vocabulary size.

WikiText-103 (Merity et al. 2016) ships ``wiki.train.tokens``, ``wiki.valid.tokens`` and
``wiki.test.tokens``: one paragraph per line, tokens separated by single spaces, article
titles as `` = Title = `` lines, rare words already replaced by ``<unk>``. The raw variant
(``wiki.*.raw``) is read the same way. :func:`write_embedded_corpus` writes that layout
from English text shipped with CPython (``pydoc_data.topics``, the ``help()`` pages), so a
language-model recipe runs with no download.

Levels: ``"char"`` (every character, newlines included) or ``"word"`` (whitespace tokens,
``<eos>`` after each line, the WikiText word-LM convention); :class:`Vocab` maps anything
unseen in training to ``<unk>``.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from bimsnn.data.errors import DataError

__all__ = ["SPLITS", "UNK", "EOS", "LEVELS", "Vocab", "tokenize", "wikitext_paths",
           "read_wikitext", "write_embedded_corpus", "LMWindows", "collate_lm"]

SPLITS = ("train", "valid", "test")
UNK, EOS = "<unk>", "<eos>"
LEVELS = ("char", "word")


# ---------------------------------------------------------------------------- vocabulary
class Vocab:
    """Token ↔ id map. Id 0 is ``<unk>``; the rest follow descending training count (ties:
    first occurrence), so the order is deterministic.

    >>> v = Vocab.build("abracadabra")
    >>> v.itos[:4], v.encode("cab").tolist(), v.decode(v.encode("dz"))
    (['<unk>', 'a', 'b', 'r'], [4, 1, 2], 'd<unk>')
    """

    def __init__(self, itos: Sequence[str]):
        if not itos or itos[0] != UNK:
            raise ValueError(f"Vocab: itos[0] must be {UNK!r}")
        if len(set(itos)) != len(itos):
            raise ValueError("Vocab: duplicate tokens")
        self.itos = list(itos)
        self.stoi = {s: i for i, s in enumerate(self.itos)}

    @classmethod
    def build(cls, tokens: Iterable[str], min_count: int = 1, max_size: int | None = None
              ) -> Vocab:
        """From training tokens: keep those seen ≥ ``min_count`` times, the
        ``max_size`` most frequent at most (``<unk>`` included)."""
        counts = Counter(tokens)
        counts.pop(UNK, None)  # WikiText already has <unk> tokens: they map to id 0
        kept = [s for s, c in sorted(counts.items(), key=lambda kv: -kv[1]) if c >= min_count]
        if max_size is not None:
            kept = kept[: max(0, max_size - 1)]
        return cls([UNK, *kept])

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Iterable[str]) -> Tensor:
        """Tokens → ids (S,) int64; unseen tokens → 0 (``<unk>``)."""
        return torch.tensor([self.stoi.get(s, 0) for s in tokens], dtype=torch.long)

    def decode(self, ids: Iterable[int], sep: str = "") -> str:
        return sep.join(self.itos[int(i)] for i in ids)

    def state_dict(self) -> dict:
        """JSON/``weights_only``-safe: ``{"itos": [...]}``."""
        return {"itos": list(self.itos)}

    @classmethod
    def from_state_dict(cls, state: dict) -> Vocab:
        return cls(state["itos"])


def tokenize(text: str, level: str) -> list[str]:
    """``"char"``: list of characters (newlines kept). ``"word"``: whitespace tokens, one
    ``<eos>`` after every non-empty line.

    >>> tokenize(" = A = \\n b c \\n", "word")
    ['=', 'A', '=', '<eos>', 'b', 'c', '<eos>']
    """
    if level == "char":
        return list(text)
    if level != "word":
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    out: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if words:
            out += words + [EOS]
    return out


# ---------------------------------------------------------------------------- WikiText layout
def wikitext_paths(root: str | Path, suffix: str = "tokens") -> dict[str, Path]:
    """``{split: path}`` of ``wiki.<split>.<suffix>`` in ``root`` or in a
    ``wikitext-103`` / ``wikitext-103-raw`` / ``wikitext-2`` subfolder.

    Raises:
        DataError: a split file is missing.
    """
    root = Path(root)
    for base in (root, root / "wikitext-103", root / "wikitext-103-raw", root / "wikitext-2"):
        paths = {s: base / f"wiki.{s}.{suffix}" for s in SPLITS}
        if all(p.is_file() for p in paths.values()):
            return paths
    raise DataError(root, f"WikiText layout not found: need wiki.{{train,valid,test}}.{suffix}")


def read_wikitext(root: str | Path, suffix: str = "tokens") -> dict[str, str]:
    """``{split: text}`` of the three WikiText files (UTF-8). Empty files are an error."""
    out = {}
    for split, path in wikitext_paths(root, suffix).items():
        text = path.read_text(encoding="utf-8")
        if not text.strip():
            raise DataError(path, "empty split file")
        out[split] = text
    return out


_WORD = re.compile(r"\w+|[^\w\s]")
_RULE = re.compile(r"^[ \t]*([*=~^-])\1{2,}[ \t]*$", re.M)


def _wikitext_line(paragraph: str) -> str:
    """WikiText-style tokenised line: words and punctuation separated by single spaces."""
    return " " + " ".join(_WORD.findall(paragraph)) + " "


def write_embedded_corpus(root: str | Path, valid_frac: float = 0.05, test_frac: float = 0.05
                          ) -> dict[str, Path]:
    """Write CPython's ``pydoc_data.topics`` (≈465k characters of English documentation,
    79 articles) in the WikiText-103 layout under ``root``; returns :func:`wikitext_paths`.

    Articles (sorted by topic name) become `` = topic = `` headed sections, paragraphs one
    tokenised line each. The concatenation is cut at article boundaries: the first
    1 − valid − test of the characters train, then valid, then test, cut at paragraph
    (line) boundaries. Writing is idempotent.
    """
    from pydoc_data.topics import topics  # stdlib: English text with no download

    lines: list[str] = []
    for name in sorted(topics):
        lines.append(f" = {name} = ")
        body = _RULE.sub("", topics[name])             # drop reST underlines (*****, ====)
        for para in re.split(r"\n\s*\n", body):
            if para.strip():
                lines.append(_wikitext_line(para))
    before = [0]                                       # characters before each line
    for s in lines:
        before.append(before[-1] + len(s))
    targets = ((1 - valid_frac - test_frac) * before[-1], (1 - test_frac) * before[-1])
    bounds = [bisect.bisect_left(before, x) for x in targets]  # first line past each cut
    if not 0 < bounds[0] < bounds[1] < len(lines):
        raise ValueError("write_embedded_corpus: these fractions leave a split empty")
    parts = {"train": lines[: bounds[0]], "valid": lines[bounds[0]: bounds[1]],
             "test": lines[bounds[1]:]}
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for split, part in parts.items():
        path = root / f"wiki.{split}.tokens"
        text = "\n".join(part) + "\n"
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
    return wikitext_paths(root)


# ---------------------------------------------------------------------------- LM windows
class LMWindows(Dataset):
    """Non-overlapping windows of a token stream for next-token prediction.

    ``__getitem__(n)`` returns ``(x (T,), y (T,), meta)``: ``x = ids[nT : nT + T]``,
    ``y = ids[nT + 1 : nT + T + 1]``, meta ``{"start": nT}``. Every window starts from a
    zero model state, so each is an independent sequence (no state carried across
    windows); the ragged tail shorter than T + 1 tokens is dropped, so together the windows
    score S − 1 − (S − 1) mod T of the S − 1 predictable tokens.

    >>> ds = LMWindows(torch.arange(10), 3)
    >>> len(ds), ds[1][0].tolist(), ds[1][1].tolist()
    (3, [3, 4, 5], [4, 5, 6])
    """

    def __init__(self, ids: Tensor, seq_len: int):
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        if len(ids) < seq_len + 1:
            raise ValueError(f"LMWindows: {len(ids)} tokens, need at least seq_len + 1 = "
                             f"{seq_len + 1}")
        self.ids, self.seq_len = ids.long(), seq_len
        self.n = (len(ids) - 1) // seq_len

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, n: int):
        if not 0 <= n < self.n:
            raise IndexError(n)
        s = n * self.seq_len
        return self.ids[s: s + self.seq_len], self.ids[s + 1: s + self.seq_len + 1], {"start": s}


def collate_lm(batch: list[tuple]) -> tuple[Tensor, Tensor, list]:
    """Items ``(x (T,), y (T,), meta)`` → ``(x (T, B), y (T, B), metas)``, time-major."""
    xs, ys, metas = zip(*batch)
    return torch.stack(xs, 1), torch.stack(ys, 1), list(metas)
