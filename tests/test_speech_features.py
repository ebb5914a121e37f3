"""Speech features: speaker-level CMVN, fixed length (crop / stretch), speed perturbation.

Symbols: T frames, F mel bands. Tolerances: float32 statistics ≤ 1e-4 (measured ~1e-6).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from bimsnn.data import DataError
from bimsnn.data.audio import FSDD, LogMel
from bimsnn.data.speech_features import (
    fix_length,
    load_features,
    normalise,
    speaker_stats,
    speed_resampler,
)

SR = 8000


def _tone_fsdd(root: Path) -> Path:
    """Two speakers × 2 digits × 2 takes of pure tones (speaker sets the pitch)."""
    rec = root / "recordings"
    rec.mkdir(parents=True)
    t = np.arange(int(0.25 * SR)) / SR
    for s, (speaker, f0) in enumerate([("ann", 300.0), ("bob", 900.0)]):
        for digit in range(2):
            for take in range(2):
                f = f0 * (1 + 0.5 * digit) * (1 + 0.02 * take)
                amp = 0.1 * (1 + s)                       # bob is louder: a channel offset
                sf.write(rec / f"{digit}_{speaker}_{take}.wav",
                         (amp * np.sin(2 * np.pi * f * t)).astype(np.float32), SR)
    return root


def test_speaker_norm_uses_each_speakers_own_statistics(tmp_path):
    ds = FSDD(_tone_fsdd(tmp_path), pipeline=LogMel(SR, 20, f_min=50.0))
    idx = np.arange(len(ds))
    z = load_features(ds, idx, frames=30, norm="speaker", fit="stretch")
    assert z.shape == (8, 30, 20)
    mels = [ds[i][0] for i in idx]
    speakers = [ds.items[i][2]["speaker"] for i in idx]
    for s in ("ann", "bob"):
        frames = torch.cat([m for m, k in zip(mels, speakers) if k == s])
        mean, std = speaker_stats(mels, speakers)[s]
        assert torch.allclose(mean, frames.mean(0)) and torch.allclose(std, frames.std(0))
        normed = torch.cat([normalise(m, "speaker", (mean, std))
                            for m, k in zip(mels, speakers) if k == s])
        assert torch.allclose(normed.mean(0), torch.zeros(20), atol=1e-4)   # per band
        assert torch.allclose(normed.std(0), torch.ones(20), atol=1e-4)
    # A pure gain (channel) change is removed exactly: log-mel shifts by a constant.
    louder = [m + 2.0 for m in mels]
    st = speaker_stats(louder, speakers)
    assert torch.allclose(normalise(louder[0], "speaker", st[speakers[0]]),
                          normalise(mels[0], "speaker", speaker_stats(mels, speakers)[speakers[0]]),
                          atol=1e-4)


def test_normalise_errors():
    with pytest.raises(ValueError, match="speaker"):
        normalise(torch.zeros(3, 2), "speaker")
    with pytest.raises(ValueError, match="normalisation"):
        normalise(torch.zeros(3, 2), "bogus")
    with pytest.raises(ValueError, match="fit"):
        fix_length(torch.zeros(3, 2), 4, 0.0, "bogus")


def test_fix_length_crop_and_stretch():
    z = torch.arange(10.0).repeat(2, 1).T                           # (10, 2), value = frame
    assert fix_length(z, 4, -1.0)[:, 0].tolist() == [3, 4, 5, 6]     # centre crop
    padded = fix_length(z[:3], 5, -1.0)
    assert padded[:, 0].tolist() == [-1, -1, 0, 1, 2]                # front pad: ends at the end
    s = fix_length(z, 19, -1.0, "stretch")                          # linear, endpoints kept
    assert s.shape == (19, 2) and torch.allclose(s[:, 0], torch.linspace(0, 9, 19))


@pytest.mark.parametrize("factor", [0.8, 1.25])
def test_speed_perturbation_scales_pitch_and_duration(factor):
    rs, exact = speed_resampler(SR, factor)
    assert abs(exact - factor) < 0.02
    t = np.arange(SR) / SR
    wave = torch.from_numpy(np.sin(2 * np.pi * 500.0 * t).astype(np.float32))
    out = rs(wave)                       # played back at SR: pitch ×exact, duration ÷exact
    assert abs(len(out) - len(wave) / exact) <= 2
    spec = np.abs(np.fft.rfft(out.numpy()))
    peak_hz = np.argmax(spec) * SR / len(out)
    assert abs(peak_hz - 500.0 * exact) < 3.0
    assert speed_resampler(SR, 1.0) == (None, 1.0)
    with pytest.raises(ValueError, match="> 0"):
        speed_resampler(SR, 0.0)


def test_speed_perturbed_features_differ_and_keep_shape(tmp_path):
    ds = FSDD(_tone_fsdd(tmp_path), pipeline=LogMel(SR, 20, f_min=50.0))
    base = load_features(ds, [0, 1], frames=20, norm="cmn", fit="stretch")
    slow = load_features(ds, [0, 1], frames=20, norm="cmn", fit="stretch", speed=0.8)
    assert base.shape == slow.shape == (2, 20, 20)
    # The tone moves down in mel: the peak band of the slowed copy is lower.
    assert slow[0].mean(0).argmax() < base[0].mean(0).argmax()


def test_one_training_copy_per_speed(tmp_path):
    """Keyword spotting's --speed-perturb 0.9 1.1 (bimsnn.tasks.speech.spike_sets): the
    training set holds 3 copies (the perturbed ones differ), the test set stays unperturbed."""
    from bimsnn.tasks.speech import KWSPre, spike_sets

    ds = FSDD(_tone_fsdd(tmp_path), pipeline=LogMel(SR, 20, f_min=50.0))
    idx = np.arange(len(ds))
    pre = KWSPre(n_mels=20, duration_s=0.2, norm="speaker", fit="stretch")
    sets = spike_sets({"train": (ds, idx), "test": (ds, idx)}, pre, augment=False,
                      speed_perturb=(0.9, 1.1))
    assert len(sets["train"]) == 3 * len(idx) and len(sets["test"]) == len(idx)
    x0, y0, _ = sets["train"][0]                                   # (frames, C)
    x1, y1, _ = sets["train"][len(idx)]
    assert x0.shape == (pre.frames, pre.n_inputs)
    assert y0 == y1 and x0.shape == x1.shape and not torch.equal(x0, x1)
    assert torch.equal(sets["test"][0][0], x0)


@pytest.mark.parametrize("speed", [1.0, 1.25])
def test_audio_shorter_than_one_window_is_a_data_error_naming_the_file(tmp_path, speed):
    """load_features checks the analysis window after loading (and speed perturbation)
    and before the log-mel: short audio is a DataError naming the file, not an STFT error."""
    root = _tone_fsdd(tmp_path)
    short = root / "recordings" / "1_bob_7.wav"
    sf.write(short, np.zeros(150, dtype=np.float32), SR)            # < 200-sample window
    ds = FSDD(root, pipeline=LogMel(SR, 20, f_min=50.0))
    k = next(i for i, it in enumerate(ds.items) if it[0] == short)
    with pytest.raises(DataError, match="1_bob_7.wav"):
        load_features(ds, [0, k], frames=10, speed=speed)
    assert load_features(ds, [0], frames=10, speed=speed).shape == (1, 10, 20)


# ---------------------------------------------------------------------------- SpikeCode
def _old_spike_code(z, levels=4, delta=None, lo=-1.5, hi=1.5):
    """bimsnn.data.speech_features.SpikeCode.__call__ before it moved to bimsnn.encoding."""
    lv = torch.linspace(lo, hi, levels) if levels > 1 else torch.zeros(1)
    out = [(z.unsqueeze(-1) >= lv).flatten(-2)]
    if delta:
        d = torch.diff(z, dim=0, prepend=z[:1])
        out += [d >= delta, d <= -delta]
    return torch.cat(out, -1).float()


@pytest.mark.parametrize("levels,delta", [(1, None), (2, None), (4, 0.3), (6, 0.05), (3, 0.0)])
def test_spike_code_moved_to_encoding_unchanged(levels, delta):
    from bimsnn import encoding
    from bimsnn.data import speech_features

    assert speech_features.SpikeCode is encoding.SpikeCode          # one class, re-exported
    z = torch.randn(50, 8, generator=torch.Generator().manual_seed(levels))
    z[10:20] = -10.0                                                   # SpikeSet.SILENCE pad
    code = encoding.SpikeCode(levels, delta)
    s = code(z)
    assert s.shape == (50, code.n_channels(8)) and s.dtype == torch.float32
    assert torch.equal(s, _old_spike_code(z, levels, delta))
    assert torch.equal(s, encoding.thermometer(z, levels, delta=delta))
    assert torch.equal(encoding.SpikeCode(levels, delta, -1.0, 2.0)(z.double()),
                       _old_spike_code(z.double(), levels, delta, -1.0, 2.0))
