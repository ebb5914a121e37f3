"""The one fit/evaluate loop shared by every recipe.

Symbols: T time, B batch, C channels, K classes (or labels), W loss-window steps.

Data: a dataset item is ``(x (T, C), label, meta)``; :func:`collate` stacks a batch into
``x (T, B, C)`` (time-major), labels ``(B,)`` or multi-hot ``(B, K)``, and a list of metas.

Training modes (``TrainConfig.rule``), per batch:
    bptt    ``logits = model(x)`` (B, K), one loss, ``loss.backward()`` through all of T.
    rtrl, hybrid
            online (:mod:`bimsnn._online`): ``state = model.init_state(B)``; for each t,
            ``logits_t, state = model.step(x[t], state)``, the state handed on is
            detached, ``rule.backward(loss_t)`` backprops this step only. ``loss_t =
            loss(logits_t, y) / W`` on the last ``W = ceil(loss_window·T)`` steps, None
            before (traces still advance): the objective is the mean per-step loss over
            the window. Hybrid's float λ scales the gradient of *every* parameter, the
            readout's included (λ = 0 is STDP only, with no label signal).
    stdp    as online, but the rule gets ``backward(None)``: pure, unsupervised STDP on
            every Linear→Leaky pair it hooks (in SpikingMambaNet that includes out_fc →
            out_li). STDP carries no label signal, so the *readout* (``model.readout`` if
            it is a module, else the last ``nn.Linear``) also gets ∂loss_t/∂θ_readout,
            this step only (``autograd.grad`` restricted to it). Nothing else gets a
            gradient of the loss.
Then in every mode: average ``.grad`` over ranks → clip → ``optimizer.step()`` →
``pruner.step()``. Rule hooks exist only while training (removed for validation).

Evaluation readout (``eval_readout="auto"``): bptt scores ``model(x)``; online rules score
the mean of the per-step logits over the same last-W window (what their loss trained),
via ``model.forward_seq`` when the model has it, else the step loop.

Determinism and exact resume: fit seeds torch with ``seed`` on every rank; the epoch's
shuffle is ``DistributedSampler(seed=seed).set_epoch(epoch)`` (a function of two stored
integers, so no generator state needs saving) and the DataLoader's own generator (worker
seeds) is reseeded from ``seed + epoch`` (so it never draws from the global RNG). The
checkpoint stores model, optimizer, scheduler, pruner, torch RNG states, and the position
(epoch, batch in epoch); a resumed run replays the rest of the epoch and matches an
uninterrupted one exactly (on CPU; on GPU only as far as the kernels are deterministic).
Randomness drawn from numpy/``random`` inside datasets is not covered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from bimsnn import _ddp
from bimsnn._cli import add_dataclass_args, parse_config  # noqa: F401  (re-exported)
from bimsnn._loop import data_errors, run_epochs
from bimsnn._online import (  # noqa: F401  (make_rule, make_pruner re-exported)
    eval_logits,
    has_step,
    make_pruner,
    make_rule,
    online_loss,
    readout_params,
)
from bimsnn._report import (  # noqa: F401  (re-exported for recipes)
    compute_metrics,
    plot_confusion,
    plot_curves,
    plot_raster,
    plot_roc_pr,
)

log = logging.getLogger(__name__)

RULES = ("bptt", "rtrl", "stdp", "hybrid")
TASKS = ("binary", "multiclass", "multilabel")
METRICS = ("auto", "auc", "ap", "acc", "f1", "macro_f1", "macro_auc", "macro_ap", "loss")
_AUTO_METRIC = {"binary": "auc", "multiclass": "acc", "multilabel": "macro_auc"}
_METRICS_BY_TASK = {"binary": ("auc", "ap", "acc", "f1"), "multiclass": ("acc", "macro_f1"),
                    "multilabel": ("macro_auc", "macro_ap", "macro_f1")}


def _f(default, help: str, choices: tuple | None = None):
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class TrainConfig:
    """Everything :func:`fit` needs; every field is a ``--flag`` via :func:`parse_config`."""

    epochs: int = _f(10, "passes over the training set")
    batch_size: int = _f(32, "per process (the global batch is batch_size·world_size)")
    lr: float = _f(1e-3, "AdamW learning rate")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    rule: str = _f("bptt", "learning rule (see bimsnn.train's docstring)", RULES)
    lam: float = _f(0.5, "Hybrid λ: grad = λ·∂L/∂w − (1−λ)·Ω")
    balance: bool = _f(False, "Hybrid: STDP term scaled to (1−λ)·‖∂L/∂w‖ per weight and "
                       "sequence (λ a share of the update norm; see bimsnn.rules.hybrid)")
    prune: float | None = _f(None, "AdaptivePruning target sparsity ρ (none: no pruning)")
    prune_beta: float = _f(100.0, "AdaptivePruning β (1/weight units) of σ(β(θ − |w|))")
    prune_gamma: float = _f(0.01, "AdaptivePruning γ, threshold adaptation rate")
    loss_window: float = _f(1.0, "online rules: fraction (0, 1] of final steps given a loss")
    task: str = _f("multiclass", "sets loss, scores and metrics", TASKS)
    metric: str = _f("auto", "early-stopping metric; auto: auc/acc/macro_auc by task", METRICS)
    eval_readout: str = _f("auto", "eval logits: model(x), or the window mean of per-step",
                      ("auto", "forward", "window"))
    patience: int = _f(0, "stop after this many epochs without improvement (0: off)")
    restore_best: bool = _f(True, "load the best validation weights at the end")
    seed: int = _f(0, "torch seed; shuffling uses seed + epoch")
    out_dir: str | None = _f(None, "runs/<name>: ckpt.pt, best.pt, metrics.json, curves.png")
    resume: bool = _f(False, "continue from out_dir/ckpt.pt when it exists")
    max_steps: int | None = _f(None, "stop, checkpointed, after this many optimizer steps in all")
    device: str = _f("auto", "auto: cuda when available", ("auto", "cpu", "cuda"))
    num_workers: int = _f(0, "DataLoader worker processes")
    grad_clip: float | None = _f(None, "max global grad norm (none: no clipping)")
    progress: bool = _f(True, "tqdm bars (only on a TTY, rank 0)")
    plots: bool = _f(True, "write curves.png at the end (rank 0, needs out_dir)")

    def __post_init__(self):
        for f in fields(self):
            ch = f.metadata.get("choices")
            if ch and getattr(self, f.name) not in ch:
                raise ValueError(f"TrainConfig.{f.name} must be one of {ch}, "
                                 f"got {getattr(self, f.name)!r}")
        if self.monitor != "loss" and self.monitor not in _METRICS_BY_TASK[self.task]:
            raise ValueError(f"TrainConfig.metric {self.metric!r} is not computed for task "
                             f"{self.task!r}; use one of {_METRICS_BY_TASK[self.task] + ('loss',)}")
        if not 0 < self.loss_window <= 1:
            raise ValueError(f"TrainConfig.loss_window must lie in (0, 1], got {self.loss_window}")
        if self.prune is not None and not 0 <= self.prune < 1:
            raise ValueError(f"TrainConfig.prune must lie in [0, 1) or be None, got {self.prune}")
        if self.epochs < 0 or self.batch_size < 1 or self.patience < 0:
            raise ValueError("TrainConfig needs epochs >= 0, batch_size >= 1, patience >= 0")

    @property
    def monitor(self) -> str:
        """The early-stopping metric, ``auto`` resolved by task (higher is better but loss)."""
        return _AUTO_METRIC[self.task] if self.metric == "auto" else self.metric


# ---------------------------------------------------------------- data, loss, scores
def collate(batch: list[tuple]) -> tuple[Tensor, Tensor, list]:
    """Stack items ``(x (T, C), label, meta)`` into ``(x (T, B, C), labels, metas)``.

    Labels: ints → (B,) int64, floats → (B,) float, tensors → stacked (multi-hot (B, K)).
    Non-float x (bool/uint8 spikes) becomes the default float dtype. 2-tuples get meta None.
    """
    xs = [torch.as_tensor(item[0]) for item in batch]
    if len({x.shape for x in xs}) > 1:
        raise ValueError(f"collate: items differ in shape {sorted({tuple(x.shape) for x in xs})}; "
                         "cut windows to one length")
    x = torch.stack(xs, dim=1)  # (T, B, C)
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    y = torch.stack([torch.as_tensor(item[1]) for item in batch])
    return x, y, [item[2] if len(item) > 2 else None for item in batch]


def task_loss(logits: Tensor, y: Tensor, task: str) -> Tensor:
    """Mean loss of logits (B, K) against labels: cross-entropy (multiclass; binary with
    K = 2) or BCE-with-logits (multilabel; binary with K = 1)."""
    if task == "multilabel":
        return F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype))
    if task == "binary" and logits.shape[-1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], y.reshape(-1).to(logits.dtype))
    return F.cross_entropy(logits, y.long())


def task_scores(logits: Tensor, task: str) -> Tensor:
    """Logits (B, K) → binary P(positive) (B,), multiclass softmax / multilabel sigmoid (B, K)."""
    if task == "multiclass":
        return logits.softmax(-1)
    if task == "multilabel":
        return logits.sigmoid()
    return logits[:, 0].sigmoid() if logits.shape[-1] == 1 else logits.softmax(-1)[:, 1]


def _loss_and_grads(model, rule, x: Tensor, y: Tensor, cfg: TrainConfig, loss_fn,
                    head) -> Tensor:
    """Fill .grad for one batch x (T, B, C): BPTT through ``model(x)``, or the online rule
    step by step. Returns the loss."""
    if rule is None:
        loss = loss_fn(model(x), y)
        loss.backward()
        return loss
    return online_loss(model, rule, x, y, cfg.loss_window, loss_fn, head)


# ---------------------------------------------------------------- fit / evaluate
def fit(model: nn.Module, train_ds: Dataset, val_ds: Dataset | None = None,
        cfg: TrainConfig | None = None, *, rule: Callable[[nn.Module], Any] | None = None,
        optimizer: torch.optim.Optimizer | None = None, scheduler=None, pruner=None,
        loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
        collate_fn: Callable = collate) -> list[dict]:
    """Train ``model`` on ``train_ds``, validating on ``val_ds`` after each epoch.

    Args:
        model: ``forward(x (T, B, C)) -> logits (B, K)``; online rules also need
            ``init_state(B)`` and ``step(x_t (B, C), state) -> (logits_t (B, K), state)``.
        cfg: a :class:`TrainConfig` (defaults when None).
        rule: factory ``model -> Rule`` overriding :func:`make_rule` (hooks are attached
            for each epoch's training and removed before validation).
        optimizer / scheduler / pruner: default AdamW(lr, weight_decay) / none /
            :func:`make_pruner`. A scheduler steps once per epoch (ReduceLROnPlateau gets
            the monitored value). Their ``state_dict`` s are checkpointed.
        loss_fn: ``(logits, labels) -> scalar`` instead of :func:`task_loss`.
    Returns:
        history: one dict per epoch (epoch, train_loss, lr, val_loss, val_<metric>...,
        seconds). Ends early on patience or ``max_steps`` (then the model is left at that
        step; otherwise, with ``restore_best``, at the best validation epoch).
    Files (rank 0, when ``out_dir``): ckpt.pt (each epoch end and at ``max_steps``),
        best.pt (best validation epoch), metrics.json, curves.png; all written atomically.
    Under torchrun every rank calls ``fit``; see :mod:`bimsnn._ddp`.
    """
    cfg = cfg or TrainConfig()
    online = cfg.rule != "bptt"
    if online and not has_step(model):
        raise TypeError(f"rule={cfg.rule!r} trains step by step through model.init_state/"
                        f"model.step, which {type(model).__name__} lacks; use rule='bptt'")
    info, device = _ddp.setup(cfg.device)
    torch.manual_seed(cfg.seed)  # same seed on every rank → the same RNG stream
    if device.type == "cuda":
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    model.to(device)
    _ddp.broadcast_module(model)
    opt = optimizer or torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    own_pruner = pruner is None and cfg.prune is not None
    pruner = make_pruner(model, cfg) if own_pruner else pruner
    if pruner is not None and cfg.out_dir and not hasattr(pruner, "state_dict"):
        log.warning("%s has no state_dict(): a resumed run restarts its threshold and masks",
                    type(pruner).__name__)
    loss_fn = loss_fn or (lambda z, y: task_loss(z, y, cfg.task))
    head = readout_params(model) if cfg.rule == "stdp" else None

    def validate(m: nn.Module) -> dict:
        res = evaluate(m, val_ds, cfg, loss_fn=loss_fn, collate_fn=collate_fn)
        metrics = compute_metrics(res["scores"], res["labels"], cfg.task)
        return {"val_loss": res["loss"], **{f"val_{k}": v for k, v in metrics.items()
                                            if isinstance(v, (int, float))}}

    try:
        return run_epochs(
            model, train_ds, cfg,
            loss_and_grads=lambda rule_, x, y: _loss_and_grads(model, rule_, x, y, cfg,
                                                               loss_fn, head),
            rule_factory=(rule or (lambda m: make_rule(m, cfg))) if online else None,
            validate=validate if val_ds is not None else None, monitor=cfg.monitor,
            higher_is_better=cfg.monitor != "loss", opt=opt, scheduler=scheduler,
            pruner=pruner, collate_fn=collate_fn, device=device, info=info)
    finally:
        if own_pruner:
            pruner.remove()  # its gradient hooks; the weights stay pruned


@torch.no_grad()
def evaluate(model: nn.Module, ds: Dataset, cfg: TrainConfig, *,
             loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
             collate_fn: Callable = collate) -> dict:
    """Score every item of ``ds``, in dataset order.

    Under torchrun all ranks must call it: each scores items ``rank::world_size`` and the
    results are gathered, so every rank returns the full set.
    Returns:
        dict(scores: ndarray (N,) binary / (N, K), labels: ndarray (N,) / (N, K),
        metas: list of N, loss: mean loss). Feed to :func:`compute_metrics`.
    """
    info = _ddp.dist_info()
    device = next(model.parameters()).device
    loss_fn = loss_fn or (lambda z, y: task_loss(z, y, cfg.task))
    mode = cfg.eval_readout
    if mode == "auto":
        mode = "forward" if cfg.rule == "bptt" else "window"
    idx = list(range(info.rank, len(ds), info.world_size))  # this rank's shard, no padding
    loader = DataLoader(Subset(ds, idx), batch_size=cfg.batch_size, shuffle=False,
                        num_workers=cfg.num_workers, collate_fn=collate_fn)
    scores, labels, metas, loss_sum = [], [], [], 0.0
    was_training = model.training
    model.eval()
    try:
        for x, y, meta in data_errors(loader):
            x, y = x.to(device), y.to(device)
            z = eval_logits(model, x, mode, cfg.loss_window)
            loss_sum += loss_fn(z, y).item() * x.shape[1]
            scores.append(task_scores(z, cfg.task).float().cpu())
            labels.append(y.cpu())
            metas.extend(meta)
    finally:
        model.train(was_training)
    local = (idx, torch.cat(scores).numpy() if idx else None,
             torch.cat(labels).numpy() if idx else None, metas, loss_sum)
    parts = [p for p in _ddp.gather_objects(local) if p[0]]
    order = np.argsort(np.concatenate([p[0] for p in parts]), kind="stable")
    all_metas = [m for p in parts for m in p[3]]
    return {"scores": np.concatenate([p[1] for p in parts])[order],
            "labels": np.concatenate([p[2] for p in parts])[order],
            "metas": [all_metas[i] for i in order],
            "loss": sum(p[4] for p in parts) / max(len(ds), 1)}
