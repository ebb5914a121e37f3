"""Character- and word-level language modelling with a spiking Mamba, against an LSTM.

    python recipes/language_modeling.py                          # embedded corpus, char level
    python recipes/language_modeling.py --compare smooth,lstm    # + the non-spiking twin
    python recipes/language_modeling.py --level word --epochs 3
    python recipes/language_modeling.py --data-dir /data/wikitext-103 --level char
    python recipes/language_modeling.py --model lstm --compare none  # the LSTM alone
    python recipes/language_modeling.py --rule hybrid --max-train-tokens 20000
    python recipes/language_modeling.py --eval-only --checkpoint runs/language_modeling/model.pt
    torchrun --nproc_per_node=2 recipes/language_modeling.py     # data parallel

Data: the WikiText-103 layout (``wiki.{train,valid,test}.tokens``). With no ``--data-dir``,
CPython's own ``pydoc_data.topics`` (≈480k characters of English documentation) is written
in that layout to ``<out>/corpus`` and used: no download. The vocabulary comes from the
training split (``<unk>`` for anything else).

Model (``--model mamba``): ids (T, B) → Embedding (E) → Linear + LIF (E → D spikes) →
``--n-layers`` SpikingMamba blocks → Linear (D → V) → per-step logits (T, B, V); the
Linear reads the last block's pre-LIF current (``--readout``); every window of
``--seq-len`` tokens starts from a zero state. ``--model smooth`` is its non-spiking twin
(each LIF passes its surrogate's smooth σ(U − U_thr), same parameters); ``--model lstm``
an LSTM whose hidden width (``--lstm-hidden``, default) matches the spiking model's
parameter count. ``--compare`` trains those baselines in the same run, with the same
TrainConfig (same epochs, batches, steps, learning rate), BPTT. Metrics on the test split
(and valid, per epoch): ``bpc`` (bits per character) and ``ppl`` (perplexity per token:
per character at ``--level char``, per word at ``word``); see :mod:`bimsnn.tasks.lm`.

Training: :func:`bimsnn.training.fit` with ``per_step=True``: BPTT, or any online
``--rule`` (the per-step errors of a first pass drive the rule step by step). Outputs in
``--out`` (default runs/language_modeling): metrics.json (``bpc``, ``ppl``,
``train_seconds``, ``peak_rss_mb``, ``comparison`` {model: bpc, ppl, params, seconds},
``bpc_ratio`` to each baseline), report.md (that table), curves.png, model.pt (weights +
vocabulary + spec; ``bimsnn.models.load``), ckpt.pt, best.pt (``--resume``),
compare/<model>/.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace

import torch

from bimsnn import models
from bimsnn.data import Vocab
from bimsnn.data.text import tokenize
from bimsnn.tasks import lm as task
from bimsnn.tasks.common import md_table, peak_rss_mb, run_dir, stopped_at_max_steps
from bimsnn.training import (
    RunConfig,
    TrainConfig,
    check_out_dir,
    distributed,
    flag,
    main_guard,
    parse_config,
    write_json,
)

MODELS = ("mamba", "smooth", "lstm")


@dataclass
class LMConfig(RunConfig):
    data_dir: str | None = flag(None, "WikiText-103 folder (none: the embedded pydoc corpus)")
    suffix: str = flag("tokens", "split files wiki.<split>.<suffix>", ("tokens", "raw"))
    level: str = flag("char", "token unit", ("char", "word"))
    model: str = flag("mamba", "spiking Mamba, its smooth twin, or the LSTM", MODELS)
    compare: str = flag("lstm", "baselines trained (BPTT) in the same run for the same "
                        "steps: comma list of smooth, lstm, or none")
    readout: str = flag("current", "what the logits read from the last spiking block",
                        ("current", "membrane", "spikes"))
    lstm_hidden: int | None = flag(None, "LSTM hidden width (none: the spiking model's "
                                   "parameter count)")
    seq_len: int = flag(64, "T, tokens per training/eval window")
    d_embed: int = flag(32, "E, embedding width")
    d_model: int = flag(96, "D, spiking Mamba width (LSTM hidden width)")
    n_layers: int = flag(1, "SpikingMamba blocks (LSTM layers)")
    d_state: int = flag(16, "SSM state size N")
    beta: float = flag(0.5, "LIF membrane decay of the spiking layers")
    min_count: int = flag(1, "keep training tokens seen at least this often (others <unk>)")
    max_vocab: int | None = flag(None, "cap on V (most frequent kept)")
    max_train_tokens: int | None = flag(None, "use only the first tokens of train (quick runs)")
    max_eval_tokens: int | None = flag(None, "use only the first tokens of valid/test")

    @property
    def baselines(self) -> list[str]:
        names = [n.strip() for n in self.compare.split(",") if n.strip() not in ("", "none")]
        bad = [n for n in names if n not in MODELS]
        if bad:
            raise ValueError(f"--compare: unknown models {bad}; choose from {MODELS} or none")
        return [n for n in names if n != self.model]

    def spec(self, model: str, vocab_size: int) -> dict:
        """The registry spec of ``model`` under these flags; the LSTM's width matches the
        spiking model's parameter count unless --lstm-hidden is given."""
        kw = dict(d_embed=self.d_embed, d_model=self.d_model, n_layers=self.n_layers,
                  d_state=self.d_state, beta=self.beta, readout_input=self.readout)
        hidden = self.lstm_hidden or task.lstm_hidden_for(
            task.n_params(task.lm_spec("mamba", vocab_size, **kw)), vocab_size, self.d_embed,
            self.n_layers)
        return task.lm_spec(model, vocab_size, **kw, lstm_hidden=hidden)


