"""``fit`` and ``evaluate``: the one training entry point of every recipe.

Symbols: T time, B batch, C channels, K classes (or labels), V per-step output size.

Data: a dataset item is ``(x (T, C), target, meta)``; :func:`collate` stacks a batch into
``x (T, B, C)`` (time-major), labels ``(B,)`` or multi-hot ``(B, K)``, and a list of metas.
Two kinds of output:

* one label per sequence (default): ``model(x) -> logits (B, K)``, scored by
  :func:`evaluate` and :func:`bimsnn.metrics.compute_metrics`;
* per-step outputs (``per_step=True``): ``model.forward_seq(x) -> logits (T, B, V)``, a
  sequence loss (CTC, next-token) and the caller's ``validate``.

Both share one setup (:func:`_setup`) and one epoch loop (:func:`bimsnn.training.loop.run_epochs`).

Per batch, by ``TrainConfig.rule`` (see :mod:`bimsnn.training.config`): bptt backprops one
loss through all of T; rtrl / hybrid / stdp run :func:`bimsnn.training.online.online_pass`
with a :class:`~bimsnn.training.online.WindowTarget` (labels) or a
:class:`~bimsnn.training.online.SequenceTarget` (per-step outputs). Then in every mode:
average ``.grad`` over ranks → clip → ``optimizer.step()`` → ``pruner.step()``. Rule hooks
exist only while training (removed for validation).

Evaluation readout (``eval_readout="auto"``): bptt scores ``model(x)``; online rules score
the mean of the per-step logits over the same last-W window (what their loss trained).

Global state: ``fit`` runs inside ``torch.random.fork_rng`` seeded with ``cfg.seed``, and
restores the cuDNN flags it sets, so the caller's RNG stream and settings are as they were.
Threads are the caller's business (recipes set ``--threads``).

Determinism and exact resume: the epoch's shuffle is ``DistributedSampler(seed).set_epoch``
(a function of two stored integers) and the DataLoader's own generator is reseeded from
``seed + epoch``. The checkpoint stores model, optimizer, scheduler, pruner, torch RNG
states and the position (epoch, batch in epoch); a resumed run replays the rest of the
epoch and matches an uninterrupted one exactly (on CPU; on GPU as far as the kernels are
deterministic). Randomness drawn from numpy/``random`` inside datasets is not covered.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from bimsnn.training import distributed as _ddp
from bimsnn.training.config import TrainConfig
from bimsnn.training.loop import data_errors, run_epochs
from bimsnn.training.online import (
    SequenceTarget,
    WindowTarget,
    eval_logits,
    has_step,
    make_pruner,
    make_rule,
    online_pass,
    readout_params,
    seq_logits,
)

log = logging.getLogger(__name__)


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


def class_weighted_ce(labels, n_classes: int) -> Callable[[Tensor, Tensor], Tensor]:
    """Cross-entropy with class weights N / (K · N_k) from the training labels (imbalance)."""
    counts = np.bincount(np.asarray(labels).astype(int), minlength=n_classes).astype(float)
    w = torch.tensor(len(labels) / (n_classes * np.maximum(counts, 1)), dtype=torch.float32)

    def loss(logits: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(logits, y.long(), weight=w.to(logits.device))
    return loss


# ---------------------------------------------------------------- fit / evaluate
@contextlib.contextmanager
def _global_state(seed: int, device: torch.device):
    """Seed torch for this run and put the caller's RNG and cuDNN flags back afterwards."""
    cudnn = torch.backends.cudnn
    flags = (cudnn.deterministic, cudnn.benchmark)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)  # same seed on every rank → the same RNG stream
        if device.type == "cuda":
            cudnn.deterministic, cudnn.benchmark = True, False
        try:
            yield
        finally:
            cudnn.deterministic, cudnn.benchmark = flags


