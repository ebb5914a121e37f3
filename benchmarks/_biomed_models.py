"""Encoders, data preparation, models and the training worker of ``benchmarks/biomed.py``.

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
import resource
import time
from dataclasses import asdict, dataclass
from functools import partial

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from bimsnn.encoding import adm

# --------------------------------------------------------------------------- encoders
BONN_BANDS = ((0.5, 4.0), (4.0, 8.0), (8.0, 13.0), (13.0, 20.0), (20.0, 30.0), (30.0, 40.0))


class FilterbankADM(nn.Module):
    """EEG (S, C) µV → Nb-band log-envelope → ADM spikes (T, 2·C·Nb), ON then OFF.

    Per band: zero-phase Butterworth band-pass (``sosfiltfilt`` on the window), envelope
    = RMS over ``env_s`` centred on each frame, sampled every ``hop_s`` (T = ⌊S / hop⌋
    frames), ``log10`` (µV), then :func:`bimsnn.encoding.adm` with threshold ``theta``
    (decades) and reference starting at ``floor`` (log10 µV). Starting from a fixed floor
    (not x_0) makes the first steps an ON burst whose length codes the band's absolute
    level (ADM slope overload, ≤ 1 spike/step); afterwards the channel tracks changes.
    Sum(ON − OFF)·θ recovers the final level, ON + OFF its total variation.
    """

    def __init__(self, fs: float, bands=BONN_BANDS, hop_s: float = 0.125, env_s: float = 0.5,
                 theta: float = 0.15, floor: float = 0.5, order: int = 4):
        super().__init__()
        from scipy.signal import butter

        self.fs, self.bands, self.theta, self.floor = float(fs), tuple(bands), theta, floor
        self.hop = max(1, int(round(hop_s * fs)))
        self.env = max(1, int(round(env_s * fs)))
        self.sos = [butter(order, b, btype="band", fs=fs, output="sos") for b in self.bands]

    def envelope(self, x: np.ndarray) -> np.ndarray:
        """x (..., S, C) → log10 RMS envelope (..., T, C·Nb), bands fastest."""
        from scipy.signal import sosfiltfilt

        S = x.shape[-2]
        T = S // self.hop
        centre = np.arange(T) * self.hop + self.hop // 2                      # (T,)
        lo = np.clip(centre - self.env // 2, 0, S)
        hi = np.clip(centre + (self.env + 1) // 2, 0, S)
        n = np.maximum(hi - lo, 1)[:, None]                                   # (T, 1)
        out = []
        for sos in self.sos:
            xb = sosfiltfilt(sos, x.astype(np.float64), axis=-2)              # (..., S, C)
            cs = np.cumsum(xb ** 2, axis=-2)
            cs = np.concatenate([np.zeros_like(cs[..., :1, :]), cs], axis=-2)  # (..., S+1, C)
            rms = np.sqrt(np.maximum(cs[..., hi, :] - cs[..., lo, :], 0) / n)  # (..., T, C)
            out.append(np.log10(rms + 1e-3))
        return np.stack(out, axis=-1).reshape(*x.shape[:-2], T, -1)          # (..., T, C·Nb)

    def forward(self, x: Tensor) -> Tensor:
        """x (..., S, C) µV → spikes (..., T, 2·C·Nb) float32 in {0, 1}.

        Batched input (N, S, C) is encoded at once (time must be the second-last axis;
        ``adm`` is time-major, hence the transposes)."""
        env = torch.from_numpy(self.envelope(np.asarray(x, dtype=np.float64)))
        if env.dim() == 2:
            return adm(env, self.theta, init=self.floor).float()
        spk = adm(env.movedim(-2, 0), self.theta, init=self.floor)           # (T, ..., 2CNb)
        return spk.movedim(0, -2).float()


class MultiADM(nn.Module):
    """ECG (S, L) mV → ADM on/off spikes at several thresholds: (S, 2·L·n_θ).

    Layout: for each θ in ``thetas`` (ascending), :func:`adm` of all leads (ON leads, then
    OFF leads). Small θ resolve low-amplitude detail (P/T waves), large θ follow the steep
    QRS slopes without overload (ADM sends ≤ 1 spike per step and channel). The reference
    starts at the window's first sample (no spike at t = 0), so baseline offset is ignored.
    """

    def __init__(self, thetas=(0.03, 0.1, 0.3)):
        super().__init__()
        self.thetas = tuple(float(t) for t in thetas)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([adm(x, t) for t in self.thetas], dim=-1)


# --------------------------------------------------------------------------- data
class SpikeWindows(Dataset):
    """Items ``(x (T, C) float32, label int, None)`` from a uint8 tensor (N, T, C)."""

    def __init__(self, x: Tensor, y: Tensor, idx: np.ndarray):
        self.x, self.y, self.idx = x, y, np.asarray(idx)

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int):
        k = int(self.idx[i])
        return self.x[k].float(), int(self.y[k]), None


def prepare_bonn(root, window_s: float, stride_s: float, seed: int) -> dict:
    """Bonn (80 segments per set here) → FilterbankADM spikes and a segment-grouped split.

    Split: :func:`recording_split` (20 % of segments to test, stratified by S / not S),
    then the same again inside the training part for a validation set (model selection
    by validation AUC). No segment has windows on two sides.
    """
    from bimsnn.data.eeg import Bonn, recording_split

    # Band-pass 0.5–40 Hz via the loader (mne), native 173.61 Hz, µV kept (no z-scoring:
    # amplitude is informative and z-scoring per segment would discard it).
    ds = Bonn(root, window_s=window_s, stride_s=stride_s, l_freq=0.5, h_freq=40.0,
              normalize=None)
    enc = FilterbankADM(ds.sfreq)
    raw = torch.stack([ds[i][0] for i in range(len(ds))])                     # (N, S, 1) µV
    x = enc(raw).to(torch.uint8)                                               # (N, T, C)
    tr, te = recording_split(ds, 0.2, seed)
    sub = _Sub(ds.meta.iloc[tr].reset_index(drop=True))
    tr_in, va_in = recording_split(sub, 0.2, seed)
    return dict(x=x, y=torch.from_numpy(ds.labels.copy()), train=tr[tr_in], val=tr[va_in], test=te,
                group=ds.meta["seg_index"].to_numpy(), task="binary", classes=["not S", "S"],
                info=dict(fs=ds.sfreq, window_s=window_s, stride_s=stride_s,
                          bands=list(BONN_BANDS), hop_s=enc.hop / ds.sfreq, T=x.shape[1],
                          C=x.shape[2], n_windows=len(ds),
                          segments={k: int(len(np.unique(ds.meta['seg_index'].to_numpy()[v])))
                                    for k, v in (("train", tr[tr_in]), ("val", tr[va_in]),
                                                 ("test", te))},
                          spike_rate=float(x.float().mean())))


class _Sub:
    """A ``meta``-only view for :func:`recording_split` on a subset."""

    def __init__(self, meta):
        self.meta = meta


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

    from bimsnn.data.ecg import MITBIH

    ds = MITBIH(root, records=["208"], classes="aami", window_s=window, lead=[0, 1], fs=fs,
                encoder=MultiADM(thetas))
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
def _mamba_cls():
    from bimsnn.ssm.mamba import SpikingMambaNet

    class WindowMeanMamba(SpikingMambaNet):
        """SpikingMambaNet whose ``forward`` (BPTT loss, evaluation) is the mean of the
        per-step logits over the last ``window`` steps: the same quantity the online
        rules' per-step losses train and their "window" readout scores."""

        def __init__(self, cfg, window: int):
            super().__init__(cfg)
            self.window = window

        def forward(self, x: Tensor) -> Tensor:
            return self.forward_seq(x)[0][-self.window:].mean(0)

    return WindowMeanMamba


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
    from bimsnn.baselines import CNN1d, LSTMClassifier
    from bimsnn.ssm.mamba import MambaConfig

    n_out = 2 if K == 2 else K
    if spec.model == "cnn":
        return CNN1d(C, n_out, channels=(32, 32, 32), kernel_size=5)
    if spec.model == "lstm":
        return LSTMClassifier(C, n_out, hidden=64)
    cfg = MambaConfig(d_model=spec.d_model, n_inputs=C, n_classes=n_out,
                      n_layers=spec.n_layers, d_state=spec.d_state,
                      readout_beta=spec.readout_beta)
    W = max(1, min(T, math.ceil(round(spec.loss_window * T, 6))))
    return _mamba_cls()(cfg, W)


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


