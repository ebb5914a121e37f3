"""The epoch loop shared by :func:`bimsnn.train.fit` and :func:`bimsnn.text.fit_seq`.

One function, :func:`run_epochs`, owns what both trainers must do identically: exact
resume (``ckpt.pt`` at every epoch end and at ``max_steps``, mid-epoch position included),
best-epoch tracking (``best.pt``), early stopping, the scheduler step, ``metrics.json``,
the progress bar and the final restore/plot. The caller supplies what differs: the update
of ``.grad`` on one batch (``loss_and_grads``) and the validation (``validate``).

Progress (checkpointed as ``ckpt["progress"]``): epoch, step_in_epoch, global_step,
loss_sum, count (the running train loss), best, best_value, best_epoch, bad_epochs, stopped.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from bimsnn import _ddp
from bimsnn._ckpt import (
    atomic_torch_save,
    cpu_state_dict,
    load_checkpoint,
    restore_training_state,
    training_state,
    write_json,
)
from bimsnn._online import tree_map
from bimsnn._report import plot_curves

log = logging.getLogger("bimsnn.train")


def data_errors(batches: Iterator) -> Iterator:
    """Re-raise a worker's ``DataError`` as ``DataError``: the DataLoader turns exceptions
    from worker processes into ``RuntimeError("Caught DataError in DataLoader worker...")``."""
    try:
        yield from batches
    except RuntimeError as e:
        if "Caught DataError" not in str(e):
            raise
        from bimsnn.data import DataError

        raise DataError(None, str(e)) from e


def update(model: nn.Module, fill_grads: Callable[..., Tensor], args: tuple,
           opt: torch.optim.Optimizer, pruner, grad_clip: float | None) -> Tensor:
    """One update: zero .grad → ``fill_grads(*args)`` (returns the loss) → average every .grad
    over ranks (whoever wrote it) → clip → optimizer step → pruner step (AdaptivePruning
    samples masks from its own seeded generator). Returns the loss, detached."""
    model.zero_grad(set_to_none=True)
    loss = fill_grads(*args)
    params = [p for p in model.parameters() if p.requires_grad]
    _ddp.allreduce_grads(params)
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()
    if pruner is not None:
        pruner.step()
    return loss.detach()


def run_epochs(model: nn.Module, train_ds: Dataset, cfg, *,
               loss_and_grads: Callable[[Any, Tensor, Any], Tensor],
               rule_factory: Callable[[nn.Module], Any] | None,
               validate: Callable[[nn.Module], dict] | None, monitor: str,
               higher_is_better: bool, opt: torch.optim.Optimizer, scheduler, pruner,
               collate_fn: Callable, device: torch.device, info) -> list[dict]:
    """Train for ``cfg.epochs`` (a TrainConfig), resuming from ``cfg.out_dir`` if asked.

    Args:
        loss_and_grads: ``(rule or None, x (T, B, ...), target) -> loss``: fill ``.grad``
            (BPTT backward, or the rule's per-step writes). :func:`update` then averages
            over ranks, clips, and steps the optimizer and the pruner.
        rule_factory: ``model -> Rule``, attached for each epoch's training and removed
            before validation; None for BPTT.
        validate: ``model -> {"val_<name>": value}`` after each epoch (every rank); the
            row key ``"val_" + monitor`` picks the best epoch (higher or lower is better).
    Returns:
        history: one dict per epoch (epoch, train_loss, lr, the validation keys, seconds).
    """
    out = Path(cfg.out_dir) if cfg.out_dir else None
    prog = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "loss_sum": 0.0, "count": 0,
            "best": None, "best_value": None, "best_epoch": None, "bad_epochs": 0,
            "stopped": False}
    history: list[dict] = []
    best_state = None
    if cfg.resume:
        if out is None:
            raise ValueError("resume=True needs out_dir")
        if (out / "ckpt.pt").exists():
            ck = load_checkpoint(out / "ckpt.pt")
            restore_training_state(ck, model, opt, scheduler, pruner)
            prog.update(ck["progress"])
            history = list(ck["history"])
            if (out / "best.pt").exists():
                best_state = load_checkpoint(out / "best.pt")["model"]
            log.info("resumed from %s at epoch %d, step %d", out / "ckpt.pt",
                     prog["epoch"], prog["global_step"])
        else:
            log.info("resume: no %s yet, starting fresh", out / "ckpt.pt")

    def save_ckpt() -> None:
        if out is not None and info.is_main:
            atomic_torch_save(training_state(model, opt, scheduler, pruner, prog, history,
                                             asdict(cfg)), out / "ckpt.pt")

    def interrupted() -> bool:
        return cfg.max_steps is not None and prog["global_step"] >= cfg.max_steps

    bar_on = cfg.progress and info.is_main and sys.stderr.isatty()
    while prog["epoch"] < cfg.epochs and not prog["stopped"]:
        if interrupted():
            return history
        e, t0 = prog["epoch"], time.perf_counter()
        loader = _ddp.train_loader(train_ds, cfg.batch_size, cfg.seed, e,
                                   prog["step_in_epoch"], collate_fn, cfg.num_workers)
        active = rule_factory(model) if rule_factory is not None else None
        model.train()
        try:
            bar = tqdm(data_errors(loader), total=prog["step_in_epoch"] + len(loader),
                       initial=prog["step_in_epoch"], disable=not bar_on,
                       desc=f"epoch {e + 1}/{cfg.epochs}", leave=False)
            for x, target, _ in bar:
                x, target = x.to(device), tree_map(lambda t: t.to(device), target)
                loss = update(model, loss_and_grads, (active, x, target), opt, pruner,
                              cfg.grad_clip)
                prog["loss_sum"] += loss.item() * x.shape[1]
                prog["count"] += x.shape[1]
                prog["step_in_epoch"] += 1
                prog["global_step"] += 1
                bar.set_postfix(loss=f"{loss.item():.4f}")
                if interrupted():
                    save_ckpt()
                    return history
        finally:
            if active is not None:
                active.remove()

        loss_sum, count = _ddp.allreduce_sum([prog["loss_sum"], prog["count"]], device)
        row = {"epoch": e + 1, "train_loss": loss_sum / max(count, 1),
               "lr": opt.param_groups[0]["lr"]}
        _ddp.broadcast_module(model, params=False)  # buffers (running stats) may differ
        value = None
        if validate is not None:
            row.update(validate(model))
            value = row[f"val_{monitor}"]
            score = value if higher_is_better else -value
            score = score if math.isfinite(score) else -math.inf  # NaN never "improves"
            if prog["best"] is None or score > prog["best"]:
                prog.update(best=score, best_value=value, best_epoch=e + 1, bad_epochs=0)
                best_state = cpu_state_dict(model)
                if out is not None and info.is_main:
                    atomic_torch_save({"model": best_state, "epoch": e + 1, "metric": monitor,
                                       "value": value, "config": asdict(cfg)},
                                      out / "best.pt")
            else:
                prog["bad_epochs"] += 1
                prog["stopped"] = 0 < cfg.patience <= prog["bad_epochs"]
        if scheduler is not None:
            plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
            scheduler.step(value) if plateau else scheduler.step()
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        prog.update(epoch=e + 1, step_in_epoch=0, loss_sum=0.0, count=0)
        save_ckpt()
        if out is not None and info.is_main:
            write_json({"history": history, "best": {"metric": monitor,
                        "value": prog["best_value"], "epoch": prog["best_epoch"]},
                        "global_step": prog["global_step"], "world_size": info.world_size,
                        "config": asdict(cfg)}, out / "metrics.json")
        log.info("epoch %d: %s", e + 1, {k: round(v, 4) for k, v in row.items()
                                         if isinstance(v, float)})

    if cfg.restore_best and best_state is not None:
        model.load_state_dict(best_state)
    if cfg.plots and out is not None and info.is_main and history:
        plot_curves(history, out / "curves.png", monitor if validate is not None else None)
    return history
