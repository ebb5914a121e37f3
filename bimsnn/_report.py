"""Moved to :mod:`bimsnn.metrics` and :mod:`bimsnn.plots`; this shim keeps the old import
path (and the two old plot signatures) working until the integration pass removes it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bimsnn.metrics import classification_metrics as compute_metrics
from bimsnn.metrics import one_vs_rest
from bimsnn.plots import plot_confusion, plot_curves, plot_rasters, save_figure
from bimsnn.plots import plot_roc_pr as _plot_roc_pr

__all__ = ["compute_metrics", "plot_confusion", "plot_curves", "plot_raster", "plot_roc_pr",
           "save_figure"]


def plot_roc_pr(scores, labels, path: str | Path, class_names: Sequence[str] | None = None
                ) -> Path:
    """Old signature: one-vs-rest curves of (N,) or (N, K) scores → :func:`bimsnn.plots.plot_roc_pr`."""
    s, y = one_vs_rest(scores, labels)
    names = list(class_names) if class_names else (
        [""] if s.shape[1] == 1 else [str(j) for j in range(s.shape[1])])
    return _plot_roc_pr({n: (y[:, j], s[:, j]) for j, n in enumerate(names)}, path)


def plot_raster(spikes, path: str | Path, title: str | None = None, dt: float = 1.0) -> Path:
    """Old signature: one raster → :func:`bimsnn.plots.plot_rasters`."""
    return plot_rasters([("channel", spikes)], path, title or "spike raster", dt)
