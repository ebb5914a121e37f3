"""Encoders: shapes, binary outputs, documented rate bounds, decoders (hypothesis properties)."""

import doctest
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import bimsnn.encoding as enc

PROP = settings(max_examples=60, deadline=None, derandomize=True)


def _signals(max_step=None):
    """(T, C) float64 signals; with max_step, increments are bounded by it."""
    shape = st.tuples(st.integers(2, 40), st.integers(1, 3))
    if max_step is None:
        return arrays(np.float64, shape, elements=st.floats(-50, 50))
    return arrays(np.float64, shape, elements=st.floats(-max_step, max_step)).map(
        lambda d: np.cumsum(d, axis=0))


def _tv(x):
    return np.abs(np.diff(x, axis=0)).sum(0)            # (C,)


def test_doctests():
    assert doctest.testmod(enc).failed == 0


# --------------------------------------------------------------------------- ADM
@PROP
@given(_signals(max_step=1.0), st.floats(1.0, 5.0))
def test_adm_reconstruction_error_below_threshold(x, theta):
    """No slope overload (|Δx| ≤ θ) ⇒ |x − x̂| < θ at every step."""
    x = torch.from_numpy(x)
    s = enc.adm(x, theta)
    assert s.shape == (x.shape[0], 2 * x.shape[1])
    assert set(s.unique().tolist()) <= {0.0, 1.0}
    rec = enc.adm_decode(s, theta, init=x[0])
    assert torch.isfinite(rec).all()
    assert (rec - x).abs().max() < theta * (1 + 1e-9)


@PROP
@given(_signals(), st.floats(0.05, 10.0))
def test_adm_count_bound_holds_even_with_overload(x, theta):
    """Documented rate: count ≤ min(T, TV(x)/θ) per channel (init = x_0)."""
    s = enc.adm(torch.from_numpy(x), theta)
    C = x.shape[1]
    count = (s[:, :C] + s[:, C:]).sum(0).numpy()
    assert (count <= np.minimum(x.shape[0], _tv(x) / theta + 1e-9)).all()
    assert ((s[:, :C] * s[:, C:]) == 0).all()            # never up and down at once


@PROP
@given(_signals(), st.floats(0.1, 5.0))
def test_adm_signed_equals_on_minus_off(x, theta):
    x = torch.from_numpy(x)
    both, signed = enc.adm(x, theta), enc.adm(x, theta, signed=True)
    on, off = both.chunk(2, dim=-1)
    assert torch.equal(signed, on - off)
    assert torch.allclose(enc.adm_decode(signed, theta, init=x[0], signed=True),
                          enc.adm_decode(both, theta, init=x[0]))


def test_adm_slope_overload_is_not_hidden():
    """A step of 10θ is tracked at θ per step: the error bound needs |Δx| ≤ θ."""
    x = torch.zeros(20, 1)
    x[1:] = 10.0
    rec = enc.adm_decode(enc.adm(x, 1.0), 1.0, init=0.0)
    assert rec[1, 0] == 1.0 and rec[10, 0] == 10.0       # one level per step, then locked
    assert (rec[10:] - x[10:]).abs().max() < 1.0


# --------------------------------------------------------------------------- delta
@PROP
@given(arrays(np.int64, st.tuples(st.integers(2, 40), st.integers(1, 3)), elements=st.integers(-1, 1)),
       st.sampled_from([0.25, 0.5, 2.0]), st.integers(-24, 24))
