"""Encoders: shapes, binary outputs, documented rate bounds, decoders (hypothesis properties);
multi-ADM, filterbank ADM and log-mel equal the copies they replace.

Old definitions are loaded from the benchmark / recipe files themselves
(``importlib.util.spec_from_file_location``) or, where the old code is gone from the library
(the two log-mels), copied here verbatim. Tolerance for log-mel: 1e-6 relative.
"""

import doctest
import importlib
import importlib.util
import math
from pathlib import Path

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


SUBMODULES = ("", ".contrast", ".intensity", ".filterbank", ".mel")
REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("sub", SUBMODULES)
def test_doctests(sub):
    mod = importlib.import_module("bimsnn.encoding" + sub)
    res = doctest.testmod(mod, extraglobs={"torch": torch})
    assert res.failed == 0
    assert res.attempted > 0 or sub == ".filterbank"


def test_every_encoder_has_a_functional_and_a_transform():
    pairs = [(enc.rate, enc.RateEncoder(num_steps=4)), (enc.latency, enc.LatencyEncoder(4)),
             (enc.delta, enc.DeltaEncoder(0.5)), (enc.adm, enc.ADMEncoder(0.5)),
             (enc.multi_adm, enc.MultiADMEncoder((0.5, 1.0))),
             (enc.filterbank_adm, enc.FilterbankADMEncoder(100.0, bands=((5.0, 15.0),))),
             (enc.thermometer, enc.SpikeCode(3, 0.2)),
             (enc.mel_threshold, enc.MelThresholdEncoder(torch.tensor([-1.0, 1.0]))),
             (enc.log_mel, enc.LogMelSpectrogram(8000, 8))]
    assert {f.__name__ for f, _ in pairs} | {"spike_rate", "delta_decode", "adm_decode",
                                             "filterbank_envelope"} == {
        n for n in enc.__all__ if n[0].islower()}
    assert {type(m).__name__ for _, m in pairs} == {n for n in enc.__all__ if n[0].isupper()
                                                   and not n.isupper()}
    x = torch.linspace(0, 1, 200).unsqueeze(-1) ** 2                   # (T, C) = (200, 1)
    for f, m in pairs[2:6]:
        args = {"multi_adm": ((0.5, 1.0),), "filterbank_adm": (100.0,)}.get(f.__name__, (0.5,))
        kw = {"bands": ((5.0, 15.0),)} if f.__name__ == "filterbank_adm" else {}
        assert torch.equal(m(x), f(x, *args, **kw))
    assert torch.equal(enc.LatencyEncoder(4)(x[:3, 0]), enc.latency(x[:3, 0], 4))


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


# --------------------------------------------------------------------------- multi-ADM
@PROP
@given(_signals(), st.lists(st.floats(0.05, 10.0), min_size=1, max_size=4))
def test_multi_adm_equals_stacked_adm(x, thetas):
    x = torch.from_numpy(x)
    s = enc.multi_adm(x, thetas)
    C = x.shape[1]
    assert s.shape == (x.shape[0], 2 * C * len(thetas))
    for k, th in enumerate(thetas):
        assert torch.equal(s[:, 2 * C * k: 2 * C * (k + 1)], enc.adm(x, th))
    signed = enc.multi_adm(x, thetas, signed=True, init=0.0)
    assert torch.equal(signed, torch.cat([enc.adm(x, th, signed=True, init=0.0)
                                          for th in thetas], -1))
    assert torch.equal(enc.MultiADMEncoder(thetas)(x), s)


def test_multi_adm_rejects_empty_or_bad_thresholds():
    for bad in ([], [0.1, 0.0], [float("nan")]):
        with pytest.raises(ValueError):
            enc.multi_adm(torch.zeros(4, 1), bad)


