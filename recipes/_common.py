"""Helpers shared by the recipes: flags, models by name, in-memory windows, checkpoints, plots.

Symbols: N windows, T time steps, B batch, C input channels (spike afferents), H hidden
width, D model width, K classes (or labels).

Not a library module: recipes import it as ``_common`` (their own folder is on ``sys.path``
when run as scripts; tests put it there). Everything reusable beyond recipes lives in
:mod:`bimsnn`.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import snntorch as snn
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from bimsnn import _ddp
from bimsnn._ckpt import atomic_torch_save, load_checkpoint
from bimsnn._cli import add_dataclass_args
from bimsnn._report import save_figure
from bimsnn.baselines import CNN1d, LSTMClassifier
from bimsnn.neurons import Leaky
from bimsnn.ssm.mamba import MambaConfig, SpikingMambaNet
from bimsnn.train import TrainConfig, fit

REPO = Path(__file__).resolve().parent.parent
MODELS = ("spiking_mamba", "snn", "cnn", "lstm")
SPIKING = ("spiking_mamba", "snn")


def _f(default, help: str, choices: tuple | None = None):
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default),
                     metadata={"help": help, "choices": choices})
    return field(default=default, metadata={"help": help, "choices": choices})


def repo_path(path: str | Path | None, default: str) -> Path:
    """An explicit path as given (relative to the CWD), else ``default`` under the repo root."""
    return Path(path) if path else REPO / default


# ---------------------------------------------------------------- flags
def parse(*configs, argv: list[str] | None = None, description: str | None = None):
    """:func:`bimsnn.train.parse_config` plus ``--out`` as the flag for ``TrainConfig.out_dir``.

    Configs are dataclass *instances* (their values are the recipe's defaults); returns
    new instances in the same order. Bad values exit through ``parser.error``.
    """
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", dest="out_dir", default=argparse.SUPPRESS,
                        help="run folder (default: runs/<recipe> under the repo root)")
    for c in configs:
        add_dataclass_args(parser, c)
    given = vars(parser.parse_args(argv))
    out = []
    for c in configs:
        kw = {k: v for k, v in given.items() if k in {f.name for f in fields(c) if f.init}}
        try:
            out.append(replace(c, **kw))
        except (TypeError, ValueError) as e:
            parser.error(str(e))
    return tuple(out)


# ---------------------------------------------------------------- models by name
@dataclass
class ModelConfig:
    """Model knobs for every ``--model``; :func:`build_model` turns them into a model."""

    model: str = _f("spiking_mamba", "spiking_mamba | snn (Linear+Leaky) | cnn | lstm", MODELS)
    d_model: int = _f(16, "spiking_mamba width D; snn hidden width H")
    d_state: int = _f(8, "spiking_mamba SSM state size N")
    n_layers: int = _f(1, "spiking_mamba blocks / snn hidden layers")
    expand: int = _f(2, "spiking_mamba expansion E/D")
    beta: float = _f(0.9, "LIF membrane decay β")
    readout_beta: float = _f(0.9, "leaky-integrator readout decay")
    readout: str = _f("li", "spiking_mamba logits: li membrane, or its running mean (mean_mem)",
                      ("li", "mean_mem"))
    cnn_channels: list[int] = _f([16, 16, 16], "CNN1d widths (depth = how many)")
    lstm_hidden: int = _f(32, "LSTM hidden width")
    compare: str = _f("cnn,lstm", "baselines trained (BPTT) on the same split: comma list or none")
    compare_lr: float = _f(2e-3, "learning rate of the --compare baselines (also a good --lr "
                           "for --model cnn|lstm: 5e-3 stalls the CNN)")
    compare_epochs: int | None = _f(None, "epochs of the --compare baselines (none: --epochs)")

    @property
    def baselines(self) -> list[str]:
        names = [n.strip() for n in self.compare.split(",") if n.strip() not in ("", "none")]
        bad = [n for n in names if n not in MODELS]
        if bad:
            raise ValueError(f"--compare: unknown models {bad}; choose from {MODELS} or none")
        return [n for n in names if n != self.model]


class SpikingMLP(nn.Module):
    """``--model snn``: (Linear → bimsnn.Leaky) × L → Linear → non-spiking leaky integrator.

    The readout membrane is the logit (as in SpikingMambaNet's ``out_li``). Every Leaky
    runs per step in :meth:`step`, so the online rules see it through hooks.
    """

    def __init__(self, n_inputs: int, n_classes: int, hidden: int = 32, n_layers: int = 1,
                 beta: float = 0.9, readout_beta: float = 0.9):
        super().__init__()
        self.layers = nn.ModuleList()
        for i in range(n_layers):  # registration order fc, lif: the rules pair them
            self.layers.append(nn.ModuleDict({"fc": nn.Linear(n_inputs if i == 0 else hidden, hidden),
                                              "lif": Leaky(beta=beta)}))
        self.out_fc = nn.Linear(hidden, n_classes)
        self.out_li = Leaky(beta=readout_beta, reset_mechanism="none")
        self.hidden, self.n_classes = hidden, n_classes

    def init_state(self, batch_size: int, device=None, dtype=None) -> tuple[Tensor, ...]:
        """Membranes: one (B, H) per hidden layer, then the readout's (B, K)."""
        kw = {"device": device or self.out_fc.weight.device, "dtype": dtype or self.out_fc.weight.dtype}
        return (*(torch.zeros(batch_size, self.hidden, **kw) for _ in self.layers),
                torch.zeros(batch_size, self.n_classes, **kw))

    def step(self, x_t: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        """x_t (B, C) → logits_t (B, K), new state."""
        s, new = x_t, []
        for layer, mem in zip(self.layers, state):
            s, mem = layer["lif"](layer["fc"](s), mem)
            new.append(mem)
        _, mem = self.out_li(self.out_fc(s), state[-1])
        return mem, (*new, mem)

    def forward_seq(self, x: Tensor) -> Tensor:
        """Per-step logits (T, B, K) for x (T, B, C), through the fused multi-step LIF."""
        s = x
        for layer in self.layers:
            s, _ = layer["lif"].multi_step(layer["fc"](s))
        return self.out_li.multi_step(self.out_fc(s))[1]

    def forward(self, x: Tensor) -> Tensor:
        """Logits at the last step: x (T, B, C) → (B, K)."""
        return self.forward_seq(x)[-1]


def model_spec(mc: ModelConfig, name: str, n_inputs: int, n_classes: int) -> dict:
    """{"name", "kwargs"}: primitives only, so it travels in a ``weights_only`` checkpoint."""
    io = dict(n_inputs=n_inputs, n_classes=n_classes)
    kwargs = {"spiking_mamba": dict(d_model=mc.d_model, **io, n_layers=mc.n_layers,
                                    d_state=mc.d_state, expand=mc.expand, beta=mc.beta,
                                    readout_beta=mc.readout_beta, readout=mc.readout),
              "snn": dict(**io, hidden=mc.d_model, n_layers=mc.n_layers, beta=mc.beta,
                          readout_beta=mc.readout_beta),
              "cnn": dict(**io, channels=list(mc.cnn_channels)),
              "lstm": dict(**io, hidden=mc.lstm_hidden)}[name]
    return {"name": name, "kwargs": kwargs}


def build_model(spec: dict) -> nn.Module:
    """The model a :func:`model_spec` describes (freshly initialised from torch's RNG)."""
    kw = dict(spec["kwargs"])
    name = spec["name"]
    if name in SPIKING:
        model = SpikingMambaNet(MambaConfig(**kw)) if name == "spiking_mamba" else SpikingMLP(**kw)
        # The leaky-integrator readout sums its bias over ~1/(1−β) steps: a random bias
        # starts the logits ±2 apart and online training takes epochs to undo it.
        nn.init.zeros_(model.out_fc.bias)
        return model
    if name == "cnn":
        return CNN1d(kw.pop("n_inputs"), kw.pop("n_classes"), channels=tuple(kw.pop("channels")), **kw)
    if name == "lstm":
        return LSTMClassifier(**kw)
    raise ValueError(f"unknown model {name!r}; choose from {MODELS}")


# ---------------------------------------------------------------- data in memory
class WindowSet(Dataset):
    """Windows held in memory: ``ds[i] -> (x (T, C), label, meta)``.

    x is stored as uint8 spikes (ON/OFF in {0, 1}) or float; :func:`bimsnn.train.collate`
    turns non-float batches into float. Encoding once here, instead of in every
    ``__getitem__`` of every epoch, is what keeps the recipes' epochs cheap.
    """

    def __init__(self, x: Tensor, labels, metas: list[dict]):
        self.x, self.labels, self.metas = x, torch.as_tensor(np.asarray(labels)), metas

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], self.labels[i], self.metas[i]


def materialize(ds: Dataset, idx, encode=None, chunk: int = 2048) -> WindowSet:
    """Read ``ds[i]`` for i in ``idx`` (in that order) and encode them in chunks.

    Args:
        encode: time-major encoder ``(T, N, C) -> (T, N, C')`` (e.g. ADM), or None.
    Returns:
        a :class:`WindowSet` with x (N, T, C') uint8 when the encoder's output is binary.
    """
    xs, ys, metas = [], [], []
    for i in idx:
        x, y, m = ds[int(i)]
        xs.append(torch.as_tensor(x))
        ys.append(np.asarray(y))
        metas.append(m)
    if not xs:
        return WindowSet(torch.zeros(0), np.zeros(0, np.int64), [])
    parts = []
    for k in range(0, len(xs), chunk):
        x = torch.stack(xs[k:k + chunk], dim=1)  # (T, n, C)
        x = encode(x) if encode is not None else x
        binary = bool(((x == 0) | (x == 1)).all())
        parts.append(x.transpose(0, 1).to(torch.uint8 if binary else torch.float32))
    x = torch.cat(parts) if len({p.dtype for p in parts}) == 1 else torch.cat([p.float() for p in parts])
    return WindowSet(x, np.stack(ys), metas)


def class_weighted_ce(labels, n_classes: int):
    """Cross-entropy with weights N / (K · N_k) from the training labels (imbalance)."""
    counts = np.bincount(np.asarray(labels).astype(int), minlength=n_classes).astype(float)
    w = torch.tensor(len(labels) / (n_classes * np.maximum(counts, 1)), dtype=torch.float32)

    def loss(logits: Tensor, y: Tensor) -> Tensor:
        return nn.functional.cross_entropy(logits, y.long(), weight=w.to(logits.device))
    return loss


def f1_threshold(scores, labels) -> float:
    """The score threshold that maximises F1 on (validation) windows; 0.5 if undefined."""
    from sklearn.metrics import precision_recall_curve

    y = np.asarray(labels).astype(int)
    if y.min(initial=0) == y.max(initial=0):
        return 0.5
    prec, rec, th = precision_recall_curve(y, np.asarray(scores, dtype=np.float64))
    f1 = 2 * prec[:-1] * rec[:-1] / np.maximum(prec[:-1] + rec[:-1], 1e-12)
    return float(th[int(np.argmax(f1))])


# ---------------------------------------------------------------- training and checkpoints
def train_one(spec: dict, train: Dataset, val: Dataset, tc: TrainConfig, loss_fn=None
              ) -> tuple[nn.Module, list[dict], float]:
    """Seed, build, :func:`bimsnn.train.fit`; returns (model at its best epoch, history, s)."""
    if spec["name"] not in SPIKING and tc.rule != "bptt":
        print(f"{spec['name']} has no step(): trained with BPTT, not {tc.rule}")
        tc = replace(tc, rule="bptt")
    torch.manual_seed(tc.seed)
    model = build_model(spec)
    t0 = time.perf_counter()
    history = fit(model, train, val, tc, loss_fn=loss_fn)
    return model, history, time.perf_counter() - t0


def interrupted(tc: TrainConfig) -> bool:
    """True when ``fit`` stopped at ``--max-steps`` before its last epoch (resume later)."""
    ck = Path(tc.out_dir or "") / "ckpt.pt"
    if tc.max_steps is None or not ck.is_file():
        return False
    _ddp.barrier()  # rank 0 wrote it
    prog = load_checkpoint(ck)["progress"]
    return prog["epoch"] < tc.epochs and not prog["stopped"]


def save_model(path: Path, model: nn.Module, spec: dict, **extra) -> Path:
    """A deployable checkpoint: weights + what rebuilds the model and its input pipeline.

    Holds only tensors and primitives, so :func:`load_model` reads it ``weights_only``.
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return atomic_torch_save({"format": 1, "model": state, "spec": spec, **extra}, path)


def load_model(path: str | Path) -> tuple[nn.Module, dict]:
    """(model in eval mode, the whole checkpoint dict) from :func:`save_model`'s file."""
    ck = load_checkpoint(path)
    if "spec" not in ck:
        raise ValueError(f"{path}: not a recipe model checkpoint (no 'spec'); pass the "
                         "run's model.pt, not ckpt.pt/best.pt")
    model = build_model(ck["spec"])
    model.load_state_dict(ck["model"])
    return model.eval(), ck


# ---------------------------------------------------------------- spikes, figures, report
@torch.no_grad()
def hidden_spikes(model: nn.Module, x: Tensor) -> Tensor | None:
    """Hidden spikes (T, H) of every spiking Leaky (readouts with no reset excluded) for
    one window x (T, C), streamed through ``model.step``; None for non-spiking models."""
    if not callable(getattr(model, "step", None)):
        return None
    lifs = [m for m in model.modules() if isinstance(m, snn.Leaky) and m.reset_mechanism != "none"]
    rec: dict[int, list[Tensor]] = {id(m): [] for m in lifs}
    hooks = [m.register_forward_hook(lambda m, a, out: rec[id(m)].append(out[0][0].float()))
             for m in lifs]
    try:
        model.eval()
        state = model.init_state(1)
        for t in range(x.shape[0]):
            _, state = model.step(x[t:t + 1].float(), state)
    finally:
        for h in hooks:
            h.remove()
    return torch.cat([torch.stack(rec[id(m)]) for m in lifs], dim=-1)


def plot_rasters(panels: list[tuple[str, Tensor]], path: Path, title: str, dt: float) -> Path:
    """Stacked spike rasters sharing the time axis (seconds); ±1 spikes in two colours."""
    from matplotlib.figure import Figure

    heights = [max(1.0, min(4.0, 0.06 * p.shape[1])) for _, p in panels]
    fig = Figure(figsize=(9, 1.0 + sum(heights)), layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False, height_ratios=heights)[:, 0]
    for ax, (name, s) in zip(axes, panels):
        s = np.asarray(s.detach().cpu() if hasattr(s, "detach") else s)
        for sign, color in ((1, "k"), (-1, "C3")):
            t, c = np.nonzero(s * sign > 0)
            ax.scatter(t * dt, c, s=1.5, marker="|", color=color, linewidths=0.6)
        ax.set(ylabel=name, ylim=(-0.5, s.shape[1] - 0.5))
    axes[0].set_title(title, fontsize="medium")
    axes[-1].set(xlabel="time (s)", xlim=(0, panels[0][1].shape[0] * dt))
    return save_figure(fig, path)


def plot_roc_and_pr(curves: dict, out: Path, what: str) -> None:
    """roc.png and pr.png with one curve per entry of ``curves`` {name: (labels (N,) 0/1,
    scores (N,))}: models of one run, or the classes of one model. Skips one-class entries."""
    from matplotlib.figure import Figure
    from sklearn.metrics import (
        average_precision_score,
        precision_recall_curve,
        roc_auc_score,
        roc_curve,
    )

    for kind in ("roc", "pr"):
        fig = Figure(figsize=(4.8, 4.2), layout="constrained")
        ax = fig.subplots()
        for name, (y, s) in curves.items():
            y, s = np.asarray(y).astype(int), np.asarray(s, dtype=np.float64)
            if y.min() == y.max():
                continue
            if kind == "roc":
                (a, b, _), v = roc_curve(y, s), f"AUC {roc_auc_score(y, s):.3f}"
            else:
                (b, a, _), v = precision_recall_curve(y, s), f"AP {average_precision_score(y, s):.3f}"
            ax.plot(a, b, label=f"{name} ({v})")
        if kind == "roc":
            ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set(xlabel="false positive rate" if kind == "roc" else "recall",
               ylabel="true positive rate" if kind == "roc" else "precision",
               title=f"{kind.upper()}, {what}")
        if ax.lines:
            ax.legend(fontsize="small")
        save_figure(fig, out / f"{kind}.png")


def fmt(v, nd: int = 3) -> str:
    """Table cell: floats rounded, None/NaN as n/a."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows])


def config_dicts(**configs) -> dict:
    """{name: asdict(config)} for reports and checkpoints."""
    return {k: asdict(v) for k, v in configs.items()}
