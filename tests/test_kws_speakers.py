"""Keyword spotting on unseen speakers (issue 13): the speaker split, training-only seeded
augmentation (speed copies, SpecAugment masks), PCEN against an independent reference.

Symbols: T frames, F mel bands, C spike afferents. Tolerances: PCEN float64 ≤ 1e-10
(scipy's lfilter and the loop sum in the same order up to rounding).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.signal import lfilter, lfilter_zi

from bimsnn.data.augment import spec_mask
from bimsnn.data.speech_features import normalise, pcen
from bimsnn.tasks import speech as kws
from bimsnn.training import RunError


def _speakers(parts: dict, split: str) -> set[str]:
    ds, idx = parts[split]
    return {ds.items[int(i)][2]["speaker"] for i in idx}


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory):
    """Synthetic FSDD: 3 speakers × 10 digits × 4 takes (written once, read-only after)."""
    return kws.write_synthetic_fsdd(tmp_path_factory.mktemp("fsdd"), takes=4)


def _load(root, tmp_path, **kw):
    return kws.load_data(kws.KWSPre(duration_s=0.2), str(root), tmp_path, eval_only=False,
                         seed=kw.pop("seed", 0), val_frac=0.2, max_items=None, strict=False,
                         **kw)


@pytest.mark.parametrize("held", [["ann"], ["cat"], None])
def test_speaker_split_keeps_test_speakers_out_of_train_and_val(smoke_root, tmp_path, held):
    parts, _, info = _load(smoke_root, tmp_path, split="speaker", test_speakers=held, seed=3)
    test = _speakers(parts, "test")
    assert test == set(held or info["test_speakers"]) and len(test) == 1
    assert not test & (_speakers(parts, "train") | _speakers(parts, "val"))
    assert _speakers(parts, "train") | test == {"ann", "bob", "cat"}
    assert len(parts["test"][1]) == 40                         # every take of the speaker


def test_speaker_split_on_real_fsdd_rotates_over_every_speaker(shared_data, tmp_path):
    speakers = set()
    for s in ("george", "jackson", "nicolas", "theo"):
        parts, _, _ = _load(shared_data / "fsdd", tmp_path, split="speaker", test_speakers=[s])
        assert _speakers(parts, "test") == {s} and len(parts["test"][1]) == 500
        assert s not in _speakers(parts, "train") | _speakers(parts, "val")
        speakers |= _speakers(parts, "test")
    assert speakers == {"george", "jackson", "nicolas", "theo"}


def test_unknown_test_speaker_is_an_error_naming_the_speakers(smoke_root, tmp_path):
    with pytest.raises(RunError, match="Ann not among the speakers ann, bob, cat"):
        _load(smoke_root, tmp_path, split="speaker", test_speakers=["Ann"])


def test_augmentation_is_seeded_and_touches_only_training_items(smoke_root, tmp_path):
    pre = kws.KWSPre(duration_s=0.2, norm="speaker", fit="stretch")
    parts, _, _ = _load(smoke_root, tmp_path, split="speaker", test_speakers=["bob"])
    sets = kws.spike_sets(parts, pre, augment=True, speed_perturb=(0.9, 1.0), spec_masks=2)
    n_train = len(parts["train"][1])
    assert len(sets["train"]) == 2 * n_train                  # factor 1 adds no copy

    def draw(seed: int, i: int = 0):
        torch.manual_seed(seed)
        return sets["train"][i][0]

    assert torch.equal(draw(0), draw(0)) and not torch.equal(draw(0), draw(1))
    base = sets["train"].datasets[0]
    clean = base.code(base.feats[0])                           # (frames, C), unaugmented
    assert not torch.equal(draw(0), clean)
    for split in ("val", "test"):                              # never augmented: exact, always
        s = sets[split]
        assert not s.augment
        for i in (0, len(s) - 1):
            torch.manual_seed(i)
            x = s[i][0]
            assert torch.equal(x, s.code(s.feats[i])) and torch.equal(x, s[i][0])


def test_spec_mask_blocks_are_contiguous_bounded_and_reproducible():
    z = torch.randn(50, 12)
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        m = spec_mask(z, time_masks=1, time_width=7, freq_masks=1, freq_width=3, fill=99.0,
                      generator=g)
        again = spec_mask(z, 1, 7, 1, 3, 99.0, torch.Generator().manual_seed(seed))
        assert torch.equal(m, again)
        hit = m == 99.0
        assert torch.equal(m[~hit], z[~hit])                   # everything else unchanged
        rows = hit.all(1).nonzero().flatten()                  # fully masked frames
        cols = hit.all(0).nonzero().flatten()                  # fully masked bands
        assert len(rows) <= 7 and len(cols) <= 3
        for r in (rows, cols):                                  # one contiguous block
            assert len(r) == 0 or r[-1] - r[0] == len(r) - 1
        # a masked cell lies in a masked frame or a masked band
        assert hit.sum() == (hit[rows].numel() + hit[:, cols].numel()
                             - len(rows) * len(cols))
    assert torch.equal(spec_mask(z, 0, 7, 0, 3), z)
    assert torch.equal(spec_mask(z, 3, 0, 3, 0), z)


def test_pcen_matches_an_lfilter_reference_and_is_gain_invariant():
    rng = np.random.default_rng(0)
    e = rng.gamma(0.5, 2.0, size=(80, 6)) * np.linspace(1, 50, 6)    # (T, F) energies
    s, alpha, delta, r, eps = 0.025, 0.98, 2.0, 0.5, 1e-6
    # Independent reference (librosa.pcen's recipe): scipy IIR from its steady state.
    zi = lfilter_zi([s], [1, s - 1])[0] * e[0]
    m, _ = lfilter([s], [1, s - 1], e, axis=0, zi=zi[None])
    ref = (e / (eps + m) ** alpha + delta) ** r - delta ** r
    out = pcen(torch.from_numpy(e), s, alpha, delta, r, eps)
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-10)
    # alpha = 1, eps = 0: a band's gain divides out exactly (loudness invariance)
    g = torch.from_numpy(e)
    a = pcen(g, alpha=1.0, eps=0.0)
    b = pcen(g * torch.tensor([1e-3, 1.0, 7.0, 1e2, 0.5, 3.0]), alpha=1.0, eps=0.0)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_pcen_norm_mode_is_standardised_and_causal():
    logmel = torch.randn(40, 5, dtype=torch.float64) - 3
    z = normalise(logmel, "pcen")
    assert abs(float(z.mean())) < 1e-9 and abs(float(z.std()) - 1) < 1e-9
    p = pcen(logmel.exp())
    changed = logmel.clone()
    changed[30:] += 5                                          # the future does not leak back
    torch.testing.assert_close(pcen(changed.exp())[:30], p[:30], rtol=0, atol=0)
