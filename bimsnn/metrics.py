"""Metrics: classification (sklearn), clinical seizure detection, CTC decoding, WER/CER, BPC.

Symbols: N samples (windows), K classes (or labels), G groups (segments), T time steps,
B batch, V output classes (vocabulary + CTC blank). Pure functions of arrays.

Score conventions (what :func:`bimsnn.training.evaluate` returns)::

    binary      scores (N,) = P(positive),  labels (N,) in {0, 1}
    multiclass  scores (N, K) softmax,     labels (N,) int class ids
    multilabel  scores (N, K) sigmoid,     labels (N, K) multi-hot

AUC/AP are NaN where undefined (a class with no positive or no negative sample).

CTC (Graves et al. 2006): per-step log-probabilities (T, B, V) over the labels and a
*blank*; a path collapses to a label sequence by merging repeats, then dropping blanks.
Error rates are corpus-level, as in Kaldi/jiwer: Σ edit distance / Σ reference length.
Entropy metrics take a *summed* negative log-likelihood in nats:
``bpc = nll / (n_chars · ln 2)``, ``ppl = exp(nll / n_tokens)``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    roc_auc_score,
)
from torch import Tensor

NAN = float("nan")


# ---------------------------------------------------------------------------- classification
def _auc(y: np.ndarray, s: np.ndarray) -> float:
    """ROC-AUC, or NaN when only one class is present (sklearn would raise)."""
    return float(roc_auc_score(y, s)) if len(np.unique(y)) == 2 else NAN


def _ap(y: np.ndarray, s: np.ndarray) -> float:
    return float(average_precision_score(y, s)) if y.sum() > 0 else NAN


def one_vs_rest(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """Scores (N,) or (N, K) with labels (N,) or (N, K) → (scores, labels) as (N, K') 0/1 columns.

    >>> one_vs_rest([[0.9, 0.1], [0.2, 0.8]], [1, 0])[1].tolist()
    [[0, 1], [1, 0]]
    """
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    if s.ndim == 1:
        return s[:, None], y.reshape(-1, 1).astype(int)
    if y.ndim == 1:  # multiclass ids → one-hot
        y = np.eye(s.shape[1], dtype=int)[y.astype(int)]
    return s, y.astype(int)


def _macro_auc_ap(s: np.ndarray, y: np.ndarray) -> dict:
    """Mean one-vs-rest AUC and AP over the columns with both a positive and a negative."""
    ok = [j for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
    return {"auc": float(np.mean([_auc(y[:, j], s[:, j]) for j in ok])) if ok else NAN,
            "ap": float(np.mean([_ap(y[:, j], s[:, j]) for j in ok])) if ok else NAN,
            "n_scored": len(ok)}


def classification_metrics(scores, labels, task: str, threshold: float = 0.5,
                           group=None) -> dict:
    """Task metrics from scores and labels (shapes in the module docstring).

    Args:
        threshold: decision threshold on P(positive) (binary) or per label (multilabel).
        group: (N,) segment ids (binary only): adds segment-level ``seg_auc``/``seg_ap``
            from each segment's mean window score and its max label.
    Returns (plain floats/ints/lists, JSON-ready), always with ``n``:
        binary:     auc, ap, acc, f1 (positive class), macro_f1 and f1_per_class (both
                    classes), sensitivity, specificity, confusion [[tn, fp], [fn, tp]], n_pos
        multiclass: acc, macro_f1, f1_per_class, confusion (K × K), auc and ap (macro
                    one-vs-rest over the n_scored classes present in ``labels``)
        multilabel: macro_auc and macro_ap over the labels with both a positive and a
                    negative sample (n_scored of K; the usual PTB-XL practice), macro_f1
    """
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    out: dict = {"n": int(len(y))}
    if task == "binary":
        y, s = y.astype(int).reshape(-1), s.reshape(-1)
        pred = (s >= threshold).astype(int)
        tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel().tolist()
        per = f1_score(y, pred, labels=[0, 1], average=None, zero_division=0)
        out.update(auc=_auc(y, s), ap=_ap(y, s), acc=float(accuracy_score(y, pred)),
                   f1=float(per[1]), macro_f1=float(per.mean()), f1_per_class=per.tolist(),
                   sensitivity=tp / (tp + fn) if tp + fn else NAN,
                   specificity=tn / (tn + fp) if tn + fp else NAN,
                   confusion=[[tn, fp], [fn, tp]], n_pos=int(y.sum()))
        if group is not None:
            g = np.asarray(group)
            u = np.unique(g)
            s_seg = np.array([s[g == k].mean() for k in u])                    # (G,)
            y_seg = np.array([y[g == k].max() for k in u])
            out.update(seg_auc=_auc(y_seg, s_seg), seg_ap=_ap(y_seg, s_seg))
    elif task == "multiclass":
        y = y.astype(int).reshape(-1)
        pred, k = s.argmax(1), s.shape[1]
        per = f1_score(y, pred, labels=list(range(k)), average=None, zero_division=0)
        out.update(acc=float(accuracy_score(y, pred)), macro_f1=float(per.mean()),
                   f1_per_class=per.tolist(),
                   confusion=confusion_matrix(y, pred, labels=list(range(k))).tolist(),
                   **_macro_auc_ap(*one_vs_rest(s, y)))
    elif task == "multilabel":
        y = y.astype(int)
        m = _macro_auc_ap(s, y)
        out.update(macro_auc=m["auc"], macro_ap=m["ap"],
                   macro_f1=float(f1_score(y, (s >= threshold).astype(int), average="macro",
                                           zero_division=0)),
                   n_scored=m["n_scored"])
    else:
        raise ValueError(f"unknown task {task!r}")
    return out


def score_problem(scores) -> str | None:
    """Why scores (N,) or (N, K) carry no information, or None: non-finite values (a
    diverged model) or the same score for every item (a constant model). Reports must say
    so instead of deriving "0 false alarms" from them.

    >>> score_problem([0.2, 0.7]), score_problem([0.5, 0.5]), score_problem([0.1, float("nan")])
    (None, 'constant scores (0.5 for all 2 items): the model does not discriminate', 'non-finite scores (1 of 2): the model diverged')
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return "no scores"
    bad = int((~np.isfinite(s)).reshape(len(s), -1).any(1).sum())
    if bad:
        return f"non-finite scores ({bad} of {len(s)}): the model diverged"
    flat = s.reshape(len(s), -1)
    if len(s) > 1 and (flat.max(0) == flat.min(0)).all():
        return (f"constant scores ({flat[0, 0]:.3g} for all {len(s)} items): the model "
                "does not discriminate")
    return None


def f1_threshold(scores, labels) -> float:
    """The score threshold that maximises F1 on (validation) windows; 0.5 if no window is
    positive (F1 undefined).

    >>> f1_threshold([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    0.35
    """
    y = np.asarray(labels).astype(int)
    if y.min(initial=0) == y.max(initial=0):
        return 0.5
    prec, rec, th = precision_recall_curve(y, np.asarray(scores, dtype=np.float64))
    f1 = 2 * prec[:-1] * rec[:-1] / np.maximum(prec[:-1] + rec[:-1], 1e-12)
    return float(th[int(np.argmax(f1))])


# ---------------------------------------------------------------------------- clinical
def clinical_metrics(scores, metas: Sequence[dict], threshold: float, seizures: dict,
                     window_s: float, k: int) -> dict:
    """Seizure sensitivity, false alarms per interictal hour and mean detection latency.

    Windows are placed on each recording's timeline, with decisions at each window's
    *end* (causal)::

        alarm on     at a window when it and the k−1 windows before it score ≥ threshold;
        detected     a seizure, if an alarm is on at a decision time in
                     [onset, offset + window_s] (a window still overlapping it);
        latency      first such decision time − onset (s), averaged over detected seizures;
        false alarm  a run of consecutive "on" decisions whose windows overlap no seizure;
                     per hour of interictal time (recording span minus seizures).

    Args:
        scores: (N,) window scores. metas: N dicts with ``patient``, ``file`` and
            ``start_s`` (window start, s); windows of one recording need not be sorted.
        seizures: {"patient/file": [(onset_s, offset_s), ...]} (recordings absent: none).
        window_s: window length (s). k: consecutive windows for an alarm.
    Returns:
        sensitivity, false_alarms_per_hour, detection_latency_s (NaN where undefined),
        n_seizures, n_detected, n_false_alarms, interictal_hours, threshold, smooth_k.
    """
    import pandas as pd

    df = pd.DataFrame({"rec": [f"{m['patient']}/{m['file']}" for m in metas],
                       "start": [m["start_s"] for m in metas], "score": np.asarray(scores)})
    n_sz, latencies, false, inter_s = 0, [], 0, 0.0
    for rec, g in df.groupby("rec", sort=True):
        g = g.sort_values("start")
        t_end = g["start"].to_numpy() + window_s                       # decision times
        pos = (g["score"].to_numpy() >= threshold).astype(int)
        on = np.convolve(pos, np.ones(k, int), "full")[:len(pos)] == k  # k in a row
        sz = seizures.get(rec, [])
        span = t_end[-1] - g["start"].iloc[0]
        inter_s += span - sum(min(b, t_end[-1]) - max(a, g["start"].iloc[0]) for a, b in sz
                              if b > g["start"].iloc[0] and a < t_end[-1])
        for a, b in sz:
            n_sz += 1
            hit = np.flatnonzero(on & (t_end >= a) & (t_end <= b + window_s))
            if len(hit):
                latencies.append(float(t_end[hit[0]] - a))
        edges = np.diff(np.r_[0, on.astype(int), 0])                   # alarm runs
        for i0, i1 in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1):
            w0, w1 = t_end[i0] - window_s, t_end[i1]
            false += not any(w0 < b and a < w1 for a, b in sz)
    hours = inter_s / 3600
    return {"sensitivity": len(latencies) / n_sz if n_sz else NAN,
            "false_alarms_per_hour": false / hours if hours > 0 else NAN,
            "detection_latency_s": float(np.mean(latencies)) if latencies else NAN,
            "n_seizures": n_sz, "n_detected": len(latencies), "n_false_alarms": int(false),
            "interictal_hours": hours, "threshold": threshold, "smooth_k": k}