# --------------------------------------------------------------------------- metrics
def score_metrics(scores: np.ndarray, y: np.ndarray, task: str, group=None) -> dict:
    """AUC-ROC, AUC-PR (binary; one-vs-rest macro for multiclass), macro-F1, per-class F1."""
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    if task == "binary":
        pred = (scores >= 0.5).astype(int)
        out = dict(auc=roc_auc_score(y, scores), ap=average_precision_score(y, scores),
                   macro_f1=f1_score(y, pred, average="macro"),
                   f1_per_class=f1_score(y, pred, average=None).tolist())
        if group is not None:  # segment level: mean window score per segment
            g = np.asarray(group)
            u = np.unique(g)
            s_seg = np.array([scores[g == k].mean() for k in u])
            y_seg = np.array([y[g == k].max() for k in u])
            out.update(seg_auc=roc_auc_score(y_seg, s_seg),
                       seg_ap=average_precision_score(y_seg, s_seg))
        return {k: (float(v) if np.isscalar(v) else v) for k, v in out.items()}
    K = scores.shape[1]
    pred = scores.argmax(1)
    onehot = np.eye(K)[y]
    from sklearn.metrics import confusion_matrix

    return dict(auc=float(roc_auc_score(onehot, scores, average="macro")),
                ap=float(average_precision_score(onehot, scores, average="macro")),
                macro_f1=float(f1_score(y, pred, average="macro", labels=list(range(K)))),
                f1_per_class=f1_score(y, pred, average=None, labels=list(range(K))).tolist(),
                confusion=confusion_matrix(y, pred, labels=list(range(K))).tolist())