def test_delta_decoder_reconstructs_quantised_signals(steps, theta, x0):
    """Signals moving by 0 or ±θ per step are recovered exactly (dyadic values, so the
    differences are exact in floating point: a step of θ·(1 − ε) would not fire)."""
    steps[0], x0 = 0, x0 / 8
    x = torch.from_numpy(x0 + theta * np.cumsum(steps, axis=0).astype(np.float64))
    s = enc.delta(x, theta)
    assert set(s.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(enc.delta_decode(s, theta, init=x[0]), x)
    torch.testing.assert_close(enc.DeltaEncoder(theta, signed=True).decode(
        enc.DeltaEncoder(theta, signed=True)(x), init=x[0]), x)


@PROP
@given(_signals(), st.floats(0.05, 10.0))
def test_delta_count_bound(x, theta):
    s = enc.delta(torch.from_numpy(x), theta, signed=True)
    assert (s.abs().sum(0).numpy() <= np.minimum(x.shape[0], _tv(x) / theta + 1e-9)).all()


def test_delta_ignores_slow_drift_that_adm_tracks():
    x = torch.linspace(0, 10, 101).unsqueeze(-1)          # 0.1 per step
    assert enc.delta(x, 0.5).sum() == 0
    assert enc.adm(x, 0.5).sum() == 20


# --------------------------------------------------------------------------- rate / latency
def test_rate_matches_probability():
    g = torch.Generator().manual_seed(0)
    p = torch.tensor([0.0, 0.1, 0.5, 1.0])
    s = enc.rate(p.expand(20000, 4), generator=g)
    assert set(s.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(s.mean(0), p, atol=0.015)
    sp = enc.RateEncoder(gain=2.0, mode="poisson", num_steps=20000)(torch.tensor([0.5]), generator=g)
    assert sp.shape == (20000, 1)
    assert abs(sp.mean().item() - (1 - math.exp(-1.0))) < 0.015


def test_latency_fires_once_at_documented_time():
    x = torch.tensor([1.0, 0.5, 0.0, 0.05])
    s = enc.latency(x, 11, threshold=0.01)
    assert s.shape == (11, 4)
    assert s.sum(0).tolist() == [1, 1, 0, 1]
    assert s[:, 0].argmax() == 0 and s[:, 1].argmax() == 5 and s[:, 3].argmax() == 10


@pytest.mark.parametrize("call", [
    lambda: enc.adm(torch.zeros(5, 2), 0.0),
    lambda: enc.adm(torch.zeros(5, 2), float("nan")),
    lambda: enc.adm(torch.zeros(5), 1.0),                 # needs (T, ..., C)
    lambda: enc.delta(torch.tensor([[0.0], [float("nan")]]), 1.0),
    lambda: enc.delta_decode(torch.zeros(4, 3), 1.0),     # odd channel count
    lambda: enc.rate(torch.zeros(5, 2), gain=-1.0),
    lambda: enc.rate(torch.zeros(5, 2), mode="gauss"),
    lambda: enc.latency(torch.zeros(3), 0),
    lambda: enc.mel_threshold(torch.zeros(5, 4), torch.zeros(3, 2)),
    lambda: enc.MelThresholdEncoder(n_levels=0),
])
def test_bad_arguments_raise_value_error(call):
    with pytest.raises(ValueError):
        call()


# --------------------------------------------------------------------------- log-mel thresholds
def test_mel_threshold_hand_example():
    x = torch.tensor([[0.0], [2.5], [1.5], [1.5]])        # one band, levels 1 and 2
    s = enc.mel_threshold(x, torch.tensor([1.0, 2.0]))
    assert s.tolist() == [[0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]]


@PROP
@given(arrays(np.float64, st.tuples(st.integers(2, 30), st.integers(1, 4)), elements=st.floats(-80, 0)),
       st.integers(1, 12))
def test_mel_threshold_per_step_bound(x, n_levels):
    """Uniform spacing Δ: a band emits ≤ |Δx_t|/Δ + 1 spikes per step."""
    levels = torch.linspace(-75, -5, n_levels)
    spacing = 70 / max(n_levels - 1, 1)
    s = enc.mel_threshold(torch.from_numpy(x), levels)
    T, F = x.shape
    assert s.shape == (T, 2 * F * n_levels)
    per_band = (s[:, :F * n_levels] + s[:, F * n_levels:]).view(T, F, n_levels).sum(-1).numpy()
    dx = np.abs(np.diff(x, axis=0, prepend=x[:1]))
    assert (per_band <= dx / spacing + 1 + 1e-9).all()


def test_log_mel_encoder_on_chirp():
    t = torch.arange(16000) / 16000
    wave = torch.sin(2 * math.pi * (200 + 1500 * t) * t)
    lm = enc.log_mel(wave, 16000, n_mels=20)
    assert lm.shape == (101, 20) and torch.isfinite(lm).all()
    s = enc.MelThresholdEncoder(n_levels=4)(lm)
    assert s.shape == (101, 2 * 20 * 4)
    assert set(s.unique().tolist()) <= {0.0, 1.0} and s.sum() > 0
    assert (enc.spike_rate(s, fs=100.0) <= 100.0).all()    # ≤ frame rate per afferent
