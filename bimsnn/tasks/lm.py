"""Character- and word-level language modelling: WikiText layout → token windows → BPC.

Symbols: S tokens in a split, T window length, B batch, V vocabulary size, E embedding
width, D model width.

Data: the WikiText-103 layout (``wiki.{train,valid,test}.<suffix>``,
:mod:`bimsnn.data.text`), or CPython's ``pydoc_data.topics`` written in that layout
(:func:`load_corpus`). The vocabulary comes from the training split (``<unk>`` for
anything else) and is stored in ``model.pt`` with the token level (:func:`lm_pre`).

Models (:mod:`bimsnn.models`): ``spiking_mamba_lm`` (ids → Embedding → Linear + LIF →
SpikingMamba blocks → Linear on the last block's pre-LIF current, readout integrator
off), its non-spiking twin ``smooth_mamba_lm``, or the ``lstm_lm`` baseline sized to the
same parameter count (:func:`lstm_hidden_for`); all give per-step logits (T, B, V). Every
window of T tokens starts from a zero state (:class:`~bimsnn.data.LMWindows`).

Metrics (:func:`lm_eval`): ``bpc`` (bits per character) and ``ppl`` (perplexity per
token). At word level, ``bpc`` spreads the total bits over the characters of the scored
text (each word plus one separating space; ``<eos>`` one newline).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bimsnn import models
from bimsnn.data import LMWindows, Vocab, collate_lm, read_wikitext, write_embedded_corpus
from bimsnn.data.text import EOS, tokenize
from bimsnn.metrics import bits_per_char, perplexity
from bimsnn.training import CheckpointError, RunError, TrainConfig, distributed, fit
from bimsnn.training.online import seq_logits

RECIPE = "language_modeling"
SPLITS = ("train", "valid", "test")


def load_corpus(data_dir: str | None, corpus_dir: Path, suffix: str = "tokens") -> dict[str, str]:
    """{split: text}: ``data_dir`` (WikiText layout), else the embedded pydoc corpus written
    once to ``corpus_dir`` (rank 0; the others wait)."""
    root = Path(data_dir) if data_dir else corpus_dir
    if not data_dir and distributed.dist_info().is_main:
        write_embedded_corpus(root)
    distributed.barrier()
    return read_wikitext(root, suffix)


def windows(texts: dict[str, str], vocab: Vocab, level: str, seq_len: int,
            max_train: int | None = None, max_eval: int | None = None) -> dict[str, LMWindows]:
    """{split: LMWindows of T = ``seq_len``} over the token ids of each split, train cut to
    its first ``max_train`` tokens and valid/test to ``max_eval`` (quick runs)."""
    out = {}
    for split, text in texts.items():
        ids = vocab.encode(tokenize(text, level))                    # (S,)
        cap = max_train if split == "train" else max_eval
        out[split] = LMWindows(ids[:cap] if cap else ids, seq_len)
    return out


def lm_spec(model: str, vocab_size: int, *, d_embed: int = 32, d_model: int = 96,
            n_layers: int = 1, d_state: int = 16, beta: float = 0.5,
            readout_input: str = "current", lstm_hidden: int | None = None) -> dict:
    """``spiking_mamba_lm`` (``model="mamba"``), its non-spiking twin ``smooth_mamba_lm``
    (``"smooth"``), or ``lstm_lm`` (``"lstm"``: hidden width ``lstm_hidden``, default
    ``d_model``; ``n_layers`` LSTM layers).

    Defaults chosen by measurement (benchmarks/RESULTS.md, issue 13): ``readout_input``
    (:class:`~bimsnn.ssm.mamba.MambaConfig`) "current", the logits read the last block's
    pre-LIF current, not its spikes; ``beta`` 0.5 (0.9 before), so the input LIF's spikes
    carry less of the previous characters. ``readout_input`` is written into the spec, so a
    model.pt saved without it still loads as "spikes".
    """
    if model == "lstm":
        return models.spec("lstm_lm", vocab_size=vocab_size, d_embed=d_embed,
                           hidden=lstm_hidden or d_model, num_layers=n_layers)
    name = {"mamba": "spiking_mamba_lm", "smooth": "smooth_mamba_lm"}[model]
    return models.spec(name, vocab_size=vocab_size, d_embed=d_embed, d_model=d_model,
                       n_layers=n_layers, d_state=d_state, beta=beta, readout_input=readout_input)


def n_params(spec: dict) -> int:
    """Parameter count of the model ``spec`` builds (built once; the RNG state is kept)."""
    with torch.random.fork_rng():
        return sum(p.numel() for p in models.build(spec).parameters())


def lstm_hidden_for(params: int, vocab_size: int, d_embed: int, n_layers: int = 1) -> int:
    """The LSTM hidden width H whose ``lstm_lm`` has the parameter count nearest ``params``:
    V·E (embedding) + 4H(E + H) + 8H (first layer) + (L − 1)(8H² + 8H) + (H + 1)·V (head).

    >>> lstm_hidden_for(85224, 104, 32)          # the default spiking LM's count
    116
    """
    def count(h: int) -> int:
        return (vocab_size * d_embed + 4 * h * (d_embed + h) + 8 * h
                + (n_layers - 1) * (8 * h * h + 8 * h) + (h + 1) * vocab_size)
    return min(range(1, 4097), key=lambda h: abs(count(h) - params))


def lm_pre(vocab: Vocab, level: str, seq_len: int) -> dict:
    """The preprocessing kept in model.pt: vocabulary, token level, window length."""
    return {"vocab": vocab.state_dict(), "level": level, "seq_len": seq_len}


def pre_from_checkpoint(ck: dict, path) -> tuple[Vocab, str]:
    """(vocabulary, level) of a language_modeling model.pt (format 2 or 1); another
    recipe's model.pt is a CheckpointError naming the file."""
    pre, recipe = ck.get("preprocessing"), ck.get("recipe")
    if recipe not in (None, RECIPE) or not (isinstance(pre, dict) and "vocab" in pre
                                            and pre.get("level") in ("char", "word")):
        what = recipe or "no vocabulary in it"
        raise CheckpointError(path, f"another recipe's model.pt ({what}); pass a "
                              "language_modeling model.pt")
    return Vocab.from_state_dict(pre["vocab"]), pre["level"]


