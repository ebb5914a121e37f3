"""Character- and word-level language modelling with a spiking Mamba (or an LSTM baseline).

Symbols: T window length, B batch, V vocabulary size, E embedding width, D model width.

    python recipes/language_modeling.py                          # embedded corpus, char level
    python recipes/language_modeling.py --level word --epochs 3
    python recipes/language_modeling.py --data-dir /data/wikitext-103 --level char
    python recipes/language_modeling.py --model lstm             # non-spiking baseline (BPTT)
    python recipes/language_modeling.py --rule hybrid --max-train-tokens 20000
    python recipes/language_modeling.py --eval-only --checkpoint runs/language_modeling/model.pt
    torchrun --nproc_per_node=2 recipes/language_modeling.py     # data parallel

Data: the WikiText-103 layout (``wiki.{train,valid,test}.tokens``, see :mod:`bimsnn.text`).
With no ``--data-dir``, CPython's own ``pydoc_data.topics`` (≈480k characters of English
documentation) is written in that layout to ``<out>/corpus`` and used: no download.
The vocabulary comes from the training split (``<unk>`` for anything else).

Model (``--model mamba``): ids (T, B) → Embedding (E) → Linear + LIF (E → D spikes) →
``n_layers`` SpikingMamba blocks → Linear (D → V) → per-step logits (T, B, V). The readout
integrator is off (``readout_beta=0``): the logit at t is the readout of the spikes at t.
Every window of ``seq_len`` tokens starts from a zero state (:class:`bimsnn.text.LMWindows`).

Metrics on the test split (and valid, per epoch): ``bpc`` (bits per character) and
``ppl`` (perplexity per token: per character at ``--level char``, per word at ``word``).
At word level, ``bpc`` spreads the total bits over the characters of the scored text
(each word plus one separating space; ``<eos>`` one newline).

Training goes through :func:`bimsnn.text.fit_seq` (per-step outputs; ``bimsnn.train.fit``
scores one label per sequence): BPTT, or any ``--rule`` online, with ``fit``'s
checkpoints, resume, reports and torchrun support. Outputs in ``--out-dir``:
metrics.json, curves.png, model.pt (weights + vocabulary + model spec), ckpt.pt, best.pt.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bimsnn import _ddp
from bimsnn._ckpt import atomic_torch_save, load_checkpoint, write_json
from bimsnn.metrics_text import bits_per_char, perplexity
from bimsnn.ssm.mamba import MambaConfig, SpikingMambaNet
from bimsnn.text import (
    EOS,
    LMWindows,
    Vocab,
    collate_lm,
    fit_seq,
    read_wikitext,
    tokenize,
    write_embedded_corpus,
)
from bimsnn.train import TrainConfig, parse_config

TRAIN_DEFAULTS = TrainConfig(epochs=2, batch_size=32, lr=3e-3, out_dir="runs/language_modeling",
                             grad_clip=1.0)


def _f(default, help: str, choices: tuple | None = None):
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class LMConfig:
    """Data and model flags of this recipe (training flags: :class:`TrainConfig`)."""

    data_dir: str | None = _f(None, "WikiText-103 folder (none: the embedded pydoc corpus)")
    suffix: str = _f("tokens", "split files wiki.<split>.<suffix>", ("tokens", "raw"))
    level: str = _f("char", "token unit", ("char", "word"))
    model: str = _f("mamba", "spiking Mamba or the LSTM baseline", ("mamba", "lstm"))
    seq_len: int = _f(64, "T, tokens per training/eval window")
    d_embed: int = _f(32, "E, embedding width")
    d_model: int = _f(96, "D, spiking Mamba width (LSTM hidden width)")
    n_layers: int = _f(1, "SpikingMamba blocks (LSTM layers)")
    d_state: int = _f(16, "SSM state size N")
    beta: float = _f(0.9, "LIF membrane decay of the spiking layers")
    min_count: int = _f(1, "keep training tokens seen at least this often (others <unk>)")
    max_vocab: int | None = _f(None, "cap on V (most frequent kept)")
    max_train_tokens: int | None = _f(None, "use only the first tokens of train (quick runs)")
    max_eval_tokens: int | None = _f(None, "use only the first tokens of valid/test")
    hybrid_grad: str = _f("autograd", "Hybrid's gradient part", ("rtrl", "autograd"))
    eval_only: bool = _f(False, "evaluate --checkpoint on the test split, no training")
    checkpoint: str | None = _f(None, "model.pt written by this recipe (for --eval-only)")
    threads: int = _f(0, "torch CPU threads (0: torch's default)")


# ---------------------------------------------------------------------------- models
class SpikingMambaLM(nn.Module):
    """ids (T, B) → Embedding → :class:`SpikingMambaNet` → per-step logits (T, B, V)."""

    def __init__(self, vocab_size: int, d_embed: int, **mamba):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_embed)
        self.net = SpikingMambaNet(MambaConfig(n_inputs=d_embed, n_classes=vocab_size,
                                               readout_beta=0.0, **mamba))

    def forward_seq(self, ids: Tensor) -> Tensor:
        return self.net.forward_seq(self.embed(ids))[0]

    def init_state(self, batch_size: int, device=None, dtype=None):
        return self.net.init_state(batch_size, device, dtype)

    def step(self, ids_t: Tensor, state):
        """ids_t (B,) → logits_t (B, V), new state (what the online rules hook into)."""
        return self.net.step(self.embed(ids_t), state)


class LSTMLM(nn.Module):
    """Baseline: ids (T, B) → Embedding → LSTM → Linear → logits (T, B, V). BPTT only."""

    def __init__(self, vocab_size: int, d_embed: int, hidden: int, num_layers: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_embed)
        self.lstm = nn.LSTM(d_embed, hidden, num_layers=num_layers)  # time-major
        self.head = nn.Linear(hidden, vocab_size)

    def forward_seq(self, ids: Tensor) -> Tensor:
        return self.head(self.lstm(self.embed(ids))[0])


def model_spec(cfg: LMConfig, vocab_size: int) -> dict:
    """Primitives that rebuild the model (stored in model.pt)."""
    return {"model": cfg.model, "vocab_size": vocab_size, "d_embed": cfg.d_embed,
            "d_model": cfg.d_model, "n_layers": cfg.n_layers, "d_state": cfg.d_state,
            "beta": cfg.beta}


def build_model(spec: dict) -> nn.Module:
    if spec["model"] == "lstm":
        return LSTMLM(spec["vocab_size"], spec["d_embed"], spec["d_model"], spec["n_layers"])
    return SpikingMambaLM(spec["vocab_size"], spec["d_embed"], d_model=spec["d_model"],
                          n_layers=spec["n_layers"], d_state=spec["d_state"],
                          beta=spec.get("beta", 0.9))


# ---------------------------------------------------------------------------- loss, eval
def lm_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Mean next-token cross-entropy (nats) of logits (T, B, V) against y (T, B)."""
    return F.cross_entropy(logits.flatten(0, 1), y.flatten())