# ---------------------------------------------------------------------------- CTC decoding
def ctc_collapse(path: Sequence[int], blank: int = 0) -> list[int]:
    """Merge repeats, then drop blanks: the CTC many-to-one map B.

    >>> ctc_collapse([0, 3, 3, 0, 3, 5, 5, 0])
    [3, 3, 5]
    """
    out, prev = [], None
    for k in path:
        k = int(k)
        if k != prev and k != blank:
            out.append(k)
        prev = k
    return out


def ctc_greedy_decode(log_probs: Tensor, lengths: Tensor | Sequence[int] | None = None,
                      blank: int = 0) -> list[list[int]]:
    """Best-path decoding: log_probs (T, B, V) (or logits), lengths (B,) valid steps
    (None: all T) → B label-id lists."""
    T, B = log_probs.shape[:2]
    best = log_probs.argmax(-1).cpu()                              # (T, B)
    lens = [T] * B if lengths is None else [int(n) for n in lengths]
    return [ctc_collapse(best[: lens[b], b].tolist(), blank) for b in range(B)]


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))


def ctc_beam_decode(log_probs: Tensor, lengths: Tensor | Sequence[int] | None = None,
                    blank: int = 0, beam: int = 8) -> list[list[int]]:
    """Prefix beam search (no language model); ``beam=1`` is close to greedy.

    Each prefix keeps two log-scores, ending in blank (p_b) and ending in its last label
    (p_nb), so paths that collapse to the same prefix are summed, not maxed.

    Args:
        log_probs: (T, B, V) log-probabilities (log_softmax over V).
        lengths: (B,) valid steps (None: all T). beam: prefixes kept per step.
    Returns:
        B label-id lists (the best prefix of each item).
    """
    T, B, V = log_probs.shape
    lp = log_probs.detach().double().cpu()
    lens = [T] * B if lengths is None else [int(n) for n in lengths]
    out, ninf = [], -math.inf
    for b in range(B):
        beams: dict[tuple, tuple[float, float]] = {(): (0.0, ninf)}  # prefix → (p_b, p_nb)
        for t in range(lens[b]):
            row = lp[t, b].tolist()
            nxt: dict[tuple, list[float]] = defaultdict(lambda: [ninf, ninf])
            for prefix, (pb, pnb) in beams.items():
                total = _logaddexp(pb, pnb)
                e = nxt[prefix]                                    # stay: blank or repeat
                e[0] = _logaddexp(e[0], total + row[blank])
                if prefix:
                    e[1] = _logaddexp(e[1], pnb + row[prefix[-1]])
                for k in range(V):
                    if k == blank:
                        continue
                    e = nxt[prefix + (k,)]
                    # a repeat of the last label needs a blank in between
                    src = pb if prefix and k == prefix[-1] else total
                    e[1] = _logaddexp(e[1], src + row[k])
            ranked = sorted(nxt.items(), key=lambda kv: -_logaddexp(*kv[1]))[:beam]
            beams = {p: (s[0], s[1]) for p, s in ranked}
        out.append(list(max(beams.items(), key=lambda kv: _logaddexp(*kv[1]))[0]))
    return out


