"""Streaming monitor: a saved model run causally over a continuous recording, block by block.

Symbols: C recording channels (EEG) or leads (ECG), n samples per block (recording rate
fs), W window samples at the model's rate, T model steps, B windows scored together,
K classes.

Two kinds of model.pt, recognised from their stored preprocessing:

* **seizure** (``recipes/seizure_detection.py`` with ``phase="causal"``): samples →
  :class:`~bimsnn.data.stream.CausalEEGChain` → windows of ``window_s`` every ``stride_s``
  → the model's encoder → P(ictal) per window. Alarms follow
  :func:`bimsnn.metrics.clinical_metrics`: on at a window's end when it and the k − 1
  before it score ≥ the stored threshold; an *event* is one run of "on" decisions.
* **beats** (``recipes/ecg_classification.py --dataset mitbih``): samples →
  :class:`~bimsnn.data.stream.PolyphaseResampler` (the loader's ``resample_poly``) → one
  window (−0.25 s, +0.45 s) per R peak → class scores per beat. R peaks come with the
  samples (:meth:`Monitor.feed`'s ``beats``).

Each window is scored from a fresh model state, as offline, so the monitor's scores equal
the recipe's offline window scores (tested ≤1e-5). Windows are scored in groups of
``group`` consecutive windows (a partial group waits for the next block, or
:meth:`Monitor.flush`): the batches, and so the scores, are the same whatever the block
sizes. ``group=1`` scores each window as soon as it is complete. Memory: the filter state,
one window of samples and one group, whatever the recording's length.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
from scipy.signal import sosfilt

from bimsnn import models
from bimsnn.data.mitbih import highpass_sos
from bimsnn.data.stream import CausalEEGChain, PolyphaseResampler
from bimsnn.training import CheckpointError, TrainConfig
from bimsnn.training.fit import task_scores
from bimsnn.training.online import eval_logits

__all__ = ["Monitor", "Event", "Scores", "load_monitor_model"]


@dataclass
class Event:
    """One alarm (seizure models): ``onset_s`` the first decision time with the alarm on
    (a window's end, s from the recording start), ``offset_s`` the last, ``peak`` the
    highest window score in the run (its k − 1 lead-in windows included)."""

    onset_s: float
    offset_s: float
    peak: float


@dataclass
class Scores:
    """What one :meth:`Monitor.feed` call completed: ``t_s`` (B,) window starts (seizure)
    or R-peak times (beats) in s, ``scores`` (B,) P(ictal) or (B, K) class
    probabilities, ``sample`` (B,) window start / R peak at the model's rate, ``events``
    closed alarms."""

    t_s: np.ndarray
    scores: np.ndarray
    sample: np.ndarray
    events: list[Event] = field(default_factory=list)
    inputs: torch.Tensor | None = None   # (B, T, C') encoded windows, with keep_inputs


def load_monitor_model(model_pt) -> tuple[torch.nn.Module, dict, str]:
    """(model in eval mode, checkpoint dict, kind "seizure" | "beats") from a model.pt.

    Raises:
        CheckpointError: naming the file, for a model the monitor cannot stream (another
            recipe's, a PTB-XL record model, or seizure preprocessing with zero-phase
            filters, which needs the whole file).
    """
    model, ck = models.load(model_pt)
    pre = ck.get("preprocessing") or {}
    if "window_s" in pre:
        if pre.get("kind") == "bonn":
            raise CheckpointError(model_pt, "a Bonn segment model: the monitor runs models "
                                  "of continuous recordings (demo, CHB-MIT, Siena)")
        if pre.get("phase", "zero") != "causal":
            raise CheckpointError(model_pt, "trained with zero-phase (non-causal) filters, "
                                  "which need the whole file; retrain with --phase causal "
                                  "(the default for demo and CHB-MIT) to monitor recordings")
        if pre.get("normalize") not in (None, "running", "train"):
            raise CheckpointError(model_pt, f"scaled with normalize={pre.get('normalize')!r}, "
                                  "which the monitor cannot reproduce during a recording; "
                                  "retrain with --normalize running, train or none")
        return model, ck, "seizure"
    if pre.get("kind") == "mitbih":
        return model, ck, "beats"
    raise CheckpointError(model_pt, "not a seizure_detection or MIT-BIH ecg_classification "
                          "model.pt (nothing else can be monitored)")


def _train_config(ck: dict) -> TrainConfig:
    d = ck.get("train_config") or {}
    known = {k: v for k, v in d.items() if k in TrainConfig.__dataclass_fields__}
    return replace(TrainConfig(**known), rule=ck.get("rule", "bptt"), out_dir=None)


class Monitor:
    """Score a continuous recording with a saved model, block by block (see the module).

    Args:
        model_pt: path of a seizure or MIT-BIH beat model.pt (or ``(model, ckpt dict)``,
            e.g. an adapted copy; :func:`load_monitor_model` for what is accepted).
        fs: the recording's sampling rate (Hz).
        channels: the recording's channel names, in the order of ``feed``'s rows (seizure
            models pick the ones they were trained on, by name; None: the rows are
            already the model's channels). Beat models take their leads as given.
        threshold: alarm threshold (default: the one stored in model.pt).
        smooth_k: consecutive windows for an alarm (default: the model's).
        group: windows scored together (see the module).
        keep_inputs: return each scored window's encoded spikes in ``Scores.inputs``
            (what online adaptation trains on).

    Example::

        mon = Monitor("runs/seizure_detection/model.pt", fs=256, channels=names)
        for block in blocks:                    # (C, n) arrays, any n
            out = mon.feed(block)               # Scores of the windows completed
        out = mon.flush()                       # the end of the recording
    """

    def __init__(self, model_pt, fs: float, channels=None, *, threshold: float | None = None,
                 smooth_k: int | None = None, group: int = 64, keep_inputs: bool = False):
        if isinstance(model_pt, tuple):
            self.model, self.ck = model_pt
            kind = "seizure" if "window_s" in (self.ck.get("preprocessing") or {}) else "beats"
        else:
            self.model, self.ck, kind = load_monitor_model(model_pt)
        self.kind, self.fs, self.group = kind, float(fs), max(1, int(group))
        self.keep_inputs = bool(keep_inputs)
        self.tc = _train_config(self.ck)
        self.mode = self.tc.eval_readout if self.tc.eval_readout != "auto" else \
            ("forward" if self.tc.rule == "bptt" else "window")
        pre = self.ck["preprocessing"]
        if kind == "seizure":
            from bimsnn.tasks import seizure

            self.pre = seizure.pre_from_checkpoint(self.ck, model_pt)
            want = [c.upper() for c in self.pre.channels]
            if channels is None:
                self.picks = None
                n_ch = len(want)
            else:
                names = [str(c).upper() for c in channels]
                lacking = [c for c in want if c not in names]
                if lacking:
                    raise ValueError(f"the recording lacks the model's channels {lacking}")
                self.picks = [names.index(c) for c in want]
                n_ch = len(names)
            self.n_in = n_ch
            self.sfreq = float(self.pre.sfreq or fs)
            from bimsnn.data.chbmit import RUNNING_TAU_S

            self.chain = CausalEEGChain(fs, self.pre.sfreq, self.pre.l_freq, self.pre.h_freq,
                                        None, len(want),
                                        RUNNING_TAU_S if self.pre.normalize == "running"
                                        else None, self.pre.window_s)
            self.win = int(round(self.pre.window_s * self.sfreq))
            self.hop = max(1, int(round(self.pre.stride_s * self.sfreq)))
            self.encode = seizure.encoder(self.pre, self.sfreq)
            self.threshold = float(self.ck.get("threshold", 0.5) if threshold is None
                                   else threshold)
            self.k = int(self.pre.smooth_k if smooth_k is None else smooth_k)
        else:
            from bimsnn.tasks import ecg

            self.pre = ecg.pre_from_checkpoint(self.ck, model_pt)
            self.sfreq = float(self.pre.sfreq)
            if abs(self.sfreq - round(self.sfreq)) > 1e-9 or abs(fs - round(fs)) > 1e-9:
                raise ValueError(f"beat models need integer rates (recording {fs:g} Hz, "
                                 f"model {self.sfreq:g} Hz)")
            self.n_in = len(self.pre.lead)
            self.resampler = None if int(round(fs)) == int(self.sfreq) else \
                PolyphaseResampler(int(self.sfreq), int(round(fs)), self.n_in)
            # the loader's causal high-pass (MITBIH l_freq), run with state across blocks
            self.hp_sos = None if self.pre.l_freq is None else \
                highpass_sos(fs, self.pre.l_freq)
            self.before = round(0.25 * self.sfreq)
            self.after = round(0.45 * self.sfreq)
            self.encode = ecg.encoder(self.pre)
            self.classes = list(self.pre.classes)
            self.threshold, self.k = None, None
        self.task = "binary" if kind == "seizure" else self.tc.task
        del pre
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Start a new recording (filters, buffers and alarm state cleared)."""
        if self.kind == "seizure":
            self.chain.reset()
        else:
            if self.resampler is not None:
                self.resampler.reset()
            if self.hp_sos is not None:
                self.hp_zi = np.zeros((self.hp_sos.shape[0], 2, self.n_in))
        self.buf = np.zeros((self.n_in if self.kind == "beats" else len(self.pre.channels), 0),
                            np.float32)
        self.buf0 = 0              # model-rate index of buf's first column
        self.n_avail = 0           # model-rate samples final so far
        self.n_fed = 0             # recording samples fed
        self.next_win = 0          # seizure: index of the next window
        self.pending_beats: list[int] = []   # beats: R peaks (model rate) not yet scored
        self.queue: list[tuple[float, int, np.ndarray]] = []  # complete, unscored windows
        self.run_len, self.event = 0, None   # alarm state
        self.recent: list[float] = []        # the last k − 1 scores (an event's peak)
        self.n_scored = 0

    # ------------------------------------------------------------------ feeding
    def feed(self, samples, beats=None) -> Scores:
        """Consume ``samples`` (C, n) at the recording rate (any n ≥ 0); return the windows
        this completes (scored once a group is full). Beat models: ``beats`` are R-peak
        sample indices (recording rate, counted from the recording's first sample) that
        lie in this or earlier blocks, each given once, in increasing order."""
        x = np.asarray(samples, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] != self.n_in:
            raise ValueError(f"feed: expected ({self.n_in}, n) samples, got {x.shape}")
        if not np.isfinite(x).all():
            c, t = np.argwhere(~np.isfinite(x))[0]
            raise ValueError(f"{int((~np.isfinite(x)).sum())} NaN/inf samples (first: row "
                             f"{c}, t = {(self.n_fed + t) / self.fs:.3f} s)")
        self.n_fed += x.shape[1]
        if self.kind == "seizure":
            if self.picks is not None:
                x = x[self.picks]
            y = self.chain.process(x)                            # (C, m) float64
            # an output sample is final once its whole decimation period has arrived, so
            # the windows are exactly the offline loader's (n_out = floor(n·sfreq/fs))
            final = min(self.chain.n_seen // self.chain.q,
                        self.buf0 + self.buf.shape[1] + y.shape[1])   # running scale: warm-up
            self._append(y.astype(np.float32), final)
            self._cut_windows()
        else:
            if beats is not None:
                rate = self.sfreq / self.fs
                self.pending_beats += [int(v) for v in np.round(np.asarray(beats) * rate)]
            if self.hp_sos is not None and x.shape[1]:     # as the loader: before resampling
                x, self.hp_zi = sosfilt(self.hp_sos, x.T.astype(np.float32), axis=0,
                                        zi=self.hp_zi)
                x = x.astype(np.float32).astype(np.float64).T
            y = x.T if self.resampler is None else self.resampler.process(x.T)
            self._append(y.T.astype(np.float32), self.buf0 + self.buf.shape[1] + y.shape[0])
            self._cut_beats(final=False)
        return self._score(final=False)

    def flush(self) -> Scores:
        """The recording has ended: score what is left and close an open alarm."""
        if self.kind == "beats":
            if self.resampler is not None:
                y = self.resampler.flush()
                self._append(y.T.astype(np.float32), self.buf0 + self.buf.shape[1] + len(y))
            self._cut_beats(final=True)
        out = self._score(final=True)
        if self.event is not None:
            out.events.append(self.event)
            self.event = None
        return out

    def drain(self) -> Scores:
        """Score the complete windows still waiting for a full group now (e.g. before the
        model is changed); alarm state and filters carry on."""
        return self._score(final=True)

    def _append(self, y: np.ndarray, final: int) -> None:
        self.buf = np.concatenate([self.buf, y], axis=1)
        self.n_avail = final

    def _drop_before(self, keep_from: int) -> None:
        if keep_from > self.buf0:
            self.buf = self.buf[:, keep_from - self.buf0:]
            self.buf0 = keep_from

    def _cut_windows(self) -> None:
        while True:
            s = self.next_win * self.hop
            if s + self.win > self.n_avail:
                break
            w = self.buf[:, s - self.buf0:s - self.buf0 + self.win]          # (C, W)
            self.queue.append((s / self.sfreq, s, w.T.copy()))
            self.next_win += 1
        self._drop_before(self.next_win * self.hop)

    def _cut_beats(self, final: bool) -> None:
        end = self.buf0 + self.buf.shape[1]
        keep = []
        for r in self.pending_beats:
            a, b = r - self.before, r + self.after
            if a < self.buf0:            # before the recording (or already dropped): the
                continue                 # loader drops edge beats too
            if b <= end:
                self.queue.append((r / self.sfreq, r,
                                   self.buf[:, a - self.buf0:b - self.buf0].T.copy()))
            elif not final:
                keep.append(r)
        self.pending_beats = keep
        lo = min([r - self.before for r in keep], default=end - self.before)
        self._drop_before(max(self.buf0, min(lo, end - self.before)))

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def score_windows(self, windows: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        """windows (B, W, C) at the model's rate → (scores (B,) or (B, K), encoded input
        (B, T, C') as :func:`~bimsnn.data.materialize` stores it), as offline."""
        x = torch.from_numpy(np.ascontiguousarray(windows)).transpose(0, 1)   # (W, B, C)
        x = self.encode(x)
        binary = bool(((x == 0) | (x == 1)).all())
        x = x.to(torch.uint8 if binary else torch.float32)
        was = self.model.training
        self.model.eval()
        try:
            z = eval_logits(self.model, x.float(), self.mode, self.tc.loss_window)
        finally:
            self.model.train(was)
        sc = task_scores(z, self.task).float().numpy()
        if self.kind == "beats" and len(self.pre.prior):   # as the recipe's ecg.score
            from bimsnn.tasks.ecg import prior_scores

            sc = prior_scores(sc, self.pre.prior)
        return sc, x.transpose(0, 1)

    def _score(self, final: bool) -> Scores:
        done = []
        while len(self.queue) >= self.group or (final and self.queue):
            batch, self.queue = self.queue[:self.group], self.queue[self.group:]
            done.append((batch, *self.score_windows(np.stack([w for _, _, w in batch]))))
        t = np.array([b[0] for batch, _, _ in done for b in batch])
        smp = np.array([b[1] for batch, _, _ in done for b in batch], dtype=np.int64)
        sc = np.concatenate([s for _, s, _ in done]) if done else \
            np.zeros((0,) if self.kind == "seizure" else (0, len(self.classes)), np.float32)
        xs = torch.cat([x for _, _, x in done]) if (done and self.keep_inputs) else None
        self.n_scored += len(t)
        events = self._alarms(t, sc) if self.kind == "seizure" else []
        return Scores(t, sc, smp, events, xs)

    def _alarms(self, t: np.ndarray, sc: np.ndarray) -> list[Event]:
        closed = []
        for ti, s in zip(t, sc):
            decision = float(ti + self.pre.window_s)
            self.run_len = self.run_len + 1 if s >= self.threshold else 0
            if self.run_len >= self.k:
                if self.event is None:
                    self.event = Event(decision, decision, max([float(s), *self.recent]))
                self.event.offset_s = decision
                self.event.peak = max(self.event.peak, float(s))
            elif self.event is not None:
                closed.append(self.event)
                self.event = None
            self.recent = (self.recent + [float(s)])[-(self.k - 1):] if self.k > 1 else []
        return closed
