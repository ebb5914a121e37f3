"""Streaming monitor (issue 14): causal preprocessing, streaming ≡ offline, block-size
invariance, constant memory, adaptation, corrupt recordings.

Models here are untrained (seeded random weights): their scores vary from window to
window, which is all an equivalence test needs, and building them costs nothing.
"""

from __future__ import annotations

import hashlib
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.signal import resample_poly

from bimsnn import models
from bimsnn.data import DataError, demo
from bimsnn.data.stream import CausalEEGChain, PolyphaseResampler, RunningScale
from bimsnn.monitor import Monitor, adapt, monitor_recording, open_recording
from bimsnn.monitor.run import MonitorConfig
from bimsnn.tasks import ecg, seizure
from bimsnn.training import evaluate


def _blocks(x: np.ndarray, size: int, axis: int):
    n = x.shape[axis]
    return [np.take(x, range(a, min(a + size, n)), axis=axis) for a in range(0, n, size)]


# ------------------------------------------------------------------ stream primitives
@pytest.mark.parametrize("size", [1, 37, 10000])
def test_causal_chain_blocks_equal_one_pass(size):
    rng = np.random.default_rng(0)
    x = 1e-4 + 2e-5 * rng.standard_normal((3, 6000))
    one = CausalEEGChain(256, 32, 0.5, 15.0, 60.0, 3, 120.0, 4.0).process(x)
    ch = CausalEEGChain(256, 32, 0.5, 15.0, 60.0, 3, 120.0, 4.0)
    parts = np.concatenate([ch.process(b) for b in _blocks(x, size, 1)], axis=1)
    assert one.shape == (3, 750 - 0) and parts.shape == one.shape
    np.testing.assert_array_equal(parts, one)


