"""bimsnn.metrics against sklearn, brute force and hand-computed values.

Symbols: N samples, K classes, T time, V classes incl. the CTC blank.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from bimsnn.metrics import (
    bits_per_char,
    cer,
    classification_metrics,
    clinical_metrics,
    ctc_beam_decode,
    ctc_collapse,
    ctc_greedy_decode,
    edit_distance,
    f1_threshold,
    one_vs_rest,
    perplexity,
    wer,
)

REPO = Path(__file__).resolve().parent.parent


def _module(rel: str, name: str):
    """Import a repo file by its path; skip once the file is gone."""
    path = REPO / rel
    if not path.is_file():
        pytest.skip(f"{rel} no longer exists")
    if name not in sys.modules:
        sp = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(sp)
        sys.modules[name] = mod
        sp.loader.exec_module(mod)
    return sys.modules[name]


def _multiclass(n=60, k=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    z = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    s = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    return s, y


# ---------------------------------------------------------------- classification
def test_binary_by_hand_and_sklearn():
    s, y = np.array([0.1, 0.4, 0.35, 0.8, 0.6]), np.array([0, 0, 1, 1, 0])
    m = classification_metrics(s, y, "binary", threshold=0.5)
    # predictions at 0.5: [0, 0, 0, 1, 1] → tn 2, fp 1, fn 1, tp 1
    assert m["confusion"] == [[2, 1], [1, 1]] and m["n"] == 5 and m["n_pos"] == 2
    assert m["sensitivity"] == 0.5 and m["specificity"] == pytest.approx(2 / 3)
    assert m["acc"] == pytest.approx(3 / 5)
    assert m["f1"] == pytest.approx(0.5)                       # P = R = 1/2
    assert m["f1_per_class"] == pytest.approx([2 / 3, 0.5])    # negatives: P = R = 2/3
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.5) / 2)
    assert m["auc"] == roc_auc_score(y, s) == pytest.approx(4 / 6)  # 4 of 6 pairs ordered
    assert m["ap"] == average_precision_score(y, s)
    one = classification_metrics([0.2, 0.3], [1, 1], "binary")
    assert math.isnan(one["auc"]) and math.isnan(one["specificity"])
    assert math.isnan(classification_metrics([0.2, 0.3], [0, 0], "binary")["ap"])


def test_binary_segment_level():
    s = np.array([0.9, 0.7, 0.2, 0.4, 0.6, 0.1])
    y = np.array([1, 0, 0, 0, 1, 0])
    g = np.array([0, 0, 1, 1, 2, 2])         # segment means 0.8, 0.3, 0.35; labels 1, 0, 1
    m = classification_metrics(s, y, "binary", group=g)
    assert m["seg_auc"] == 1.0 and m["seg_ap"] == 1.0
    # both segments contain a positive window: segment labels [1, 1] → AUC undefined
    m = classification_metrics(s, y, "binary", group=np.array([0, 0, 1, 1, 1, 1]))
    assert math.isnan(m["seg_auc"])


def test_multiclass_against_sklearn():
    s, y = _multiclass()
    m = classification_metrics(s, y, "multiclass")
    pred = s.argmax(1)
    assert m["acc"] == np.mean(pred == y)
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-15)
    assert m["f1_per_class"] == pytest.approx(f1_score(y, pred, average=None).tolist())
    onehot = np.eye(4)[y]
    assert m["auc"] == pytest.approx(roc_auc_score(onehot, s, average="macro"), abs=1e-15)
    assert m["ap"] == pytest.approx(average_precision_score(onehot, s, average="macro"),
                                    abs=1e-15)
    assert m["n_scored"] == 4 and np.asarray(m["confusion"]).sum() == len(y)
    # a class absent from the labels: scored over the others (sklearn would raise)
    keep = y != 2
    m = classification_metrics(s[keep], y[keep], "multiclass")
    assert m["n_scored"] == 3 and math.isfinite(m["auc"])
    assert m["f1_per_class"][2] == 0.0


def test_multilabel_scores_only_varying_labels():
    y = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 0, 1]])  # labels 1, 2 never vary
    s = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.5], [0.7, 0.2, 0.5], [0.4, 0.1, 0.5]])
    m = classification_metrics(s, y, "multilabel")
    assert m["n_scored"] == 1 and m["macro_auc"] == 1.0 and m["macro_ap"] == 1.0
    assert m["macro_f1"] == pytest.approx(f1_score(y, (s >= 0.5).astype(int),
                                                   average="macro", zero_division=0))
    with pytest.raises(ValueError, match="unknown task"):
        classification_metrics(s, y, "regression")


def test_one_vs_rest_shapes():
    s, y = one_vs_rest(np.array([0.2, 0.7]), np.array([0, 1]))
    assert s.shape == y.shape == (2, 1)
    s, y = one_vs_rest(np.ones((3, 2)), np.array([[1, 0], [0, 1], [1, 1]]))
    assert y.tolist() == [[1, 0], [0, 1], [1, 1]]


def test_f1_threshold_is_the_best_threshold():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    s = rng.random(50) * 0.6 + 0.3 * y
    th = f1_threshold(s, y)

    def f1_at(t):
        return f1_score(y, (s >= t).astype(int), zero_division=0)
    assert th in s and f1_at(th) == pytest.approx(max(f1_at(t) for t in s))
    assert f1_threshold([0.3, 0.9], [0, 0]) == 0.5                # no positive window


# ---------------------------------------------------------------- clinical
def _timeline():
    """Two recordings, windows of 4 s every 2 s (hand-checked in the test's comments).

    r1: starts 0..56 (t_end 4..60), seizure (20, 30). Windows starting 18-24 score high
    (k=2 → alarm at starts 20, 22, 24; first decision t_end 24 → latency 4 s); windows
    40, 42 high → one alarm at 42 (window [42, 46], no seizure: a false alarm); window 50
    high alone → no alarm. Interictal: 60 − 10 = 50 s.
    r2: starts 0..18 (t_end 4..22), seizure (5, 9), all low: missed. Interictal 22 − 4 = 18 s.
    """
    metas, scores = [], []
    for start in range(0, 58, 2):
        metas.append({"patient": "p1", "file": "r1.edf", "start_s": float(start)})
        scores.append(0.9 if start in (18, 20, 22, 24, 40, 42, 50) else 0.1)
    for start in range(0, 20, 2):
        metas.append({"patient": "p1", "file": "r2.edf", "start_s": float(start)})
        scores.append(0.2)
    seizures = {"p1/r1.edf": [(20.0, 30.0)], "p1/r2.edf": [(5.0, 9.0)]}
    return np.array(scores), metas, seizures


def test_clinical_metrics_hand_made_timeline():
    scores, metas, seizures = _timeline()
    perm = np.random.default_rng(0).permutation(len(metas))   # order must not matter
    m = clinical_metrics(scores[perm], [metas[i] for i in perm], 0.5, seizures, 4.0, 2)
    assert m["n_seizures"] == 2 and m["n_detected"] == 1 and m["sensitivity"] == 0.5
    assert m["detection_latency_s"] == 4.0
    assert m["n_false_alarms"] == 1
    assert m["interictal_hours"] == pytest.approx(68 / 3600)
    assert m["false_alarms_per_hour"] == pytest.approx(3600 / 68)
    # k = 1: the lone window at 50 is a second false alarm; detection one step earlier
    m1 = clinical_metrics(scores, metas, 0.5, seizures, 4.0, 1)
    assert m1["n_false_alarms"] == 2 and m1["detection_latency_s"] == 2.0
    # nothing above threshold: no detection, no false alarm
    m0 = clinical_metrics(scores, metas, 0.95, seizures, 4.0, 2)
    assert m0["sensitivity"] == 0.0 and math.isnan(m0["detection_latency_s"])
    assert m0["false_alarms_per_hour"] == 0.0
    assert math.isnan(clinical_metrics(scores, metas, 0.5, {}, 4.0, 2)["sensitivity"])


# ---------------------------------------------------------------- CTC, error rates, entropy
def test_ctc_greedy_by_hand():
    assert ctc_collapse([0, 1, 1, 0, 1, 2, 2]) == [1, 1, 2]
    lp = torch.full((5, 1, 3), -5.0)
    lp[torch.arange(5), 0, torch.tensor([1, 1, 0, 1, 2])] = 0.0
    assert ctc_greedy_decode(lp) == [[1, 1, 2]]
    assert ctc_greedy_decode(lp, [2]) == [[1]]


@pytest.mark.parametrize("seed", range(4))
def test_ctc_beam_finds_the_most_probable_labelling(seed):
    """Against brute force over all V^T paths (T = 4, V = 3): Σ p(path) per labelling."""
    g = torch.Generator().manual_seed(seed)
    T, Vn = 4, 3
    lp = torch.randn(T, 1, Vn, generator=g, dtype=torch.float64).mul(2).log_softmax(-1)
    total: dict[tuple, float] = {}
    for path in itertools.product(range(Vn), repeat=T):
        p = math.exp(sum(lp[t, 0, k].item() for t, k in enumerate(path)))
        key = tuple(ctc_collapse(path))
        total[key] = total.get(key, 0.0) + p
    assert sum(total.values()) == pytest.approx(1.0)
    assert tuple(ctc_beam_decode(lp, beam=64)[0]) == max(total, key=total.get)


def _levenshtein(a, b) -> int:
    d = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, d[0] = d[0], i
        for j, cb in enumerate(b, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (ca != cb))
    return d[-1]


def test_edit_distance_and_error_rates():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = "".join(rng.choice(list("abc"), rng.integers(0, 8)))
        b = "".join(rng.choice(list("abc"), rng.integers(0, 8)))
        assert edit_distance(a, b) == _levenshtein(a, b)
    assert wer(["the cat sat on the mat"], ["the cat sit on mat"]) == pytest.approx(2 / 6)
    assert cer(["kitten"], ["sitting"]) == pytest.approx(3 / 6)
    assert wer(["a b", "c"], ["a b", "d"]) == pytest.approx(1 / 3)   # corpus level
    assert math.isnan(wer([""], ["x"]))
    with pytest.raises(ValueError):
        cer(["a"], ["a", "b"])


def test_bpc_and_perplexity():
    # 8 characters each predicted with p = 1/2: 1 bit per character, perplexity 2
    nll = 8 * math.log(2)
    assert bits_per_char(nll, 8) == pytest.approx(1.0)
    assert perplexity(nll, 8) == pytest.approx(2.0)
    # word level: 3 words carrying 12 characters in all, p = 1/16 per word
    assert bits_per_char(3 * math.log(16), 12) == pytest.approx(1.0)
    assert perplexity(1e6, 1) == math.inf
    with pytest.raises(ValueError):
        bits_per_char(1.0, 0)
    with pytest.raises(ValueError):
        perplexity(1.0, 0)
