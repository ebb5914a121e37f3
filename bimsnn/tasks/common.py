"""What every task pipeline shares: model flags, training one model, run-report helpers.

Symbols: N items, T time steps, B batch, C input channels, D model width, K classes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from bimsnn import models
from bimsnn.analysis.rss import peak_rss_mib as peak_rss_mb  # noqa: F401  (recipes)
from bimsnn.paths import repo_root
from bimsnn.training import TrainConfig, distributed, fit, flag, load_checkpoint

MODELS = ("spiking_mamba", "snn", "cnn", "lstm")
SPIKING = ("spiking_mamba", "snn")


@dataclass
class ModelConfig:
    """Model flags of the classification recipes; :func:`model_spec` turns them into a spec."""

    model: str = flag("spiking_mamba", "spiking_mamba | snn (Linear+Leaky) | cnn | lstm", MODELS)
    d_model: int = flag(16, "spiking_mamba width D; snn hidden width H")
    d_state: int = flag(8, "spiking_mamba SSM state size N")
    n_layers: int = flag(1, "spiking_mamba blocks / snn hidden layers")
    expand: int = flag(2, "spiking_mamba expansion E/D")
    beta: float = flag(0.9, "LIF membrane decay β")
    readout_beta: float = flag(0.9, "leaky-integrator readout decay")
    readout: str = flag("li", "spiking_mamba logits: li membrane, or its running mean "
                        "(mean_mem)", ("li", "mean_mem"))
    cnn_channels: list[int] = flag([16, 16, 16], "CNN1d widths (depth = how many)")
    lstm_hidden: int = flag(32, "LSTM hidden width")
    compare: str = flag("cnn,lstm", "baselines trained (BPTT) on the same split: comma "
                        "list or none")
    compare_lr: float = flag(2e-3, "learning rate of the --compare baselines (also a good "
                             "--lr for --model cnn|lstm: 5e-3 stalls the CNN)")
    compare_epochs: int | None = flag(None, "epochs of the --compare baselines (none: --epochs)")

    @property
    def baselines(self) -> list[str]:
        names = [n.strip() for n in self.compare.split(",") if n.strip() not in ("", "none")]
        bad = [n for n in names if n not in MODELS]
        if bad:
            raise ValueError(f"--compare: unknown models {bad}; choose from {MODELS} or none")
        return [n for n in names if n != self.model]


def model_spec(mc: ModelConfig, name: str, n_inputs: int, n_classes: int) -> dict:
    """The registry spec (:func:`bimsnn.models.spec`) of model ``name`` under ``mc``."""
    io = dict(n_inputs=n_inputs, n_classes=n_classes)
    kwargs = {"spiking_mamba": dict(d_model=mc.d_model, **io, n_layers=mc.n_layers,
                                    d_state=mc.d_state, expand=mc.expand, beta=mc.beta,
                                    readout_beta=mc.readout_beta, readout=mc.readout),
              "snn": dict(**io, hidden=mc.d_model, n_layers=mc.n_layers, beta=mc.beta,
                          readout_beta=mc.readout_beta),
              "cnn": dict(**io, channels=list(mc.cnn_channels)),
              "lstm": dict(**io, hidden=mc.lstm_hidden)}[name]
    return models.spec(name, **kwargs)


def train_model(spec: dict, train: Dataset, val: Dataset | None, tc: TrainConfig,
                loss_fn=None, **fit_kw) -> tuple[nn.Module, list[dict], float]:
    """Seed, build, :func:`bimsnn.training.fit`; returns (model at its best epoch, history,
    training seconds). A model without ``step`` is trained with BPTT whatever ``tc.rule``."""
    if spec["name"] not in SPIKING and tc.rule != "bptt":
        print(f"{spec['name']} has no step(): trained with BPTT, not {tc.rule}")
        tc = replace(tc, rule="bptt")
    torch.manual_seed(tc.seed)
    model = models.build(spec)
    t0 = time.perf_counter()
    history = fit(model, train, val, tc, loss_fn=loss_fn, **fit_kw)
    return model, history, time.perf_counter() - t0


def stopped_at_max_steps(tc: TrainConfig) -> bool:
    """True when ``fit`` stopped at ``--max-steps`` before its last epoch (resume later)."""
    ck = Path(tc.out_dir or "") / "ckpt.pt"
    if tc.max_steps is None or not ck.is_file():
        return False
    distributed.barrier()  # rank 0 wrote it
    prog = load_checkpoint(ck)["progress"]
    return prog["epoch"] < tc.epochs and not prog["stopped"]


def run_dir(out: str | None, default: str) -> Path:
    """An explicit ``--out`` as given (relative to the CWD), else ``runs/<default>`` under
    the repository root."""
    return Path(out) if out else repo_root() / "runs" / default


def fmt(v, nd: int = 3) -> str:
    """Table cell: floats rounded, None/NaN as n/a."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def md_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table (cells through :func:`fmt`)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows])


def plot_roc_and_pr(curves: dict, out: Path, what: str) -> None:
    """``roc.png`` and ``pr.png`` in ``out``: one curve per entry {name: (labels, scores)}."""
    from bimsnn.plots import plot_roc_pr

    plot_roc_pr(curves, out / "roc.png", what, kinds=("roc",))
    plot_roc_pr(curves, out / "pr.png", what, kinds=("pr",))