def test_causal_chain_is_causal_and_filters():
    """A change at sample k leaves earlier outputs alone; a 40 Hz tone is removed."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 4096))
    y = x.copy()
    y[0, 3000:] += 5.0
    a = CausalEEGChain(256, 32, 0.5, 15.0, n_channels=1).process(x)
    b = CausalEEGChain(256, 32, 0.5, 15.0, n_channels=1).process(y)
    np.testing.assert_array_equal(a[:, :3000 // 8], b[:, :3000 // 8])
    assert np.abs(a[:, 3000 // 8 + 1:] - b[:, 3000 // 8 + 1:]).max() > 0
    t = np.arange(256 * 20) / 256
    tone = np.sin(2 * np.pi * 40 * t)[None]
    out = CausalEEGChain(256, 32, 0.5, 15.0, n_channels=1).process(tone)
    assert np.abs(out[:, 100:]).max() < 0.01       # −40 dB and more past the transient


def test_causal_chain_rejects_non_integer_ratio():
    with pytest.raises(ValueError, match="integer ratio"):
        CausalEEGChain(250, 128, 0.5, 40.0)


@pytest.mark.parametrize("up,down", [(16, 45), (1, 4), (45, 64)])
def test_polyphase_resampler_equals_resample_poly(up, down):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3001, 2))
    ref = resample_poly(x, up, down, axis=0)
    for size in (1, 37, 10000):
        r = PolyphaseResampler(up, down, 2)
        y = np.concatenate([r.process(b) for b in _blocks(x, size, 0)] + [r.flush()])
        assert y.shape == ref.shape
        np.testing.assert_allclose(y, ref, rtol=0, atol=1e-12)
        assert len(r.buf) <= 2 * len(r.h) // r.up + 2        # bounded, not the signal


def test_running_scale_warmup_and_blocks():
    rng = np.random.default_rng(3)
    y = 3.0 * rng.standard_normal((2, 2000))
    one = RunningScale(32, 60.0, 128, 2).process(y)
    rs = RunningScale(32, 60.0, 128, 2)
    parts = [rs.process(b) for b in _blocks(y, 50, 1)]
    assert parts[0].shape == (2, 0) and parts[1].shape == (2, 0)   # held until 128 samples
    np.testing.assert_allclose(np.concatenate(parts, axis=1), one, rtol=1e-13, atol=0)
    assert abs(np.std(one[:, 200:]) - 1.0) < 0.1                   # ~unit scale


# ------------------------------------------------------------------ models
@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    """Two patients × 2 files × 2 min of the CHB-MIT-layout demo."""
    root = tmp_path_factory.mktemp("demo") / "chbmit"
    demo.chbmit(root, n_patients=2, files_per_patient=2, minutes_per_file=2.0)
    return root


def _seizure_model(tmp: Path, root: Path, normalize="running") -> Path:
    pre = seizure.resolve_pre("demo", window_s=4.0, stride_s=2.0, sfreq="auto",
                              l_freq="auto", h_freq="auto", encoder="auto",
                              spike_threshold="auto", normalize=normalize, phase="auto",
                              smooth_k=2)
    ds = seizure.open_dataset(pre, root)
    from dataclasses import replace
    pre = replace(pre, channels=tuple(ds.channels))
    if normalize == "train":
        pre = replace(pre, **dict(zip(("center", "scale"), seizure.fit_scaling(
            ds, sorted(set(ds.meta["recording"]))))))
    torch.manual_seed(0)
    spec = models.spec("spiking_mamba", n_inputs=2 * len(ds.channels), n_classes=2,
                       d_model=8, d_state=4)
    model = models.build(spec)
    tc = seizure.default_train("demo")
    from dataclasses import asdict
    return models.save(tmp / "model.pt", model, spec, preprocessing=seizure.pre_dict(pre),
                       recipe="seizure_detection", threshold=0.5, rule=tc.rule,
                       lam=tc.lam, train_config=asdict(tc))


def _offline(model_pt: Path, root: Path, file: str):
    model, ck = models.load(model_pt)
    pre = seizure.pre_from_checkpoint(ck, model_pt)
    _, ws = seizure.load_all(pre, root)
    from bimsnn.monitor.core import _train_config
    rt = evaluate(model, ws, _train_config(ck))
    sel = [i for i, m in enumerate(rt["metas"]) if m["file"] == file]
    return rt["scores"][sel], np.array([rt["metas"][i]["start_s"] for i in sel])


def _stream(model_pt, rec, size: int, stop: int | None = None, group: int = 16):
    mon = Monitor(model_pt, rec.fs, group=group)
    outs = []
    for _, x in rec.blocks(max(size, 4096), stop):
        for b in _blocks(x, size, 1):
            outs.append(mon.feed(b))
    outs.append(mon.flush())
    return np.concatenate([o.scores for o in outs]), np.concatenate([o.t_s for o in outs])


@pytest.mark.parametrize("normalize", ["running", "train"])
def test_seizure_streaming_equals_offline(demo_root, tmp_path, normalize):
    mp = _seizure_model(tmp_path, demo_root, normalize)
    off, t_off = _offline(mp, demo_root, "chb02_01.edf")
    pre = seizure.pre_from_checkpoint(models.load(mp)[1], mp)
    rec = open_recording(demo_root / "chb02" / "chb02_01.edf", pre.channels)
    on, t_on = _stream(mp, rec, 10000)
    assert len(off) == len(on) == 59 and np.ptp(off) > 1e-3    # informative scores
    np.testing.assert_array_equal(t_on, t_off)
    np.testing.assert_allclose(on, off, rtol=0, atol=1e-5)


def test_seizure_block_size_invariance(demo_root, tmp_path):
    mp = _seizure_model(tmp_path, demo_root)
    pre = seizure.pre_from_checkpoint(models.load(mp)[1], mp)
    rec = open_recording(demo_root / "chb01" / "chb01_01.edf", pre.channels)
    stop = int(30 * rec.fs)                   # 30 s: one sample per call is slow
    ref = _stream(mp, rec, 10000, stop)[0]
    assert len(ref) == 14
    for size in (1, 37):
        np.testing.assert_array_equal(_stream(mp, rec, size, stop)[0], ref)


def test_monitor_memory_constant_over_two_hours(demo_root, tmp_path):
    """Peak traced memory for 2 h of generated samples ≤ 1.1 × for 10 min."""
    mp = _seizure_model(tmp_path, demo_root)
    pre = seizure.pre_from_checkpoint(models.load(mp)[1], mp)
    rng = np.random.default_rng(0)
    block = 1e-5 * rng.standard_normal((len(pre.channels), 256 * 60))   # 1 min

    def peak(minutes: int) -> int:
        mon = Monitor(mp, 256.0, group=64)
        tracemalloc.start()
        n = 0
        for _ in range(minutes):
            n += len(mon.feed(block).scores)   # scores are handed out, not kept
        n += len(mon.flush().scores)
        p = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert n == (minutes * 60 - 4) // 2 + 1
        return p

    short, long_ = peak(10), peak(120)
    assert long_ <= 1.1 * short, (short, long_)


# ------------------------------------------------------------------ ECG beats
@pytest.fixture
def ecg_dir(shared_data):
    d = shared_data / "ecg"
    if not (d / "208.atr").is_file():
        pytest.skip(f"MIT-BIH record 208 not in {d}")
    return d


def _beat_model(tmp: Path, l_freq=None, prior=()) -> Path:
    pre = ecg.ECGPre(kind="mitbih", sfreq=90, lead=(0, 1), encoder="multi_adm",
                     spike_threshold=0.03, task="multiclass", classes=("N", "V", "F"),
                     l_freq=l_freq, prior=prior)
    torch.manual_seed(0)
    spec = models.spec("spiking_mamba", n_inputs=12, n_classes=3, d_model=8, d_state=4)
    from dataclasses import asdict
    tc = ecg.default_train("mitbih")
    return models.save(tmp / "ecg.pt", models.build(spec), spec,
                       preprocessing=ecg.pre_dict(pre), recipe="ecg_classification",
                       rule=tc.rule, classes=list(pre.classes), train_config=asdict(tc))


@pytest.mark.parametrize("l_freq, prior", [(None, ()), (0.5, (0.5, 0.35, 0.15))])
def test_beat_streaming_equals_offline(ecg_dir, tmp_path, l_freq, prior):
    """0.5 Hz and a class prior: what the recipe's MIT-BIH model.pt carries."""
    mp = _beat_model(tmp_path, l_freq, prior)
    model, ck = models.load(mp)
    pre = ecg.pre_from_checkpoint(ck, mp)
    sets, _ = ecg.load_sets(pre, ecg_dir, split=None, records=["208"])
    from bimsnn.monitor.core import _train_config
    rt = evaluate(model, sets["test"], _train_config(ck))
    rec = open_recording(ecg_dir / "208", [0, 1])
    from bimsnn.monitor.run import beat_table
    r, _ = beat_table(rec, ["N", "V", "F"])
    mon = Monitor(mp, rec.fs, group=64)
    outs = []
    for a, x in rec.blocks(10000):
        outs.append(mon.feed(x, r[(r >= a) & (r < a + x.shape[1])]))
    outs.append(mon.flush())
    on = np.concatenate([o.scores for o in outs])
    smp = np.concatenate([o.sample for o in outs])
    off_smp = np.array([m["sample"] for m in rt["metas"]])
    np.testing.assert_array_equal(smp, off_smp)
    assert on.shape == rt["scores"].shape and len(on) > 1500
    off = ecg.prior_scores(rt["scores"], prior) if prior else rt["scores"]
    np.testing.assert_allclose(on, off, rtol=0, atol=1e-5)
    if prior:
        assert not np.allclose(on, rt["scores"], atol=1e-3)   # the prior was applied


