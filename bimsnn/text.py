"""Text for sequence models: vocabularies, the WikiText-103 file layout, LM windows.

Symbols: S tokens in a split, T window length (time steps), B batch, V vocabulary size.

WikiText-103 (Merity et al. 2016) ships ``wiki.train.tokens``, ``wiki.valid.tokens`` and
``wiki.test.tokens``: one paragraph per line, tokens separated by single spaces, article
titles as `` = Title = `` lines, rare words already replaced by ``<unk>``. The raw variant
(``wiki.*.raw``) is read the same way. :func:`write_embedded_corpus` writes that layout
from English text shipped with CPython (``pydoc_data.topics``, the ``help()`` pages), so a
language-model recipe runs with no download.

Levels: ``"char"`` (every character, newlines included) or ``"word"`` (whitespace tokens,
``<eos>`` after each line, the WikiText word-LM convention); :class:`Vocab` maps anything
unseen in training to ``<unk>``. :func:`fit_seq` trains models with per-step outputs.
"""

from __future__ import annotations

import bisect
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from bimsnn import _ddp
from bimsnn._loop import run_epochs
from bimsnn._online import (
    has_step,
    make_pruner,
    make_rule,
    readout_params,
    seq_logits,
    tree_map,
)
from bimsnn.data import DataError
from bimsnn.train import TrainConfig

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


# ---------------------------------------------------------------------------- training
def online_seq_loss(model: nn.Module, rule, x: Tensor, target: Any,
                    loss_fn: Callable[[Tensor, Any], Tensor], head: list[Tensor] | None = None
                    ) -> Tensor:
    """One batch of a sequence-output loss, trained online by ``rule``.

    A sequence loss (CTC, or next-token cross-entropy) gives every step an error signal
    ``g_t = ∂L/∂logits_t``; CTC's needs the whole utterance (its alignment posterior), so
    it cannot come from step t alone. Two passes: (1) no-grad, ``eval()`` logits (T, B, V)
    → L → g (T, B, V); (2) ``model.step`` through time with the carried state detached and
    ``rule.backward(⟨g_t, logits_t⟩)`` each step, a surrogate whose gradient w.r.t.
    ``logits_t`` is exactly g_t. For per-step losses (LM) this equals calling the rule
    with each step's own loss. ``head`` (rule "stdp"): the rule gets ``backward(None)`` and
    only the readout gets the surrogate's gradient, as in :mod:`bimsnn._online`.

    Returns:
        L, detached.
    """
    was = model.training
    model.eval()  # no plasticity, no traces advance in pass 1 (see bimsnn.rules.base)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Leaky.multi_step bypasses")  # intended here
        z = seq_logits(model, x)                                     # (T, B, V)
    model.train(was)
    z.requires_grad_(True)
    loss = loss_fn(z, target)
    (g,) = torch.autograd.grad(loss, z)                              # (T, B, V)
    rule.reset(x.shape[1])
    state = tree_map(lambda t: t.to(x.device), model.init_state(x.shape[1]))
    for t in range(x.shape[0]):
        logits_t, state = model.step(x[t], state)
        state = tree_map(Tensor.detach, state)  # online: no graph from step t into t+1
        surrogate = (g[t] * logits_t).sum()
        if head is None:
            rule.backward(surrogate)
            continue
        rule.backward(None)
        for p, gp in zip(head, torch.autograd.grad(surrogate, head, allow_unused=True)):
            if gp is not None:
                p.grad = gp if p.grad is None else p.grad.add_(gp)
    return loss.detach()


def fit_seq(model: nn.Module, train_ds: Dataset, cfg: TrainConfig, *,
            loss_fn: Callable[[Tensor, Any], Tensor], collate_fn: Callable,
            validate: Callable[[nn.Module], dict] | None = None, monitor: str = "loss",
            higher_is_better: bool = False, rule: Callable[[nn.Module], Any] | None = None,
            optimizer: torch.optim.Optimizer | None = None, scheduler=None) -> list[dict]:
    """:func:`bimsnn.train.fit` for models with per-step outputs (CTC, language models).

    Args:
        model: ``forward_seq(x) -> logits (T, B, V)`` (or ``(logits, state)``); online rules
            also need ``init_state(B)`` / ``step(x_t, state)``.
        loss_fn: ``(logits (T, B, V), target) -> mean loss``; batches from ``collate_fn``
            are ``(x, target, metas)``, target a tensor or a tuple of tensors.
        validate: ``model -> {metric: value}`` after each epoch, called on every rank
            (it shards and reduces itself); ``monitor`` names the early-stopping key.
        rule: factory overriding :func:`bimsnn._online.make_rule`.
    TrainConfig's ``task``, ``metric``, ``loss_window`` and ``eval_readout`` do not apply.
    Files as ``fit``: ckpt.pt (exact resume, mid-epoch too), best.pt, metrics.json,
    curves.png. Returns the history (one dict per epoch).
    """
    if cfg.rule != "bptt" and not has_step(model):
        raise TypeError(f"rule={cfg.rule!r} needs model.init_state/step, which "
                        f"{type(model).__name__} lacks; use rule='bptt'")
    info, device = _ddp.setup(cfg.device)
    torch.manual_seed(cfg.seed)
    model.to(device)
    _ddp.broadcast_module(model)
    opt = optimizer or torch.optim.AdamW(model.parameters(), lr=cfg.lr,
                                         weight_decay=cfg.weight_decay)
    pruner = make_pruner(model, cfg)
    online = cfg.rule != "bptt"
    head = readout_params(model) if cfg.rule == "stdp" else None

    def loss_and_grads(active, x: Tensor, target) -> Tensor:
        if active is None:
            loss = loss_fn(seq_logits(model, x), target)
            loss.backward()
            return loss
        return online_seq_loss(model, active, x, target, loss_fn, head)

    def val(m: nn.Module) -> dict:
        return {f"val_{k}": v for k, v in validate(m).items()}

    try:
        return run_epochs(
            model, train_ds, cfg, loss_and_grads=loss_and_grads,
            rule_factory=(rule or (lambda m: make_rule(m, cfg))) if online else None,
            validate=val if validate is not None else None, monitor=monitor,
            higher_is_better=higher_is_better, opt=opt, scheduler=scheduler, pruner=pruner,
            collate_fn=collate_fn, device=device, info=info)
    finally:
        if pruner is not None:
            pruner.remove()