def lm_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Mean next-token cross-entropy (nats) of logits (T, B, V) against y (T, B)."""
    return F.cross_entropy(logits.flatten(0, 1), y.flatten())


def chars_per_token(vocab: Vocab, level: str) -> Tensor:
    """(V,) characters each token stands for, for bits per *character*: 1 at char level;
    word + separating space at word level (``<eos>``: the newline).

    >>> chars_per_token(Vocab(["<unk>", "<eos>", "cat"]), "word").tolist()
    [6.0, 1.0, 4.0]
    """
    if level == "char":
        return torch.ones(len(vocab))
    return torch.tensor([1.0 if s == EOS else len(s) + 1.0 for s in vocab.itos])


@torch.no_grad()
def lm_eval(model: nn.Module, ds: LMWindows, batch_size: int, char_len: Tensor) -> dict:
    """Summed NLL over every window of ``ds`` (sharded over ranks, sums reduced) → loss
    (nats per token), bpc, ppl, tokens. ``char_len``: (V,) from :func:`chars_per_token`."""
    info = distributed.dist_info()
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    nll = n_tok = n_chr = 0.0
    idx = list(range(info.rank, len(ds), info.world_size))
    for k in range(0, len(idx), batch_size):
        x, y, _ = collate_lm([ds[i] for i in idx[k:k + batch_size]])  # (T, B) each
        logits = seq_logits(model, x.to(device))                     # (T, B, V)
        nll += F.cross_entropy(logits.flatten(0, 1), y.flatten().to(device),
                               reduction="sum").item()
        n_tok += y.numel()
        n_chr += char_len[y].sum().item()
    model.train(was)
    nll, n_tok, n_chr = distributed.allreduce_sum([nll, n_tok, n_chr], device)
    return {"loss": nll / n_tok, "bpc": bits_per_char(nll, int(n_chr)),
            "ppl": perplexity(nll, int(n_tok)), "tokens": int(n_tok)}


def unigram_bias_(model: nn.Module, train_ids: Tensor) -> None:
    """Start the output layer's bias at the log unigram frequencies of the training ids
    (add-one smoothed), in place: ``b_v = log p(v)``, so the first logits already give the
    character frequencies.

    Why: with a zero bias every early batch's gradient says the same thing ("match the
    frequencies"), and the spiking LM answers it by driving its last LIF layer's units to
    always-on or never-on, where the surrogate gradient is ~0 and no input reaches the
    logits: it then stays at the unigram entropy (4.5 bits/char on the default corpus).
    Measured (300 steps, valid bpc): zero bias 4.29 / 4.51 (two seeds), log-unigram bias
    2.91 / 2.86; the LSTM 2.63 → 2.22. Both models get it, so their comparison is fair.

    Args:
        model: a ``spiking_mamba_lm`` (``net.out_fc``) or ``lstm_lm`` (``head``).
        train_ids: (S,) token ids of the training split.
    """
    head = model.net.out_fc if hasattr(model, "net") else model.head
    counts = torch.bincount(train_ids.long().flatten(), minlength=head.out_features)
    p = (counts[:head.out_features].to(torch.float64) + 1.0)
    with torch.no_grad():
        head.bias.copy_((p / p.sum()).log().to(head.bias.dtype))


def train_lm(spec: dict, data: dict[str, LMWindows], tc: TrainConfig, char_len: Tensor
             ) -> tuple[nn.Module, list[dict], float]:
    """Seed, build, start the output bias at log unigram frequencies
    (:func:`unigram_bias_`), :func:`bimsnn.training.fit` (``per_step=True``, next-token
    loss; the validation loss picks the best epoch). Returns (model, history, training
    seconds).

    Raises:
        RunError: an online ``tc.rule`` for the LSTM (no ``step``) or the smooth twin.
    """
    if spec["name"] in ("lstm_lm", "smooth_mamba_lm") and tc.rule != "bptt":
        which = "lstm has no step()" if spec["name"] == "lstm_lm" else "smooth is a BPTT baseline"
        raise RunError(None, f"--model {which}: train it with --rule bptt, not {tc.rule}")
    torch.manual_seed(tc.seed)
    model = models.build(spec)
    unigram_bias_(model, data["train"].ids)
    t0 = time.perf_counter()
    history = fit(model, data["train"], None, tc, loss_fn=lm_loss, per_step=True,
                  collate_fn=collate_lm, monitor="loss",
                  validate=lambda m: lm_eval(m, data["valid"], tc.batch_size, char_len))
    return model, history, time.perf_counter() - t0