# lr 1e-2 (the best of 3e-3 / 6e-3 / 1e-2) and cosine decay (epoch 2 at ~½ lr): lower bpc
# for the spiking model and the LSTM alike (benchmarks/RESULTS.md, issue 13).
TRAIN = TrainConfig(epochs=2, batch_size=32, lr=1e-2, schedule="cosine", grad_clip=1.0,
                    hybrid_grad="autograd")


def main(argv: list[str] | None = None) -> dict:
    t_start = time.perf_counter()
    cfg, tc = parse_config(LMConfig(), TRAIN, argv=argv, description=__doc__)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(cfg.threads)
    dist, device = distributed.setup(tc.device)
    out = check_out_dir(run_dir(tc.out_dir, "language_modeling_eval" if cfg.eval_only
                                else "language_modeling"))
    tc = replace(tc, out_dir=str(out))
    if cfg.eval_only:  # vocabulary, level and window length as trained
        ck_path = cfg.checkpoint or run_dir(None, "language_modeling") / "model.pt"
        model, ck = models.load(ck_path)
        (vocab, level), spec = task.pre_from_checkpoint(ck, ck_path), ck["spec"]
        seq_len = ck["preprocessing"].get("seq_len", cfg.seq_len)
        tc = replace(tc, rule=ck.get("rule", "bptt"), out_dir=None)
    texts = task.load_corpus(cfg.data_dir, out / "corpus", cfg.suffix)
    if not cfg.eval_only:
        level, seq_len = cfg.level, cfg.seq_len
        vocab = Vocab.build(tokenize(texts["train"], level), cfg.min_count, cfg.max_vocab)
        spec = cfg.spec(cfg.model, len(vocab))
    data = task.windows(texts, vocab, level, seq_len, cfg.max_train_tokens, cfg.max_eval_tokens)
    char_len = task.chars_per_token(vocab, level)
    print(f"{level} level: V={len(vocab)}, windows of {seq_len} train/valid/test "
          f"{[len(d) for d in data.values()]}")
    history, secs = [], None
    if not cfg.eval_only:
        model, history, secs = task.train_lm(spec, data, tc, char_len)
        if stopped_at_max_steps(tc):
            print(f"stopped at --max-steps {tc.max_steps}; continue with --resume")
            return {"interrupted": True, "out": str(out)}
    model.to(device)
    test = task.lm_eval(model, data["test"], tc.batch_size, char_len)
    n_par = sum(p.numel() for p in model.parameters())
    rows = {cfg.model: _row(test, n_par, secs)}
    for name in [] if cfg.eval_only else cfg.baselines:   # same TrainConfig: same steps
        btc = replace(tc, rule="bptt", max_steps=None, out_dir=str(out / "compare" / name))
        bspec = cfg.spec(name, len(vocab))
        print(f"baseline {name} ({task.n_params(bspec)} parameters), same epochs and batches")
        bmodel, _, bsecs = task.train_lm(bspec, data, btc, char_len)
        btest = task.lm_eval(bmodel.to(device), data["test"], tc.batch_size, char_len)
        rows[name] = _row(btest, sum(p.numel() for p in bmodel.parameters()), bsecs)
    result = {"bpc": test["bpc"], "ppl": test["ppl"], "loss": test["loss"],
              "tokens": test["tokens"], "level": level, "vocab_size": len(vocab),
              "model": spec, "params": n_par, "rule": tc.rule, "train_seconds": secs,
              "comparison": rows, "bpc_ratio": {n: test["bpc"] / r["bpc"] for n, r in
                                                rows.items() if n != cfg.model},
              "peak_rss_mb": peak_rss_mb(), "wall_s": time.perf_counter() - t_start,
              "history": history, "checkpoint": str(ck_path) if cfg.eval_only else None,
              "config": {"recipe": asdict(cfg), "train": asdict(tc)}}
    if dist.is_main:
        if not cfg.eval_only:
            models.save(out / "model.pt", model, spec, recipe=task.RECIPE, rule=tc.rule,
                        preprocessing=task.lm_pre(vocab, level, seq_len),
                        train_config=asdict(tc))
        write_json(result, out / "metrics.json")
        table = md_table(["model", "test bpc", "ppl", "params", "train s"],
                         [[n, r["bpc"], r["ppl"], r["params"], r["train_seconds"]]
                          for n, r in rows.items()])
        ratios = "".join(f"; bpc ratio {cfg.model}/{n} {v:.3f}"
                         for n, v in result["bpc_ratio"].items())
        (out / "report.md").write_text(f"# Language modelling ({level} level, "
                                       f"{test['tokens']} test tokens)\n\n{table}\n")
        print(f"{table}\ntest: bpc {test['bpc']:.3f}, ppl {test['ppl']:.2f} ({level} level, "
              f"{test['tokens']} tokens){ratios}; {result['wall_s']:.0f} s; wrote {out}")
    return {**result, "out": str(out)}


def _row(test: dict, params: int, secs: float | None) -> dict:
    return {"bpc": test["bpc"], "ppl": test["ppl"], "params": params, "train_seconds": secs}


if __name__ == "__main__":
    main_guard(main)