# ------------------------------------------------------------------ adaptation
def _sha(p: Path) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def test_adaptation_touches_only_a_copy_and_is_deterministic(demo_root, tmp_path):
    mp = _seizure_model(tmp_path, demo_root)
    before = _sha(mp)
    model, ck = models.load(mp)
    w0 = {k: v.clone() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    n_in = 2 * len(ck["preprocessing"]["channels"])
    x = torch.from_numpy((rng.random((24, 128, n_in)) < 0.1).astype(np.uint8))
    y = np.array([0, 1] * 12)
    a1, info = adapt(model, ck, x, y, rule="hybrid", epochs=2, seed=5)
    a2, _ = adapt(model, ck, x, y, rule="hybrid", epochs=2, seed=5)
    for k, v in model.state_dict().items():
        assert torch.equal(v, w0[k])                      # the loaded model: untouched
    assert any(not torch.equal(a1.state_dict()[k], w0[k]) for k in w0)   # it learned
    for k in w0:
        assert torch.equal(a1.state_dict()[k], a2.state_dict()[k])       # same seed
    a3, _ = adapt(model, ck, x, y, rule="rtrl", epochs=2, seed=5)
    assert any(not torch.equal(a3.state_dict()[k], a1.state_dict()[k]) for k in w0)
    assert info["n"] == 24 and info["chunk"] == ck["train_config"]["chunk"]
    assert _sha(mp) == before                              # nor the file


def test_cli_adapts_and_writes_outputs(demo_root, tmp_path):
    mp = _seizure_model(tmp_path, demo_root)
    before = _sha(mp)
    out = tmp_path / "mon"
    from bimsnn.monitor import main
    summ = main([str(mp), str(demo_root / "chb02" / "chb02_02.edf"), "--out", str(out),
                 "--adapt-minutes", "1", "--adapt-epochs", "1", "--block-s", "20"])
    res = summ["recordings"]["chb02_02"]
    d = out / "chb02_02"
    for f in ("events.csv", "scores.npz", "timeline.png", "metrics.json"):
        assert (d / f).is_file(), f
    s = np.load(d / "scores.npz")
    assert len(s["t_s"]) == 59 and "labels" in s.files
    assert res["real_time_factor"] > 0 and _sha(mp) == before
    if isinstance(res.get("adaptation"), dict):        # the first minute had both classes
        assert (d / "adapted_model.pt").is_file()
        after = s["t_s"] + 4.0 > 60         # windows completed after the first minute
        assert not np.array_equal(s["scores"][after], s["scores_general"][after])
        np.testing.assert_array_equal(s["scores"][~after], s["scores_general"][~after])
    else:
        assert "skipped" in res["adaptation"]


# ------------------------------------------------------------------ bad recordings
def test_truncated_edf_is_a_data_error(demo_root, tmp_path):
    mp = _seizure_model(tmp_path, demo_root)
    bad = tmp_path / "cut.edf"
    raw = (demo_root / "chb01" / "chb01_01.edf").read_bytes()
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="cut.edf.*truncated"):
        monitor_recording(mp, bad, tmp_path / "o", MonitorConfig(adapt_minutes=0))


