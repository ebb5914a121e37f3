"""The epoch loop behind :func:`bimsnn.training.fit` (one label per sequence or per step).

One function, :func:`run_epochs`, owns what both trainers must do identically: exact
resume (``ckpt.pt`` at every epoch end and at ``max_steps``, mid-epoch position included),
best-epoch tracking (``best.pt``), early stopping, the scheduler step, ``metrics.json``,
the progress bar and the final restore/plot. The caller supplies what differs: the update
of ``.grad`` on one batch (``loss_and_grads``) and the validation (``validate``).

Progress (:class:`Progress`, checkpointed as a plain dict in ``ckpt["progress"]``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from bimsnn.state import tree_map
from bimsnn.training import distributed as _ddp
from bimsnn.training.checkpoint import (
    atomic_torch_save,
    cpu_state_dict,
    load_checkpoint,
    restore_training_state,
    training_state,
    write_json,
)

log = logging.getLogger("bimsnn.training")


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


class _WeightEMA:
    """Exponential moving average of the floating-point parameters (Polyak averaging):
    after optimizer step t, ``avg ← avg + (1 − d_t)(w − avg)`` with d_t = min(decay,
    (1 + t)/(10 + t)), so early steps (far from the solution) fade quickly. ``swapped()``
    puts the average into the model for validation and best.pt, then the live weights back."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.params = {k: p for k, p in model.named_parameters() if p.is_floating_point()}
        self.avg = {k: p.detach().clone() for k, p in self.params.items()}

    @torch.no_grad()
    def update(self, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for k, p in self.params.items():
            self.avg[k].lerp_(p.detach(), 1 - d)

    @contextlib.contextmanager
    def swapped(self):
        live = {k: p.detach().clone() for k, p in self.params.items()}
        self.load_into_model()
        try:
            yield
        finally:
            with torch.no_grad():
                for k, p in self.params.items():
                    p.copy_(live[k])

    @torch.no_grad()
    def load_into_model(self) -> None:
        for k, p in self.params.items():
            p.copy_(self.avg[k])

    def state_dict(self) -> dict:
        return {k: v.detach().cpu().clone() for k, v in self.avg.items()}

    def load_state_dict(self, sd: dict) -> None:
        for k, v in self.avg.items():
            v.copy_(sd[k])


@dataclass
class Progress:
    """Where training stands; checkpointed as a dict (``weights_only``-safe primitives).

    ``loss_sum``/``count`` are the running train loss of the current epoch; ``best`` is the
    monitored value signed so that higher is better (``best_value`` as measured).
    """

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    loss_sum: float = 0.0
    count: int = 0
    best: float | None = None
    best_value: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    stopped: bool = False

    @classmethod
    def from_dict(cls, d: dict) -> Progress:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM arrived: the current batch was finished and, with an ``out_dir``, a
    mid-epoch ``ckpt.pt`` written that ``resume=True`` continues from exactly."""

    def __init__(self, signame: str, ckpt: Path | None):
        self.signame, self.ckpt = signame, ckpt
        where = f"checkpoint {ckpt}; continue with --resume" if ckpt else "no out_dir, nothing saved"
        super().__init__(f"interrupted by {signame} after a finished batch: {where}")


@contextlib.contextmanager
def _stop_signals():
    """Turn SIGINT/SIGTERM into a flag (``box[0]`` = the signal's name) for the duration,
    so the loop can end the batch and checkpoint; the old handlers come back on exit."""
    box: list[str | None] = [None]
    if threading.current_thread() is not threading.main_thread():
        yield box                                        # signals only reach the main thread
        return

    def on_signal(signum, frame):
        if box[0] is not None:                           # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        box[0] = signal.Signals(signum).name

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield box
    finally:
        for s, h in old.items():
            signal.signal(s, h)


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
    Raises:
        TrainingInterrupted: on SIGINT/SIGTERM, after the current batch and a checkpoint.
    """
    out = Path(cfg.out_dir) if cfg.out_dir else None
    prog = Progress()
    history: list[dict] = []
    best: list = [None]                  # the best epoch's weights (CPU), in a mutable box
    ema = _WeightEMA(model, cfg.ema) if getattr(cfg, "ema", None) else None
    if cfg.resume:
        if out is None:
            raise ValueError("resume=True needs out_dir")
        if (out / "ckpt.pt").exists():
            ck = load_checkpoint(out / "ckpt.pt")
            restore_training_state(ck, model, opt, scheduler, pruner, out / "ckpt.pt")
            prog = Progress.from_dict(ck["progress"])
            history = list(ck["history"])
            if ema is not None:
                if ck.get("ema") is None:
                    log.warning("%s has no weight average: it restarts from the weights",
                                out / "ckpt.pt")
                    ema = _WeightEMA(model, cfg.ema)
                else:
                    ema.load_state_dict(ck["ema"])
            if (out / "best.pt").exists():
                best[0] = load_checkpoint(out / "best.pt")["model"]
            log.info("resumed from %s at epoch %d, step %d", out / "ckpt.pt",
                     prog.epoch, prog.global_step)
        else:
            log.info("resume: no %s yet, starting fresh", out / "ckpt.pt")

    def save_ckpt() -> None:
        if out is not None and info.is_main:
            state = training_state(model, opt, scheduler, pruner, asdict(prog), history,
                                   asdict(cfg))
            state["ema"] = ema.state_dict() if ema is not None else None
            atomic_torch_save(state, out / "ckpt.pt")

    def interrupted() -> bool:
        return cfg.max_steps is not None and prog.global_step >= cfg.max_steps

    bar_on = cfg.progress and info.is_main and sys.stderr.isatty()
    with _stop_signals() as stop:
        while prog.epoch < cfg.epochs and not prog.stopped:
            if interrupted():
                return history
            e, t0 = prog.epoch, time.perf_counter()
            loader = _ddp.train_loader(train_ds, cfg.batch_size, cfg.seed, e,
                                       prog.step_in_epoch, collate_fn, cfg.num_workers)
            active = rule_factory(model) if rule_factory is not None else None
            model.train()
            try:
                bar = tqdm(data_errors(loader), total=prog.step_in_epoch + len(loader),
                           initial=prog.step_in_epoch, disable=not bar_on,
                           desc=f"epoch {e + 1}/{cfg.epochs}", leave=False)
                for x, target, _ in bar:
                    x, target = x.to(device), tree_map(lambda t: t.to(device), target)
                    loss = update(model, loss_and_grads, (active, x, target), opt, pruner,
                                  cfg.grad_clip)
                    prog.loss_sum += loss.item() * x.shape[1]
                    prog.count += x.shape[1]
                    prog.step_in_epoch += 1
                    prog.global_step += 1
                    if ema is not None:
                        ema.update(prog.global_step)
                    bar.set_postfix(loss=f"{loss.item():.4f}")
                    if interrupted():
                        save_ckpt()
                        return history
                    if _ddp.any_rank(stop[0] is not None, device):
                        save_ckpt()
                        raise TrainingInterrupted(stop[0] or "a signal on another rank",
                                                  out / "ckpt.pt" if out else None)
            finally:
                if active is not None:
                    active.remove()
            with ema.swapped() if ema is not None else contextlib.nullcontext():
                _end_epoch(model, cfg, prog, history, validate, monitor, higher_is_better,
                           opt, scheduler, device, info, out, t0, best)
            save_ckpt()
            if out is not None and info.is_main:
                write_json({"history": history, "best": {"metric": monitor,
                            "value": prog.best_value, "epoch": prog.best_epoch},
                            "global_step": prog.global_step, "world_size": info.world_size,
                            "config": asdict(cfg)}, out / "metrics.json")

    if cfg.restore_best and best[0] is not None:
        model.load_state_dict(best[0])
    elif ema is not None:                # no validation (or restore_best off): the average
        ema.load_into_model()
    if cfg.plots and out is not None and info.is_main and history:
        from bimsnn.plots import plot_curves

        plot_curves(history, out / "curves.png", monitor if validate is not None else None)
    return history


def _end_epoch(model, cfg, prog: Progress, history: list, validate, monitor: str,
               higher_is_better: bool, opt, scheduler, device, info, out: Path | None,
               t0: float, best_box: list) -> None:
    """Epoch end: the epoch's row (train loss over ranks, validation), best.pt, early
    stopping and the scheduler step; ``best_box[0]`` holds the best weights (CPU)."""
    loss_sum, count = _ddp.allreduce_sum([prog.loss_sum, prog.count], device)
    row = {"epoch": prog.epoch + 1, "train_loss": loss_sum / max(count, 1),
           "lr": opt.param_groups[0]["lr"]}
    _ddp.broadcast_module(model, params=False)  # buffers (running stats) may differ
    value = None
    if validate is not None:
        row.update(validate(model))
        value = row[f"val_{monitor}"]
        score = value if higher_is_better else -value
        score = score if math.isfinite(score) else -math.inf  # NaN never "improves"
        if prog.best is None or score > prog.best:
            prog.best, prog.best_value, prog.best_epoch, prog.bad_epochs = score, value, row["epoch"], 0
            best_box[0] = cpu_state_dict(model)
            if out is not None and info.is_main:
                atomic_torch_save({"model": best_box[0], "epoch": row["epoch"],
                                   "metric": monitor, "value": value, "config": asdict(cfg)},
                                  out / "best.pt")
        else:
            prog.bad_epochs += 1
            prog.stopped = 0 < cfg.patience <= prog.bad_epochs
    if scheduler is not None:
        plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        scheduler.step(value) if plateau else scheduler.step()
    row["seconds"] = time.perf_counter() - t0
    history.append(row)
    prog.epoch, prog.step_in_epoch, prog.loss_sum, prog.count = prog.epoch + 1, 0, 0.0, 0
    log.info("epoch %d: %s", row["epoch"], {k: round(v, 4) for k, v in row.items()
                                            if isinstance(v, float)})
