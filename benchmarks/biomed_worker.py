"""Data preparation and the training worker of ``benchmarks/biomed.py``.

Symbols: S samples (raw), T time steps (frames), B batch, C spike channels, K classes,
Nb filterbank bands, W loss/readout window steps.

Data are encoded once by the parent process into spike tensors (N, T, C) uint8 and saved
with the split indices; every (task, model, rule) then trains in a fresh subprocess that
loads that file (:func:`worker`), so that its memory figures are that training's own:
the kernel's peak-RSS mark is reset just before ``fit`` and read just after it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from functools import partial

import numpy as np
import torch
from torch import nn

from bimsnn import models
from bimsnn.analysis.rss import peak_rss_mib, proc_status_mib, reset_peak_rss
from bimsnn.data.windows import WindowSet, recording_split
from bimsnn.encoding import EEG_BANDS, FilterbankADMEncoder, MultiADMEncoder
from bimsnn.metrics import classification_metrics


def prepare_bonn(root, window_s: float, stride_s: float, seed: int) -> dict:
    """Bonn (80 segments per set here) → FilterbankADM spikes and a segment-grouped split.

    Split: :func:`recording_split` (20 % of segments to test, stratified by S / not S),
    then the same again inside the training part for a validation set (model selection
    by validation AUC). No segment has windows on two sides.
    """
    from bimsnn.data import Bonn

    # Band-pass 0.5–40 Hz via the loader (mne), native 173.61 Hz, µV kept (no z-scoring:
    # amplitude is informative and z-scoring per segment would discard it).
    ds = Bonn(root, window_s=window_s, stride_s=stride_s, l_freq=0.5, h_freq=40.0,
              normalize=None)
    enc = FilterbankADMEncoder(ds.sfreq)
    raw = torch.stack([ds[i][0] for i in range(len(ds))], dim=1)              # (S, N, 1) µV
    x = enc(raw).movedim(0, 1).to(torch.uint8)                                 # (N, T, C)
    tr, te = recording_split(ds, 0.2, seed)
    tr_in, va_in = recording_split(ds.meta.iloc[tr].reset_index(drop=True), 0.2, seed)
    return dict(x=x, y=torch.from_numpy(ds.labels.copy()), train=tr[tr_in], val=tr[va_in], test=te,
                group=ds.meta["seg_index"].to_numpy(), task="binary", classes=["not S", "S"],
                info=dict(fs=ds.sfreq, window_s=window_s, stride_s=stride_s,
                          bands=list(EEG_BANDS), hop_s=enc.hop / ds.sfreq, T=x.shape[1],
                          C=x.shape[2], n_windows=len(ds),
                          segments={k: int(len(np.unique(ds.meta['seg_index'].to_numpy()[v])))
                                    for k, v in (("train", tr[tr_in]), ("val", tr[va_in]),
                                                 ("test", te))},
                          spike_rate=float(x.float().mean())))


MITBIH_KEEP = ("N", "V", "F")


def prepare_mitbih(root, fs: int, window: tuple[float, float], train_end_s: float,
                   thetas) -> dict:
    """MIT-BIH 208 (first 20 min shared) → MultiADM spikes, split by time.

    Beats (AAMI classes, both leads MLII + V1, resampled to ``fs``) with R peak before
    ``train_end_s`` − post-window train, those after ``train_end_s`` + pre-window test (no
    sample on both sides). S and Q beats are dropped (counted in ``info``). No validation
    set: fixed epochs with a cosine learning-rate schedule; the epoch kept is the one with
    the best macro-F1 on the *training* beats (``Spec.select_on_train``).
    """
    from collections import Counter

    from bimsnn.data import MITBIH

    ds = MITBIH(root, records=["208"], classes="aami", window_s=window, lead=[0, 1], fs=fs,
                encoder=MultiADMEncoder(thetas))
    names = np.asarray(ds.classes)[ds.targets]
    t = ds.beat_sample / ds.fs
    keep = np.isin(names, MITBIH_KEEP)
    tr = np.flatnonzero(keep & (t + window[1] <= train_end_s))
    te = np.flatnonzero(keep & (t - window[0] >= train_end_s))
    lab = {c: k for k, c in enumerate(MITBIH_KEEP)}
    y = torch.as_tensor([lab.get(n, -1) for n in names])
    x = torch.stack([ds[i][0] for i in range(len(ds))]).to(torch.uint8)      # (N, T, C)
    return dict(x=x, y=y, train=tr, val=None, test=te, group=None, task="multiclass",
                classes=list(MITBIH_KEEP),
                info=dict(fs=ds.fs, window_s=list(window), thetas=list(thetas), T=x.shape[1],
                          C=x.shape[2], all_beats=dict(Counter(names.tolist())),
                          dropped_non_beat=dict(ds.dropped_symbols),
                          dropped_edge=dict(ds.edge_dropped),
                          dropped_SQ=int((~keep).sum()),
                          gap_beats=int(keep.sum() - len(tr) - len(te)),
                          train=dict(Counter(names[tr].tolist())),
                          test=dict(Counter(names[te].tolist())),
                          spike_rate=float(x.float().mean())))


# --------------------------------------------------------------------------- models
@dataclass
class Spec:
    """One training run (a subprocess)."""

    task: str
    model: str             # mamba | cnn | lstm
    rule: str              # bptt | rtrl | hybrid
    data: str              # path of the prepared .pt
    epochs: int
    lr: float
    batch_size: int
    d_model: int = 32
    d_state: int = 8
    n_layers: int = 1
    readout_beta: float = 0.9
    loss_window: float = 0.5
    lam: float = 0.9
    stdp_readout: bool = False  # Hybrid: also apply STDP / λ to the readout out_fc→out_li
    stdp_amp: float = 1e-4      # Hybrid: STDP A+ (A− = 1.05·A+; bimsnn's default is 1e-2)
    select_on_train: bool = False  # no val set: keep the epoch with the best train metric
    weight_decay: float = 1e-4
    grad_clip: float | None = 1.0
    seed: int = 0
    threads: int = 2


def build_model(spec: Spec, C: int, K: int, T: int) -> nn.Module:
    """The benchmark's models from the library registry. SpikingMambaNet's logits are the
    mean of its per-step readout over the last W steps (``window``), for BPTT and online
    alike; its readout bias keeps nn.Linear's random init (``zero_readout_bias=False``), as
    when these figures were first measured."""
    n_out = 2 if K == 2 else K
    io = dict(n_inputs=C, n_classes=n_out)
    if spec.model == "cnn":
        return models.build(models.spec("cnn", **io, channels=[32, 32, 32], kernel_size=5))
    if spec.model == "lstm":
        return models.build(models.spec("lstm", **io, hidden=64))
    W = max(1, min(T, math.ceil(round(spec.loss_window * T, 6))))
    return models.build(models.spec(
        "spiking_mamba", **io, d_model=spec.d_model, n_layers=spec.n_layers,
        d_state=spec.d_state, readout_beta=spec.readout_beta, window=W,
        zero_readout_bias=False))


def hybrid_all(model: nn.Module, lam: float, amp: float = 1e-2):
    """Hybrid with one λ for every parameter (eq. 4 literally), STDP amplitude ``amp``."""
    from bimsnn.rules import STDP, Hybrid

    return Hybrid(model, lam=lam, stdp=STDP(A_plus=amp, A_minus=1.05 * amp))


def hybrid_hidden_only(model: nn.Module, lam: float, amp: float = 1e-2):
    """Hybrid with λ (and so STDP, weight 1 − λ) on the hidden spiking pairs only
    (in_fc→in_lif, each block's out_proj→lif); every other parameter, the readout
    out_fc→out_li included, gets the plain online gradient (λ = 1). STDP on the
    non-spiking readout integrator would only blur the class evidence."""
    from bimsnn.rules import STDP, Hybrid

    lams = {model.in_fc: lam, **{b.out_proj: lam for b in model.blocks}}
    return Hybrid(model, lam=lams, stdp=STDP(A_plus=amp, A_minus=1.05 * amp))


# --------------------------------------------------------------------------- worker
_INDEX_KEYS = ("train", "val", "test", "group")


def to_payload(data: dict) -> dict:
    """What a worker needs of ``prepare_*``'s dict, as tensors, strings and lists, so that
    it loads with ``torch.load(..., weights_only=True)`` (the index arrays become tensors;
    ``info`` stays with the parent)."""
    return {k: (torch.from_numpy(np.array(v)) if k in _INDEX_KEYS and v is not None else v)
            for k, v in data.items() if k != "info"}


def from_payload(d: dict) -> dict:
    """Inverse of :func:`to_payload` (index tensors back to numpy arrays)."""
    return {k: (v.numpy() if k in _INDEX_KEYS and v is not None else v) for k, v in d.items()}


def worker(spec: Spec) -> dict:
    """Train and test one configuration; returns metrics, wall time and peak memory."""
    import torch.nn.functional as F
    from torch.utils.data import Subset

    from bimsnn.training import TrainConfig, evaluate, fit

    torch.set_num_threads(spec.threads)
    np.random.seed(spec.seed)
    torch.manual_seed(spec.seed)
    d = from_payload(torch.load(spec.data, weights_only=True))
    N, T, C = d["x"].shape
    K = len(d["classes"])
    windows = WindowSet(d["x"], d["y"])
    train = Subset(windows, d["train"])
    val = Subset(windows, d["val"]) if d["val"] is not None else None
    test = Subset(windows, d["test"])
    if val is None and spec.select_on_train:
        val = train  # model selection on training data only (the test period stays unseen)
    # Balanced class weights (inverse frequency, mean 1) from the training labels.
    counts = np.bincount(d["y"][d["train"]].numpy(), minlength=K).astype(float)
    w = torch.tensor(counts.sum() / (K * np.maximum(counts, 1)), dtype=torch.float32)

    def loss_fn(z, y):
        return F.cross_entropy(z, y.long(), weight=w)

    torch.manual_seed(spec.seed)
    model = build_model(spec, C, K, T)
    cfg = TrainConfig(epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr,
                      weight_decay=spec.weight_decay, rule=spec.rule, lam=spec.lam,
                      loss_window=spec.loss_window, task=d["task"], seed=spec.seed,
                      device="cpu", grad_clip=spec.grad_clip, progress=False, plots=False,
                      eval_readout="forward", restore_best=val is not None,
                      metric="macro_f1" if d["task"] == "multiclass" else "auto")
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(spec.epochs, 1),
                                                       eta_min=spec.lr * 0.05)
    rule = None
    if spec.rule == "hybrid" and not spec.stdp_readout:
        rule = partial(hybrid_hidden_only, lam=spec.lam, amp=spec.stdp_amp)
    elif spec.rule == "hybrid":
        rule = partial(hybrid_all, lam=spec.lam, amp=spec.stdp_amp)
    rss0 = reset_peak_rss()  # VmHWM now restarts from the current RSS
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    hist = fit(model, train, val, cfg, rule=rule, optimizer=opt, scheduler=sched,
               loss_fn=loss_fn)
    train_s = time.perf_counter() - t0
    train_cpu_s = time.process_time() - cpu0
    fit_peak = proc_status_mib("VmHWM") if rss0 is not None else None
    t1 = time.perf_counter()
    res = evaluate(model, test, cfg, loss_fn=loss_fn)
    test_s = time.perf_counter() - t1
    y = res["labels"].astype(int)
    group = None if d["group"] is None else d["group"][d["test"]]
    m = classification_metrics(res["scores"], y, d["task"], group=group)
    monitor = f"val_{cfg.monitor}"
    return dict(spec=asdict(spec), metrics=m, train_s=train_s, train_cpu_s=train_cpu_s,
                test_s=test_s,
                maxrss_mib=peak_rss_mib(), fit_peak_rss_mib=fit_peak, fit_start_rss_mib=rss0,
                fit_delta_rss_mib=None if fit_peak is None else fit_peak - rss0,
                params=sum(p.numel() for p in model.parameters()),
                epochs_run=len(hist),
                best_val=max((h.get(monitor, float("nan")) for h in hist), default=None),
                history=[{k: v for k, v in h.items() if isinstance(v, (int, float))}
                         for h in hist])


def main_worker(spec_json: str, out_json: str) -> None:
    res = worker(Spec(**json.loads(spec_json)))
    with open(out_json, "w") as f:
        json.dump(res, f)