def test_nan_block_keeps_events_written_so_far(demo_root, tmp_path, monkeypatch):
    mp = _seizure_model(tmp_path, demo_root)
    src = demo_root / "chb02" / "chb02_01.edf"
    full = monitor_recording(mp, src, tmp_path / "full", MonitorConfig(
        adapt_minutes=0, threshold=0.0, block_s=10))
    # threshold so that alarms open and close in the first minute
    s = np.load(tmp_path / "full" / "scores.npz")["scores"]
    thr = float(np.quantile(s, 0.5))
    cfg = MonitorConfig(adapt_minutes=0, threshold=thr, block_s=10, group=1)
    monitor_recording(mp, src, tmp_path / "ref", cfg)
    ref = (tmp_path / "ref" / "events.csv").read_text().splitlines()

    import bimsnn.monitor.recording as R
    orig = R.Recording._read

    def poisoned(self, a, b):
        x = orig(self, a, b)
        if a >= 90 * self.fs:
            x[0, 5] = np.nan
        return x

    monkeypatch.setattr(R.Recording, "_read", poisoned)
    with pytest.raises(DataError, match=r"chb02_01\.edf.*NaN"):
        monitor_recording(mp, src, tmp_path / "bad", cfg)
    kept = (tmp_path / "bad" / "events.csv").read_text().splitlines()
    closed_before = [r for r in ref[1:] if float(r.split(",")[1]) < 88]
    assert full["n_scored"] if "n_scored" in full else True
    assert kept[0] == "onset_s,offset_s,peak" and len(kept) - 1 >= len(closed_before) >= 1
    assert kept[1:len(closed_before) + 1] == closed_before
    assert (tmp_path / "bad" / "scores.npz").is_file()


def test_zero_phase_model_is_refused(demo_root, tmp_path):
    mp = _seizure_model(tmp_path, demo_root)
    model, ck = models.load(mp)
    pre = dict(ck["preprocessing"], phase="zero")
    z = models.save(tmp_path / "zero.pt", model, ck["spec"], preprocessing=pre,
                    threshold=0.5, rule="bptt")
    from bimsnn.training import CheckpointError
    with pytest.raises(CheckpointError, match="zero-phase"):
        Monitor(z, 256.0)
    shutil.rmtree(tmp_path / "o", ignore_errors=True)


def test_channels_map_any_edf_and_name_the_problem(demo_root, tmp_path):
    """--channels feeds an EDF's own labels to the model's inputs; a wrong list is one
    DataError naming the file."""
    mp = _seizure_model(tmp_path, demo_root)
    pre = seizure.pre_from_checkpoint(models.load(mp)[1], mp)
    src = demo_root / "chb02" / "chb02_01.edf"
    ref = monitor_recording(mp, src, tmp_path / "a", MonitorConfig(adapt_minutes=0))
    low = [c.lower() for c in pre.channels]              # EDF labels match case-blind
    same = monitor_recording(mp, src, tmp_path / "b", MonitorConfig(adapt_minutes=0,
                                                                     channels=low))
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "scores.npz")["scores"],
                                  np.load(tmp_path / "b" / "scores.npz")["scores"])
    assert ref["n_scored"] == same["n_scored"]
    with pytest.raises(DataError, match="chb02_01.edf.*takes"):
        monitor_recording(mp, src, tmp_path / "c", MonitorConfig(adapt_minutes=0,
                                                                 channels=low[:3]))
    with pytest.raises(DataError, match=r"chb02_01.edf.*lacks channels \['NOPE'\]"):
        monitor_recording(mp, src, tmp_path / "d", MonitorConfig(
            adapt_minutes=0, channels=["nope", *low[1:]]))
