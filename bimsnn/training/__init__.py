"""Training: one ``fit`` for every recipe, the online step loop, checkpoints, DDP, flags.

Modules: :mod:`.config` (TrainConfig), :mod:`.fit` (fit, evaluate), :mod:`.loop` (the
epoch loop: resume, best epoch, early stop, interrupts), :mod:`.online` (the per-step
loop of the online rules and its targets), :mod:`.checkpoint` (atomic writes, safe loads),
:mod:`.distributed` (torchrun, gloo/nccl), :mod:`.cli` (dataclass flags, recipe guard).
"""

from bimsnn.training.checkpoint import (
    CheckpointError,
    atomic_torch_save,
    atomic_write_bytes,
    load_checkpoint,
    write_json,
)
from bimsnn.training.cli import (
    RunConfig,
    RunError,
    check_out_dir,
    main_guard,
    parse_config,
    peek_flag,
)
from bimsnn.training.config import TrainConfig, flag
from bimsnn.training.fit import (
    class_weighted_ce,
    collate,
    evaluate,
    fit,
    task_loss,
    task_scores,
)
from bimsnn.training.loop import Progress, TrainingInterrupted
from bimsnn.training.online import (
    SequenceTarget,
    WindowTarget,
    make_pruner,
    make_rule,
    online_pass,
)

__all__ = [
    "CheckpointError", "Progress", "RunConfig", "RunError", "SequenceTarget", "TrainConfig",
    "TrainingInterrupted", "WindowTarget", "atomic_torch_save", "atomic_write_bytes",
    "check_out_dir", "class_weighted_ce", "collate", "evaluate", "fit", "flag",
    "load_checkpoint", "main_guard", "make_pruner", "make_rule", "online_pass",
    "parse_config", "peek_flag", "task_loss", "task_scores", "write_json",
]