# --------------------------------------------------------------------------- filterbank ADM
def test_filterbank_adm_on_real_bonn(shared_data):
    """Time-major FilterbankADMEncoder on band-passed Bonn windows (µV, no z-score, as
    benchmarks/biomed.py prepares them): batched = one window at a time, ON/OFF spikes, the
    envelope's frame count, and an ictal set that spikes more than a healthy one."""
    from bimsnn.data import Bonn
    from bimsnn.data.windows import materialize

    rates = {}
    for sset in ("Z", "S"):
        ds = Bonn(shared_data / "bonn", sets=(sset,), window_s=4.0, stride_s=2.0, l_freq=0.5,
                  h_freq=40.0, normalize=None)
        idx = range(0, len(ds), 37)
        raw = torch.stack([ds[i][0] for i in idx], dim=1)                   # (S, N, 1) µV
        fb = enc.FilterbankADMEncoder(ds.sfreq)
        spikes = fb(raw)                                                    # (T, N, 12)
        assert spikes.shape == (raw.shape[0] // fb.hop, raw.shape[1], 2 * 6)
        assert set(spikes.unique().tolist()) <= {0.0, 1.0}
        for i in (0, raw.shape[1] - 1):
            assert torch.equal(fb(raw[:, i]), spikes[:, i])
        env = enc.filterbank_envelope(raw, ds.sfreq)                        # (T, N, 6)
        assert env.shape == (spikes.shape[0], raw.shape[1], 6)
        assert torch.equal(materialize(ds, idx, fb).x, spikes.movedim(0, 1).to(torch.uint8))
        rates[sset] = float(spikes.mean())
    assert 0.01 < rates["Z"] < rates["S"] < 0.5


# --------------------------------------------------------------------------- log-mel
def _old_encoding_log_mel(waveform, sample_rate, n_mels=40, win_ms=25.0, hop_ms=10.0,
                          top_db=80.0):
    """bimsnn.encoding.log_mel before the merge (dB), verbatim but for the checks."""
    import torchaudio

    w = waveform.mean(0) if waveform.dim() == 2 else waveform
    n_fft = int(round(sample_rate * win_ms / 1000))
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate, n_fft=n_fft, hop_length=max(1, int(round(sample_rate * hop_ms / 1000))),
        n_mels=n_mels)(w)
    return torchaudio.transforms.AmplitudeToDB("power", top_db=top_db)(mel).T.contiguous()


def _old_audio_log_mel(wave, sample_rate=16000, n_mels=40, win_ms=25.0, hop_ms=10.0,
                       f_min=20.0, f_max=None, eps=1e-6):
    """bimsnn.data.audio.LogMel.features before the merge (natural log), verbatim."""
    import torchaudio

    win = round(win_ms * sample_rate / 1000)
    hop = round(hop_ms * sample_rate / 1000)
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate, n_fft=1 << (win - 1).bit_length(), win_length=win, hop_length=hop,
        f_min=f_min, f_max=f_max, n_mels=n_mels, power=2.0)
    with torch.no_grad():
        return torch.log(mel(wave) + eps).T.contiguous()


def _close(new, old):
    assert new.shape == old.shape and new.dtype == old.dtype
    torch.testing.assert_close(new, old, rtol=1e-6, atol=1e-6 * float(old.abs().max()))


def _tone(sr: int, seconds: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(sr * seconds)) / sr
    return 0.3 * torch.sin(2 * math.pi * 440.0 * t) + 0.05 * torch.sin(2 * math.pi * 1250.0 * t)


@pytest.mark.parametrize("sr", [8000, 16000])
def test_log_mel_db_and_ln_equal_the_two_old_implementations_on_a_tone(sr):
    from bimsnn.data.audio import LogMel

    w = _tone(sr)
    _close(enc.log_mel(w, sr, n_mels=20), _old_encoding_log_mel(w, sr, n_mels=20))
    _close(enc.log_mel(torch.stack([w, 0.5 * w]), sr),                   # channels averaged
           _old_encoding_log_mel(torch.stack([w, 0.5 * w]), sr))
    _close(LogMel(sr, 32, hop_ms=8.0, f_min=50.0).features(w),
           _old_audio_log_mel(w, sr, 32, hop_ms=8.0, f_min=50.0))
    _close(LogMel(sr).features(w), _old_audio_log_mel(w, sr))


def test_log_mel_equals_the_two_old_implementations_on_real_fsdd(shared_data):
    from bimsnn.data.audio import FSDD, LogMel

    path = sorted((shared_data / "fsdd" / "recordings").glob("*.wav"))[0]
    pipe = LogMel(8000, 40, hop_ms=10.0, f_min=50.0)                    # keyword spotting's
    wave = pipe.load(path)
    _close(pipe(path), _old_audio_log_mel(wave, 8000, 40, f_min=50.0))
    _close(FSDD(path.parent, pipeline=pipe)[0][0], _old_audio_log_mel(wave, 8000, 40, f_min=50.0))
    _close(LogMel(16000).features(LogMel(16000).load(path)),             # resampled 8 → 16 kHz
           _old_audio_log_mel(LogMel(16000).load(path)))
    _close(enc.log_mel(wave, 8000, n_mels=20), _old_encoding_log_mel(wave, 8000, n_mels=20))
    ln = enc.log_mel(wave, 8000, n_fft=256, f_min=50.0, scale="ln")
    _close(ln, pipe.features(wave))                                     # one implementation


def test_log_mel_bad_arguments():
    for kw in (dict(scale="log10"), dict(n_mels=0), dict(hop_ms=0.0)):
        with pytest.raises(ValueError):
            enc.log_mel(torch.zeros(800), 8000, **kw)
    with pytest.raises(ValueError):
        enc.log_mel(torch.full((800,), float("nan")), 8000)
