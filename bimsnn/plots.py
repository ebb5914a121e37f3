"""Figures for training reports: curves, ROC/PR, confusion matrix, spike rasters.

Symbols: N samples, K classes, T time steps, B batch, C channels.

Every figure is drawn on a bare ``matplotlib.figure.Figure`` (no pyplot global state; the
Agg renderer writes the PNG) and written atomically, so a crash never leaves half a file.
Each ``plot_*`` takes the output path and returns it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bimsnn.training.checkpoint import atomic_write_bytes

NAN = float("nan")


def _figure(w: float, h: float):
    from matplotlib.figure import Figure  # lazy: matplotlib import is slow

    return Figure(figsize=(w, h), layout="constrained")


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Render ``fig`` to PNG (or the suffix's format) and write it atomically."""
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", dpi=dpi)
    return atomic_write_bytes(path, buf.getvalue())


def _numpy(x) -> np.ndarray:
    return np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)


def plot_curves(history: Sequence[dict], path: str | Path, metric: str | None = None) -> Path:
    """Loss (train, val) and a validation metric against epoch, from ``fit``'s history
    (dicts with ``epoch``, ``train_loss``, ``val_loss``, ``val_<metric>``)."""
    fig = _figure(9, 3.5)
    ax1, ax2 = fig.subplots(1, 2)
    ep = [h["epoch"] for h in history]
    for key in ("train_loss", "val_loss"):
        ys = [h.get(key, NAN) for h in history]
        if any(math.isfinite(v) for v in ys):
            ax1.plot(ep, ys, marker="o", label=key)
    ax1.set(xlabel="epoch", ylabel="loss", title="loss")
    ax1.legend()
    if metric is not None:
        ax2.plot(ep, [h.get(f"val_{metric}", NAN) for h in history], marker="o", color="C2")
        ax2.set(xlabel="epoch", ylabel=metric, title=f"validation {metric}")
    return save_figure(fig, path)


def plot_roc_pr(curves: dict, path: str | Path, title: str = "",
                kinds: Sequence[str] = ("roc", "pr")) -> Path:
    """ROC and/or precision-recall curves, one panel per kind, one curve per entry.

    Args:
        curves: {name: (labels (N,) in {0, 1}, scores (N,))}: the models of one run, or
            the classes of one model (``dict(zip(names, zip(Y.T, S.T)))`` with
            :func:`bimsnn.metrics.one_vs_rest`). Entries with one class only are skipped.
            A name of "" labels the curve with its AUC/AP alone.
        title: appended to each panel's title ("ROC, <title>").
        kinds: ("roc", "pr"), ("roc",) or ("pr",).
    """
    from sklearn.metrics import (
        average_precision_score,
        precision_recall_curve,
        roc_auc_score,
        roc_curve,
    )

    bad = set(kinds) - {"roc", "pr"}
    if bad or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of ('roc', 'pr'), got {kinds}")
    fig = _figure(4.8 * len(kinds), 4.2)
    axes = np.atleast_1d(fig.subplots(1, len(kinds)))
    for ax, kind in zip(axes, kinds):
        for name, (y, s) in curves.items():
            y, s = _numpy(y).astype(int).reshape(-1), _numpy(s).astype(np.float64).reshape(-1)
            if y.min() == y.max():
                continue  # curve undefined without both classes
            if kind == "roc":
                (a, b, _), v = roc_curve(y, s), f"AUC {roc_auc_score(y, s):.3f}"
            else:
                (b, a, _), v = precision_recall_curve(y, s), f"AP {average_precision_score(y, s):.3f}"
            ax.plot(a, b, label=f"{name} ({v})" if name else v)
        if kind == "roc":
            ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set(xlabel="false positive rate" if kind == "roc" else "recall",
               ylabel="true positive rate" if kind == "roc" else "precision",
               title=f"{kind.upper()}, {title}" if title else kind.upper())
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    return save_figure(fig, path)


def plot_confusion(cm, path: str | Path, class_names: Sequence[str] | None = None,
                   normalize: bool = False) -> Path:
    """Confusion matrix (K, K) heat map (rows true, columns predicted), counts in cells;
    ``normalize``: each row divided by its sum (recall per class on the diagonal)."""
    cm = np.asarray(cm, dtype=np.float64)
    if normalize:
        cm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    k = cm.shape[0]
    names = list(class_names) if class_names else [str(i) for i in range(k)]
    fig = _figure(1.0 + 0.6 * k + 2, 0.6 * k + 2)
    ax = fig.subplots()
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax)
    ax.set(xticks=range(k), yticks=range(k), xticklabels=names, yticklabels=names,
           xlabel="predicted", ylabel="true", title="confusion matrix")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{cm[i, j]:.2f}" if normalize else f"{int(cm[i, j])}",
                    ha="center", va="center", fontsize="small",
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    return save_figure(fig, path)


def plot_rasters(panels: Sequence[tuple[str, object]], path: str | Path, title: str = "",
                 dt: float = 1.0) -> Path:
    """Stacked spike rasters sharing the time axis; ±1 spikes in two colours (black, red).

    Args:
        panels: [(name, spikes)], spikes (T, C) or (T, B, C) (batch item 0 is drawn),
            tensor or array; e.g. [("input", x), ("hidden LIF", hidden_spikes(model, x))].
        dt: seconds per step (1.0: the axis counts steps).
    """
    arrays = []
    for name, s in panels:
        s = _numpy(s)
        s = s[:, 0] if s.ndim == 3 else s
        if s.ndim != 2:
            raise ValueError(f"plot_rasters: panel {name!r} must be (T, C) or (T, B, C), "
                             f"got {s.shape}")
        arrays.append((name, s))
    if not arrays:
        raise ValueError("plot_rasters: no panels")
    heights = [max(1.0, min(4.0, 0.06 * s.shape[1])) for _, s in arrays]
    fig = _figure(9, 1.0 + sum(heights))
    axes = fig.subplots(len(arrays), 1, sharex=True, squeeze=False, height_ratios=heights)[:, 0]
    for ax, (name, s) in zip(axes, arrays):
        for sign, color in ((1, "k"), (-1, "C3")):
            t, c = np.nonzero(s * sign > 0)
            ax.scatter(t * dt, c, s=1.5, marker="|", color=color, linewidths=0.6)
        ax.set(ylabel=name, ylim=(-0.5, s.shape[1] - 0.5))
    if title:
        axes[0].set_title(title, fontsize="medium")
    axes[-1].set(xlabel="time step" if dt == 1.0 else "time (s)",
                 xlim=(0, arrays[0][1].shape[0] * dt))
    return save_figure(fig, path)
