"""Deprecated location: see :mod:`bimsnn.training` (shim for the migration)."""
from bimsnn._report import compute_metrics, plot_confusion, plot_curves, plot_raster, plot_roc_pr  # noqa: F401
from bimsnn.training.cli import add_dataclass_args, parse_config  # noqa: F401
from bimsnn.training.config import TrainConfig  # noqa: F401
from bimsnn.training.fit import collate, evaluate, fit, task_loss, task_scores  # noqa: F401
from bimsnn.training.online import make_pruner, make_rule  # noqa: F401
