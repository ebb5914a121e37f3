"""Training configuration: one dataclass, every field a ``--flag`` (see :mod:`.cli`).

Training modes (``TrainConfig.rule``), per batch::

    bptt    ``logits = model(x)`` (B, K), one loss, ``loss.backward()`` through all of T.
    rtrl, hybrid
            online (bimsnn.training.online): the model runs chunk by chunk
            (``chunk`` = K steps through its fused kernels, eligibility traces across
            chunks) or, with ``chunk=None``, step by step; the state handed on is detached
            and the rule writes ``.grad`` (eq. 4, 7-8).
    stdp    online, unsupervised STDP (eq. 5) on every Linear→Leaky pair, plus the plain
            within-step gradient of the readout only (STDP carries no label signal).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

RULES = ("bptt", "rtrl", "stdp", "hybrid")
TASKS = ("binary", "multiclass", "multilabel")
METRICS = ("auto", "auc", "ap", "acc", "f1", "macro_f1", "macro_auc", "macro_ap", "loss")
AUTO_METRIC = {"binary": "auc", "multiclass": "acc", "multilabel": "macro_auc"}
METRICS_BY_TASK = {"binary": ("auc", "ap", "acc", "f1"), "multiclass": ("acc", "macro_f1"),
                   "multilabel": ("macro_auc", "macro_ap", "macro_f1")}


def flag(default: Any, help: str, choices: tuple | None = None):
    """A dataclass field that :func:`bimsnn.training.cli.parse_config` turns into a flag.

    Mutable defaults (lists, dicts) are copied per instance.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class C:
    ...     n: int = flag(3, "how many")
    >>> C().n
    3
    """
    meta = {"help": help, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def check_choices(cfg: Any) -> None:
    """Raise ValueError if a field with ``choices`` metadata holds another value."""
    for f in fields(cfg):
        ch = f.metadata.get("choices")
        if ch and getattr(cfg, f.name) not in ch:
            raise ValueError(f"{type(cfg).__name__}.{f.name} must be one of {ch}, "
                             f"got {getattr(cfg, f.name)!r}")


@dataclass
class TrainConfig:
    """Everything :func:`bimsnn.training.fit` needs; every field is a ``--flag``."""

    epochs: int = flag(10, "passes over the training set")
    batch_size: int = flag(32, "per process (the global batch is batch_size·world_size)")
    lr: float = flag(1e-3, "AdamW learning rate")
    weight_decay: float = flag(0.0, "AdamW weight decay")
    schedule: str = flag("constant", "learning rate over the epochs: constant, or cosine "
                         "decay to 5 % of --lr", ("constant", "cosine"))
    rule: str = flag("bptt", "learning rule (see bimsnn.training.config)", RULES)
    lam: float = flag(0.5, "Hybrid λ: grad = λ·∂L/∂w − (1−λ)·Ω")
    balance: str = flag("off", "Hybrid: λ as a share of the update: norm (STDP term scaled "
                        "to (1−λ)·‖∂L/∂w‖ per weight tensor and sequence), element (per "
                        "weight: at most (1−λ)/λ of its own gradient), off (eq. 4 literally)",
                        ("off", "norm", "element"))
    stdp_amp: float = flag(1e-2, "STDP / Hybrid: LTP amplitude A+ of eq. 6 (A− = 1.05·A+)")
    hybrid_grad: str = flag("rtrl", "Hybrid's gradient part: RTRL traces, or the plain "
                            "within-step gradient", ("rtrl", "autograd"))
    chunk: int | None = flag(None, "online rules: K steps per chunk (fused kernels inside, "
                             "eligibility traces across; 1 = per step, ≥ T = BPTT); none: "
                             "the per-step rules through model.step")
    x_proj_traces: bool = flag(True, "chunked RTRL/Hybrid: exact traces of the SSM's x_proj "
                               "(O(B·N·E²) each; off: within-chunk credit for those rows)")
    ema: float | None = flag(None, "decay of an exponential moving average of the weights "
                             "(Polyak averaging, e.g. 0.995): validation, best.pt and the "
                             "trained model use the average; none: off")
    prune: float | None = flag(None, "AdaptivePruning target sparsity ρ (none: no pruning)")
    prune_beta: float = flag(100.0, "AdaptivePruning β (1/weight units) of σ(β(θ − |w|))")
    prune_gamma: float = flag(0.01, "AdaptivePruning γ, threshold adaptation rate")
    loss_window: float = flag(1.0, "online rules: fraction (0, 1] of final steps given a loss")
    task: str = flag("multiclass", "sets loss, scores and metrics", TASKS)
    metric: str = flag("auto", "early-stopping metric; auto: auc/acc/macro_auc by task", METRICS)
    eval_readout: str = flag("auto", "eval logits: model(x), or the window mean of per-step",
                             ("auto", "forward", "window"))
    patience: int = flag(0, "stop after this many epochs without improvement (0: off)")
    restore_best: bool = flag(True, "load the best validation weights at the end")
    seed: int = flag(0, "torch seed; shuffling uses seed + epoch")
    out_dir: str | None = flag(None, "run folder: ckpt.pt, best.pt, metrics.json, curves.png")
    resume: bool = flag(False, "continue from out_dir/ckpt.pt when it exists")
    max_steps: int | None = flag(None, "stop, checkpointed, after this many optimizer steps")
    device: str = flag("auto", "auto: cuda when available", ("auto", "cpu", "cuda"))
    num_workers: int = flag(0, "DataLoader worker processes")
    grad_clip: float | None = flag(None, "max global grad norm (none: no clipping)")
    progress: bool = flag(True, "tqdm bars (only on a TTY, rank 0)")
    plots: bool = flag(True, "write curves.png at the end (rank 0, needs out_dir)")

    def __post_init__(self):
        if isinstance(self.balance, bool):          # the former on/off flag
            self.balance = "norm" if self.balance else "off"
        check_choices(self)
        if self.monitor != "loss" and self.monitor not in METRICS_BY_TASK[self.task]:
            raise ValueError(f"TrainConfig.metric {self.metric!r} is not computed for task "
                             f"{self.task!r}; use one of {METRICS_BY_TASK[self.task] + ('loss',)}")
        if not 0 < self.loss_window <= 1:
            raise ValueError(f"TrainConfig.loss_window must lie in (0, 1], got {self.loss_window}")
        if self.prune is not None and not 0 <= self.prune < 1:
            raise ValueError(f"TrainConfig.prune must lie in [0, 1) or be None, got {self.prune}")
        if self.ema is not None and not 0 < self.ema < 1:
            raise ValueError(f"TrainConfig.ema must lie in (0, 1) or be None, got {self.ema}")
        if self.ema is not None and self.prune is not None:
            raise ValueError("TrainConfig.ema and prune cannot be combined: the average of "
                             "pruned weights is not pruned")
        if not 0 <= self.lam <= 1:
            raise ValueError(f"TrainConfig.lam must lie in [0, 1], got {self.lam}")
        if self.epochs < 0 or self.batch_size < 1 or self.patience < 0:
            raise ValueError("TrainConfig needs epochs >= 0, batch_size >= 1, patience >= 0")
        if self.chunk is not None and self.chunk < 1:
            raise ValueError(f"TrainConfig.chunk must be >= 1 or None, got {self.chunk}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"TrainConfig.max_steps must be >= 1 or None, got {self.max_steps}")

    @property
    def monitor(self) -> str:
        """The early-stopping metric, ``auto`` resolved by task (higher is better but loss)."""
        return AUTO_METRIC[self.task] if self.metric == "auto" else self.metric