# ---------------------------------------------------------------------------- error rates
def edit_distance(ref: Sequence, hyp: Sequence) -> int:
    """Levenshtein distance (substitutions, insertions, deletions all cost 1).

    >>> edit_distance("kitten", "sitting")
    3
    """
    import torchaudio  # lazy: importing torchaudio is slow

    return int(torchaudio.functional.edit_distance(list(ref), list(hyp)))


def error_counts(refs: Sequence[str], hyps: Sequence[str], unit: str = "word"
                 ) -> tuple[int, int]:
    """(Σ edits, Σ reference length) over pairs, in words (split on whitespace) or chars."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if unit not in ("word", "char"):
        raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")
    edits = n = 0
    for r, h in zip(refs, hyps):
        r_, h_ = (r.split(), h.split()) if unit == "word" else (list(r), list(h))
        edits += edit_distance(r_, h_)
        n += len(r_)
    return edits, n


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Word error rate, corpus-level: Σ word edits / Σ reference words.

    >>> wer(["the cat sat"], ["the bat sat down"])   # 1 substitution + 1 insertion
    0.6666666666666666
    """
    edits, n = error_counts(refs, hyps, "word")
    return edits / n if n else NAN


def cer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Character error rate, corpus-level (spaces count as characters).

    >>> cer(["abcd"], ["abd"])
    0.25
    """
    edits, n = error_counts(refs, hyps, "char")
    return edits / n if n else NAN


# ---------------------------------------------------------------------------- entropy
def bits_per_char(nll_nats: float, n_chars: int) -> float:
    """Σ −ln p over ``n_chars`` characters → bits per character.

    >>> round(bits_per_char(10 * math.log(4), 10), 6)   # uniform over 4 symbols: 2 bits
    2.0
    """
    if n_chars <= 0:
        raise ValueError(f"n_chars must be > 0, got {n_chars}")
    return nll_nats / (n_chars * math.log(2))


def perplexity(nll_nats: float, n_tokens: int) -> float:
    """Σ −ln p over ``n_tokens`` → exp(mean nll); ∞ where it overflows.

    >>> round(perplexity(5 * math.log(7), 5), 6)        # uniform over 7 words
    7.0
    """
    if n_tokens <= 0:
        raise ValueError(f"n_tokens must be > 0, got {n_tokens}")
    mean = nll_nats / n_tokens
    return math.exp(mean) if mean < 700 else math.inf
