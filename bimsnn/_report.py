"""Metrics (sklearn) and figures (matplotlib, Agg, no pyplot) for training reports.

Symbols: N samples, K classes (or labels), T time, C channels.

Score conventions (what :func:`bimsnn.train.evaluate` returns):
    binary      scores (N,) = P(positive),  labels (N,) in {0, 1}
    multiclass  scores (N, K) softmax,     labels (N,) int class ids
    multilabel  scores (N, K) sigmoid,     labels (N, K) multi-hot

Figures are drawn on a bare ``matplotlib.figure.Figure`` (no pyplot global state, the
Agg renderer is used for PNG) and written atomically.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from bimsnn._ckpt import atomic_write_bytes

NAN = float("nan")


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    """ROC-AUC, or NaN when only one class is present (sklearn would raise)."""
    return float(roc_auc_score(y, s)) if len(np.unique(y)) == 2 else NAN


def _ap(y: np.ndarray, s: np.ndarray) -> float:
    return float(average_precision_score(y, s)) if y.sum() > 0 else NAN


def compute_metrics(scores, labels, task: str, threshold: float = 0.5) -> dict:
    """Task metrics from scores and labels (shapes in the module docstring).

    Returns (all plain floats/ints/lists, JSON-ready):
        binary:     auc, ap, acc, f1, sensitivity, specificity, confusion [[tn, fp], [fn, tp]]
        multiclass: acc, macro_f1, confusion (K × K)
        multilabel: macro_auc and macro_ap over the labels that have both a positive and
                    a negative sample (n_scored of K; the usual PTB-XL practice),
                    macro_f1 at ``threshold``
    AUC/AP are NaN where undefined (one class only).
    """
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    out: dict = {"n": int(len(y))}
    if task == "binary":
        y = y.astype(int).reshape(-1)
        s = s.reshape(-1)
        pred = (s >= threshold).astype(int)
        tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel().tolist()
        out.update(auc=_auc(y, s), ap=_ap(y, s), acc=float(accuracy_score(y, pred)),
                   f1=float(f1_score(y, pred, zero_division=0)),
                   sensitivity=tp / (tp + fn) if tp + fn else NAN,
                   specificity=tn / (tn + fp) if tn + fp else NAN,
                   confusion=[[tn, fp], [fn, tp]], n_pos=int(y.sum()))
    elif task == "multiclass":
        y = y.astype(int).reshape(-1)
        pred = s.argmax(1)
        k = s.shape[1]
        out.update(acc=float(accuracy_score(y, pred)),
                   macro_f1=float(f1_score(y, pred, labels=list(range(k)), average="macro",
                                           zero_division=0)),
                   confusion=confusion_matrix(y, pred, labels=list(range(k))).tolist())
    elif task == "multilabel":
        y = y.astype(int)
        ok = [j for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
        aucs = [_auc(y[:, j], s[:, j]) for j in ok]
        aps = [_ap(y[:, j], s[:, j]) for j in ok]
        out.update(macro_auc=float(np.mean(aucs)) if ok else NAN,
                   macro_ap=float(np.mean(aps)) if ok else NAN,
                   macro_f1=float(f1_score(y, (s >= threshold).astype(int), average="macro",
                                           zero_division=0)),
                   n_scored=len(ok))
    else:
        raise ValueError(f"unknown task {task!r}")
    return out


# ---------------------------------------------------------------- figures
def _figure(w: float = 6.0, h: float = 4.0):
    from matplotlib.figure import Figure  # lazy: matplotlib import is slow
    return Figure(figsize=(w, h), layout="constrained")


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Render ``fig`` to PNG (or the suffix's format) and write it atomically."""
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", dpi=dpi)
    return atomic_write_bytes(path, buf.getvalue())


def plot_curves(history: Sequence[dict], path: str | Path, metric: str | None = None) -> Path:
    """Loss (train, val) and a validation metric against epoch, from ``fit``'s history."""
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


def _one_vs_rest(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """(N,) or (N, K) scores with (N,) / (N, K) labels → both as (N, K') columns."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    if s.ndim == 1:
        return s[:, None], y.reshape(-1, 1).astype(int)
    if y.ndim == 1:  # multiclass ids → one-hot
        y = np.eye(s.shape[1], dtype=int)[y.astype(int)]
    return s, y.astype(int)


def plot_roc_pr(scores, labels, path: str | Path, class_names: Sequence[str] | None = None
                ) -> Path:
    """ROC (left) and precision-recall (right) curves; one curve per class for (N, K)."""
    s, y = _one_vs_rest(scores, labels)
    fig = _figure(9, 4)
    ax_roc, ax_pr = fig.subplots(1, 2)
    for j in range(s.shape[1]):
        if not 0 < y[:, j].sum() < len(y):
            continue  # curve undefined without both classes
        name = class_names[j] if class_names else (None if s.shape[1] == 1 else str(j))
        fpr, tpr, _ = roc_curve(y[:, j], s[:, j])
        prec, rec, _ = precision_recall_curve(y[:, j], s[:, j])
        auc, ap = _auc(y[:, j], s[:, j]), _ap(y[:, j], s[:, j])
        prefix = f"{name}: " if name else ""
        ax_roc.plot(fpr, tpr, label=f"{prefix}AUC {auc:.3f}")
        ax_pr.plot(rec, prec, label=f"{prefix}AP {ap:.3f}")
    ax_roc.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax_pr.set(xlabel="recall", ylabel="precision", title="precision-recall")
    with warnings.catch_warnings():  # "no artists with labels" when every class was skipped
        warnings.simplefilter("ignore")
        for ax in (ax_roc, ax_pr):
            ax.legend(fontsize="small")
    return save_figure(fig, path)


def plot_confusion(cm, path: str | Path, class_names: Sequence[str] | None = None,
                   normalize: bool = False) -> Path:
    """Confusion matrix heat map (rows true, columns predicted), counts written in cells."""
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


def plot_raster(spikes, path: str | Path, title: str | None = None, dt: float = 1.0) -> Path:
    """Spike raster: spikes (T, C) or (T, B, C) (batch item 0). ±1 spikes get two colours.

    Args:
        dt: seconds (or any unit) per time step, for the x axis.
    """
    x = np.asarray(spikes.detach().cpu() if hasattr(spikes, "detach") else spikes)
    if x.ndim == 3:
        x = x[:, 0]
    if x.ndim != 2:
        raise ValueError(f"plot_raster: expected (T, C) or (T, B, C), got {x.shape}")
    fig = _figure(8, 0.5 + min(6, 0.15 * x.shape[1] + 1.5))
    ax = fig.subplots()
    for sign, color, name in ((1, "k", "on"), (-1, "C3", "off")):
        t, c = np.nonzero(x * sign > 0)
        if len(t):
            ax.scatter(t * dt, c, s=2, marker="|", color=color,
                       label=name if (x < 0).any() else None)
    ax.set(xlabel="time" if dt == 1.0 else "time (s)", ylabel="channel",
           title=title or "spike raster", xlim=(0, x.shape[0] * dt), ylim=(-0.5, x.shape[1] - 0.5))
    if (x < 0).any():
        ax.legend(loc="upper right", fontsize="small")
    return save_figure(fig, path)
