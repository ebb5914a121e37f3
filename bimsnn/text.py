"""Training of models with per-step outputs (:func:`fit_seq`, :func:`online_seq_loss`), and
text data re-exported from :mod:`bimsnn.data.text` (its home since issue 11; this module
keeps the old import path working).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
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
from bimsnn.data.text import (  # noqa: F401  (re-exported: old import path)
    EOS,
    LEVELS,
    SPLITS,
    UNK,
    LMWindows,
    Vocab,
    collate_lm,
    read_wikitext,
    tokenize,
    wikitext_paths,
    write_embedded_corpus,
)
from bimsnn.train import TrainConfig


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