def fit(model: nn.Module, train_ds: Dataset, val_ds: Dataset | None = None,
        cfg: TrainConfig | None = None, *, loss_fn: Callable[[Tensor, Any], Tensor] | None = None,
        per_step: bool = False, validate: Callable[[nn.Module], dict] | None = None,
        monitor: str | None = None, higher_is_better: bool | None = None,
        rule: Callable[[nn.Module], Any] | None = None,
        optimizer: torch.optim.Optimizer | None = None, scheduler=None, pruner=None,
        collate_fn: Callable = collate) -> list[dict]:
    """Train ``model`` on ``train_ds``, validating after each epoch.

    Args:
        model: one label per sequence: ``forward(x (T, B, C)) -> logits (B, K)``; per-step
            outputs: ``forward_seq(x) -> logits (T, B, V)`` (or ``(logits, state)``). Online
            rules also need ``init_state(B)`` and ``step(x_t (B, C), state) -> (logits_t,
            state)``.
        cfg: a :class:`TrainConfig` (defaults when None).
        loss_fn: ``(logits (B, K), labels) -> scalar`` (default :func:`task_loss`), or with
            ``per_step`` ``(logits (T, B, V), target) -> scalar`` (required).
        per_step: the model's outputs are per step (CTC, language models).
        validate: ``model -> {name: value}`` after each epoch, on every rank (it shards and
            reduces itself). Default without ``per_step``: :func:`evaluate` on ``val_ds``
            and :func:`bimsnn.metrics.compute_metrics` (monitor ``cfg.monitor``).
        monitor / higher_is_better: the ``validate`` key that picks the best epoch (default
            ``cfg.monitor``; with ``per_step`` "loss"), and its direction (default: higher
            is better except for "loss").
        rule: factory ``model -> Rule`` overriding :func:`make_rule` (hooks are attached
            for each epoch's training and removed before validation).
        optimizer / scheduler / pruner: default AdamW(lr, weight_decay) / ``cfg.schedule``
            (none, or cosine decay over the epochs) / :func:`make_pruner`. A scheduler steps once per epoch (ReduceLROnPlateau gets
            the monitored value). Their ``state_dict`` s are checkpointed.
    Returns:
        history: one dict per epoch (epoch, train_loss, lr, val_<metric>..., seconds). Ends
        early on patience or ``max_steps`` (then the model is left at that step; otherwise,
        with ``restore_best``, at the best validation epoch).
    Raises:
        TrainingInterrupted: SIGINT/SIGTERM, after the current batch and a checkpoint.
    Files (rank 0, when ``out_dir``): ckpt.pt (each epoch end, at ``max_steps`` and on an
    interrupt), best.pt (best validation epoch), metrics.json, curves.png; all atomic.
    Under torchrun every rank calls ``fit``; see :mod:`bimsnn.training.distributed`.
    """
    cfg = cfg or TrainConfig()
    if per_step and loss_fn is None:
        raise TypeError("fit(per_step=True) needs loss_fn(logits (T, B, V), target)")
    online = cfg.rule != "bptt"
    if online and not has_step(model):
        raise TypeError(f"rule={cfg.rule!r} trains step by step through model.init_state/"
                        f"model.step, which {type(model).__name__} lacks; use rule='bptt'")
    if not per_step:
        loss_fn = loss_fn or (lambda z, y: task_loss(z, y, cfg.task))
        if validate is None and val_ds is not None:
            validate = _classification_validator(val_ds, cfg, loss_fn, collate_fn)
        monitor = monitor or cfg.monitor
    monitor = monitor or "loss"
    higher = monitor != "loss" if higher_is_better is None else higher_is_better
    info, device = _ddp.setup(cfg.device)
    head = readout_params(model) if cfg.rule == "stdp" else None

    def loss_and_grads(active, x: Tensor, target) -> Tensor:
        if active is None:
            z = seq_logits(model, x) if per_step else model(x)
            loss = loss_fn(z, target)
            loss.backward()
            return loss
        tgt = (SequenceTarget(target, loss_fn) if per_step
               else WindowTarget(target, loss_fn, cfg.loss_window))
        return online_pass(model, active, x, tgt, head)

    def val(m: nn.Module) -> dict:
        return {f"val_{k}": v for k, v in validate(m).items()}

    with _global_state(cfg.seed, device):
        model.to(device)
        _ddp.broadcast_module(model)
        opt = optimizer or torch.optim.AdamW(model.parameters(), lr=cfg.lr,
                                             weight_decay=cfg.weight_decay)
        if scheduler is None and cfg.schedule == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                opt, T_max=max(cfg.epochs, 1), eta_min=0.05 * opt.param_groups[0]["lr"])
        own_pruner = pruner is None and cfg.prune is not None
        pruner = make_pruner(model, cfg) if own_pruner else pruner
        if pruner is not None and cfg.out_dir and not hasattr(pruner, "state_dict"):
            log.warning("%s has no state_dict(): a resumed run restarts its threshold and "
                        "masks", type(pruner).__name__)
        try:
            return run_epochs(
                model, train_ds, cfg, loss_and_grads=loss_and_grads,
                rule_factory=(rule or (lambda m: make_rule(m, cfg))) if online else None,
                validate=val if validate is not None else None, monitor=monitor,
                higher_is_better=higher, opt=opt, scheduler=scheduler, pruner=pruner,
                collate_fn=collate_fn, device=device, info=info)
        finally:
            if own_pruner:
                pruner.remove()  # its gradient hooks; the weights stay pruned


def _classification_validator(val_ds: Dataset, cfg: TrainConfig, loss_fn, collate_fn):
    """``model -> {loss, <task metrics>}`` on ``val_ds`` (numbers only)."""
    from bimsnn.metrics import classification_metrics as compute_metrics

    def validate(m: nn.Module) -> dict:
        res = evaluate(m, val_ds, cfg, loss_fn=loss_fn, collate_fn=collate_fn)
        metrics = compute_metrics(res["scores"], res["labels"], cfg.task)
        return {"loss": res["loss"], **{k: v for k, v in metrics.items()
                                        if isinstance(v, (int, float))}}
    return validate


@torch.no_grad()
def evaluate(model: nn.Module, ds: Dataset, cfg: TrainConfig, *,
             loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
             collate_fn: Callable = collate) -> dict:
    """Score every item of ``ds``, in dataset order.

    Under torchrun all ranks must call it: each scores items ``rank::world_size`` and the
    results are gathered, so every rank returns the full set.

    Returns:
        dict with ``scores`` (ndarray (N,) binary / (N, K)), ``labels`` (ndarray (N,) /
        (N, K)), ``metas`` (list of N) and ``loss`` (mean loss). Feed to
        :func:`compute_metrics`.
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