def chars_per_token(vocab: Vocab, level: str) -> Tensor:
    """(V,) characters each token stands for, for bits per *character*: 1 at char level;
    word + separating space at word level (``<eos>``: the newline)."""
    if level == "char":
        return torch.ones(len(vocab))
    return torch.tensor([1.0 if s == EOS else len(s) + 1.0 for s in vocab.itos])


@torch.no_grad()
def lm_eval(model: nn.Module, ds: LMWindows, batch_size: int, char_len: Tensor) -> dict:
    """Summed NLL over every window of ``ds`` → loss, bpc, ppl (all ranks; sharded)."""
    info = _ddp.dist_info()
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    nll = n_tok = n_chr = 0.0
    idx = list(range(info.rank, len(ds), info.world_size))
    for k in range(0, len(idx), batch_size):
        x, y, _ = collate_lm([ds[i] for i in idx[k:k + batch_size]])
        logits = model.forward_seq(x.to(device))
        nll += F.cross_entropy(logits.flatten(0, 1), y.flatten().to(device),
                               reduction="sum").item()
        n_tok += y.numel()
        n_chr += char_len[y].sum().item()
    model.train(was)
    nll, n_tok, n_chr = _ddp.allreduce_sum([nll, n_tok, n_chr], device)
    return {"loss": nll / n_tok, "bpc": bits_per_char(nll, int(n_chr)),
            "ppl": perplexity(nll, int(n_tok)), "tokens": int(n_tok)}