# --------------------------------------------------------------------------- worker
def _maxrss_mib() -> float:
    """Process high-water RSS since start (``ru_maxrss``, KiB on Linux), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _proc_status_mib(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0           # kB
    except OSError:
        pass
    return None


def reset_peak_rss() -> float | None:
    """Reset the kernel's peak-RSS mark (``VmHWM``; Linux ≥ 4.0, ``clear_refs`` = 5) and
    return the current RSS (MiB), or None where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return _proc_status_mib("VmRSS")


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

    from bimsnn.train import TrainConfig, evaluate, fit

    torch.set_num_threads(spec.threads)
    np.random.seed(spec.seed)
    torch.manual_seed(spec.seed)
    d = from_payload(torch.load(spec.data, weights_only=True))
    N, T, C = d["x"].shape
    K = len(d["classes"])
    train = SpikeWindows(d["x"], d["y"], d["train"])
    val = SpikeWindows(d["x"], d["y"], d["val"]) if d["val"] is not None else None
    test = SpikeWindows(d["x"], d["y"], d["test"])
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
    fit_peak = _proc_status_mib("VmHWM") if rss0 is not None else None
    t1 = time.perf_counter()
    res = evaluate(model, test, cfg, loss_fn=loss_fn)
    test_s = time.perf_counter() - t1
    y = res["labels"].astype(int)
    group = None if d["group"] is None else d["group"][d["test"]]
    m = score_metrics(res["scores"], y, d["task"], group)
    monitor = f"val_{cfg.monitor}"
    return dict(spec=asdict(spec), metrics=m, train_s=train_s, train_cpu_s=train_cpu_s,
                test_s=test_s,
                maxrss_mib=_maxrss_mib(), fit_peak_rss_mib=fit_peak, fit_start_rss_mib=rss0,
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
