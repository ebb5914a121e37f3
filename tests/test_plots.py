"""bimsnn.plots: every function writes a non-empty PNG atomically, without pyplot state.

Symbols: N samples, K classes, T time, B batch, C channels.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch

from bimsnn import plots
from bimsnn.metrics import one_vs_rest

PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    data = path.read_bytes()
    return data[:8] == PNG and len(data) > 1000


def _pyplot_figures() -> set:
    plt = sys.modules.get("matplotlib.pyplot")  # only if something imported pyplot
    return set(plt.get_fignums()) if plt is not None else set()


@pytest.fixture(autouse=True)
def _no_pyplot_figures():
    """bimsnn.plots opens no pyplot figure (another test's open figures do not count)."""
    before = _pyplot_figures()
    yield
    assert _pyplot_figures() - before == set()


def test_roc_pr_panels_and_files(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    curves = {"mamba": (y, rng.random(60) + 0.5 * y), "cnn": (torch.tensor(y), rng.random(60))}
    both = plots.plot_roc_pr(curves, tmp_path / "both.png", "test")
    roc = plots.plot_roc_pr(curves, tmp_path / "roc.png", "test", kinds=("roc",))
    pr = plots.plot_roc_pr(curves, tmp_path / "pr.png", kinds=("pr",))
    assert all(_is_png(p) for p in (both, roc, pr))
    assert both.stat().st_size > roc.stat().st_size           # two panels, not one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["both.png", "pr.png", "roc.png"]
    with pytest.raises(ValueError, match="kinds"):
        plots.plot_roc_pr(curves, tmp_path / "x.png", kinds=("det",))


def test_roc_pr_per_class_skips_one_class_entries_quietly(tmp_path):
    rng = np.random.default_rng(1)
    s, y = one_vs_rest(rng.random((40, 3)), np.r_[np.zeros(20), np.ones(20)].astype(int))
    curves = {c: (y[:, k], s[:, k]) for k, c in enumerate(["a", "b", "c"])}  # "c": no positive
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _is_png(plots.plot_roc_pr(curves, tmp_path / "cls.png", "one-vs-rest"))
        assert _is_png(plots.plot_roc_pr({"": (np.ones(5), np.random.rand(5))},
                                         tmp_path / "none.png"))  # nothing drawable


def test_confusion_and_curves(tmp_path):
    assert _is_png(plots.plot_confusion([[5, 1], [2, 7]], tmp_path / "cm.png", ["a", "b"]))
    assert _is_png(plots.plot_confusion(np.eye(4) * 3 + 1, tmp_path / "cmn.png", normalize=True))
    hist = [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.1, "val_auc": 0.6},
            {"epoch": 2, "train_loss": 0.5, "val_loss": 0.9, "val_auc": 0.7}]
    assert _is_png(plots.plot_curves(hist, tmp_path / "c.png", "auc"))
    assert _is_png(plots.plot_curves(hist[:1], tmp_path / "c1.png"))


def test_rasters(tmp_path):
    rng = np.random.default_rng(2)
    x = torch.tensor(rng.choice([-1, 0, 1], (50, 2, 6)))       # (T, B, C) ON/OFF
    hidden = rng.random((50, 20)) < 0.1                         # (T, H) numpy bool
    p = plots.plot_rasters([("input", x), ("hidden", hidden)], tmp_path / "r.png",
                           "a window", dt=1 / 32)
    assert _is_png(p)
    assert _is_png(plots.plot_rasters([("x", x[:, 0])], tmp_path / "r1.png"))
    with pytest.raises(ValueError, match="panel 'bad'"):
        plots.plot_rasters([("bad", np.zeros(5))], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="no panels"):
        plots.plot_rasters([], tmp_path / "none.png")


def test_save_figure_is_atomic(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure()
    fig.subplots().plot([0, 1], [1, 0])
    out = plots.save_figure(fig, tmp_path / "sub" / "f.png")
    assert _is_png(out) and [p.name for p in out.parent.iterdir()] == ["f.png"]
    assert plots.save_figure(fig, tmp_path / "f.svg").read_bytes().lstrip().startswith(b"<?xml")