# ---------------------------------------------------------------------------- main
def load_corpus(cfg: LMConfig, out: Path) -> dict[str, str]:
    root = Path(cfg.data_dir) if cfg.data_dir else out / "corpus"
    if cfg.data_dir is None and _ddp.dist_info().is_main:
        write_embedded_corpus(root)
    _ddp.barrier()
    return read_wikitext(root, cfg.suffix)


def main(argv: list[str] | None = None) -> dict:
    tc, cfg = parse_config(TRAIN_DEFAULTS, LMConfig(), argv=argv, description=__doc__)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    info, device = _ddp.setup(tc.device)
    out = Path(tc.out_dir or "runs/language_modeling")
    t0 = time.perf_counter()
    texts = load_corpus(cfg, out)
    tokens = {s: tokenize(t, cfg.level) for s, t in texts.items()}
    if cfg.eval_only:
        if not cfg.checkpoint:
            raise SystemExit("--eval-only needs --checkpoint PATH (a model.pt of this recipe)")
        ck = load_checkpoint(cfg.checkpoint)
        vocab, spec, level = Vocab.from_state_dict(ck["vocab"]), ck["spec"], ck["level"]
        if level != cfg.level:
            tokens = {s: tokenize(t, level) for s, t in texts.items()}
        model = build_model(spec)
        model.load_state_dict(ck["model"])
    else:
        vocab = Vocab.build(tokens["train"], cfg.min_count, cfg.max_vocab)
        spec, level = model_spec(cfg, len(vocab)), cfg.level
        torch.manual_seed(tc.seed)
        model = build_model(spec)
    ids = {s: vocab.encode(t) for s, t in tokens.items()}
    for s, cap in (("train", cfg.max_train_tokens), ("valid", cfg.max_eval_tokens),
                   ("test", cfg.max_eval_tokens)):
        ids[s] = ids[s][:cap] if cap else ids[s]
    data = {s: LMWindows(v, cfg.seq_len) for s, v in ids.items()}
    char_len = chars_per_token(vocab, level)
    logging.info("%s level: V=%d, tokens train/valid/test %s, %d params", level, len(vocab),
                 [len(v) for v in ids.values()], sum(p.numel() for p in model.parameters()))

    history: list[dict] = []
    if not cfg.eval_only:
        if cfg.model == "lstm" and tc.rule != "bptt":
            raise SystemExit("--model lstm has no step(): train it with --rule bptt")
        rule = None
        if tc.rule == "hybrid":
            from bimsnn.rules import Hybrid

            def rule(m):
                return Hybrid(m, lam=tc.lam, grad=cfg.hybrid_grad, balance=tc.balance)
        history = fit_seq(model, data["train"], tc, loss_fn=lm_loss, collate_fn=collate_lm,
                          validate=lambda m: lm_eval(m, data["valid"], tc.batch_size, char_len),
                          monitor="loss", rule=rule)
    model.to(device)
    test = lm_eval(model, data["test"], tc.batch_size, char_len)
    result = {"bpc": test["bpc"], "ppl": test["ppl"], "loss": test["loss"],
              "tokens": test["tokens"], "level": level, "vocab_size": len(vocab),
              "model": spec["model"], "rule": tc.rule, "wall_s": time.perf_counter() - t0,
              "history": history, "config": {"train": asdict(tc), "lm": asdict(cfg)}}
    if info.is_main:
        if not cfg.eval_only:
            atomic_torch_save({"format": 1, "model": {k: v.cpu() for k, v in
                                                      model.state_dict().items()},
                               "spec": spec, "vocab": vocab.state_dict(), "level": level},
                              out / "model.pt")
        write_json(result, out / "metrics.json")
        logging.info("test: bpc %.3f, ppl %.2f (%s level, %d tokens) in %.0f s", test["bpc"],
                     test["ppl"], level, test["tokens"], result["wall_s"])
    return result


if __name__ == "__main__":
    main()
