"""Audio loaders: FSDD on the real recordings, generated Speech Commands / LibriSpeech / class
folders, the log-mel pipeline and bad-file errors.

Symbols: N samples, T frames, F mel bands, B batch.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import soundfile as sf
import torch

from bimsnn.data import DataError
from bimsnn.data.audio import (
    FSDD,
    AudioFolder,
    LibriSpeech,
    LogMel,
    SpeechCommands,
    pad_time_major,
)
from bimsnn.encoding import MelThresholdEncoder


def _tone(seconds, rate, seed, channels=1):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 900) * t) + 0.01 * rng.normal(size=t.shape)
    return np.repeat(x[:, None], channels, axis=1).astype(np.float32)


def test_fsdd_all_files_labels_and_headers(shared_data):
    ds = FSDD(shared_data / "fsdd")
    assert len(ds) == 2000
    metas = [ds.items[i][2] for i in range(len(ds))]
    digits = [ds.items[i][1] for i in range(len(ds))]
    assert Counter(digits) == {d: 200 for d in range(10)}
    assert Counter(m["speaker"] for m in metas) == {s: 500 for s in
                                                     ("george", "jackson", "nicolas", "theo")}
    assert {m["take"] for m in metas} == set(range(50))
    for (path, digit, meta, _) in ds.items[::97]:  # labels really come from the file name
        assert path.name == f"{digit}_{meta['speaker']}_{meta['take']}.wav"
    heads = ds.headers()  # soundfile.info on every file: no samples read
    assert len(heads) == 2000 and (heads.samplerate == 8000).all()
    assert (heads.channels == 1).all() and (heads.frames > 0).all()


def test_fsdd_logmel_and_spikes_shapes(shared_data):
    spikes = FSDD(shared_data / "fsdd", n_mels=32, encoder=MelThresholdEncoder(n_levels=4))
    plain = FSDD(shared_data / "fsdd", n_mels=32)
    for i in np.random.default_rng(0).choice(len(plain), 40, replace=False):
        x, digit, meta = plain[int(i)]
        frames = sf.info(meta["path"]).frames
        assert x.shape == (1 + frames // 80, 32) and x.dtype == torch.float32  # 10 ms hop @ 8 kHz
        assert torch.isfinite(x).all() and 0 <= digit <= 9
        s, _, _ = spikes[int(i)]  # up/down crossings of 4 levels per band: (T, 2 * F * 4)
        assert s.shape == (x.shape[0], 2 * 32 * 4) and set(s.unique().tolist()) <= {0.0, 1.0}
        assert 0 < s.mean() < 0.5 and s[0].sum() == 0  # sparse; nothing fires at t = 0
    batch = [plain[i] for i in range(5)]
    x, y, metas, lengths = pad_time_major(batch)
    assert x.shape == (int(lengths.max()), 5, 32) and y.tolist() == [b[1] for b in batch]
    assert torch.equal(x[: lengths[2], 2], batch[2][0]) and (x[lengths[2]:, 2] == 0).all()


def test_fsdd_splits_are_disjoint(shared_data):
    root = shared_data / "fsdd"
    ds = FSDD(root)
    tr, te = ds.split("takes")
    assert len(te) == 200 and set(tr).isdisjoint(te) and len(tr) + len(te) == 2000
    assert all(ds.items[i][2]["take"] <= 4 for i in te)
    assert all(ds.items[i][2]["take"] >= 5 for i in tr)
    for kwargs in ({"test_speakers": ("theo",)}, {"seed": 3}):
        tr, te = ds.split("speakers", **kwargs)
        spk_tr = {ds.items[i][2]["speaker"] for i in tr}
        spk_te = {ds.items[i][2]["speaker"] for i in te}
        assert spk_tr.isdisjoint(spk_te) and len(spk_te) == 1 and len(tr) + len(te) == 2000
    test = FSDD(root, subset="test", split="speakers", test_speakers=("theo",))
    train = FSDD(root, subset="train", split="speakers", test_speakers=("theo",))
    assert {m["speaker"] for _, _, m, _ in test.items} == {"theo"}
    assert "theo" not in {m["speaker"] for _, _, m, _ in train.items}


def test_bad_audio_files_raise_data_error(tmp_path):
    empty, stereo = tmp_path / "0_empty_0.wav", tmp_path / "1_stereo_0.wav"
    sf.write(empty, np.zeros((0,), np.float32), 8000)
    sf.write(stereo, _tone(0.5, 8000, 0, channels=2), 8000)
    ds = FSDD(tmp_path)
    with pytest.raises(DataError, match="empty audio") as err:
        ds[0]
    assert err.value.path == empty
    with pytest.raises(DataError, match="2 channels; mono audio required") as err:
        ds[1]
    assert err.value.path == stereo
    (tmp_path / "junk.wav").write_bytes(b"not a wav at all")
    with pytest.raises(DataError, match="file name") as err:
        FSDD(tmp_path)
    assert err.value.path == tmp_path / "junk.wav"
    (tmp_path / "junk.wav").rename(tmp_path / "2_junk_0.wav")
    with pytest.raises(DataError, match="unreadable audio"):
        FSDD(tmp_path)[2]


def test_librispeech_layout_loads(tmp_path):
    base = tmp_path / "LibriSpeech" / "dev-clean"
    texts = {}
    for spk, chap, ext in [(84, 121123, ".flac"), (174, 50561, ".flac")]:
        folder = base / str(spk) / str(chap)
        folder.mkdir(parents=True)
        lines = []
        for utt in range(2):
            fid = f"{spk}-{chap}-{utt:04d}"
            sf.write(folder / f"{fid}{ext}", _tone(0.4 + 0.1 * utt, 16000, spk + utt), 16000)
            texts[fid] = f"HELLO WORLD {spk} {utt}"
            lines.append(f"{fid} {texts[fid]}")
        (folder / f"{spk}-{chap}.trans.txt").write_text("\n".join(lines) + "\n")
    ds = LibriSpeech(tmp_path, url="dev-clean", n_mels=20)
    assert len(ds) == 4
    for i in range(4):
        x, text, meta = ds[i]
        fid = f"{meta['speaker_id']}-{meta['chapter_id']}-{meta['utterance_id']:04d}"
        assert text == texts[fid] and x.shape == (1 + sf.info(meta["path"]).frames // 160, 20)
    (base / "84" / "121123" / "84-121123-0001.flac").unlink()
    with pytest.raises(DataError, match="not found") as err:
        LibriSpeech(tmp_path, url="dev-clean")
    assert err.value.path.name == "84-121123-0001.flac"
    # WAV instead of FLAC, same layout
    wav_base = tmp_path / "wav" / "LibriSpeech" / "test-clean" / "1" / "2"
    wav_base.mkdir(parents=True)
    sf.write(wav_base / "1-2-0000.wav", _tone(0.3, 16000, 9), 16000)
    (wav_base / "1-2.trans.txt").write_text("1-2-0000 A B C\n")
    assert LibriSpeech(tmp_path / "wav", url="test-clean", ext_audio=".wav")[0][1] == "A B C"


def _speech_commands(root):
    rng = np.random.default_rng(0)
    for word in ("yes", "no", "cat", "dog", "bird"):
        (root / word).mkdir(parents=True)
        for k in range(4):
            sf.write(root / word / f"{k:08x}_nohash_{k % 2}.wav",
                     _tone(rng.uniform(0.6, 1.0), 16000, k), 16000)
    (root / "_background_noise_").mkdir()
    sf.write(root / "_background_noise_" / "white.wav",
             (0.1 * rng.normal(size=48000)).astype(np.float32), 16000)
    (root / "validation_list.txt").write_text("yes/00000000_nohash_0.wav\ncat/00000001_nohash_1.wav\n")
    (root / "testing_list.txt").write_text("no/00000002_nohash_0.wav\ndog/00000003_nohash_1.wav\n")


def test_speech_commands_subsets_and_12_classes(tmp_path):
    _speech_commands(tmp_path)
    subsets = {s: SpeechCommands(tmp_path, subset=s) for s in ("training", "validation", "testing")}
    paths = {s: {m["path"] for _, _, m, _ in d.items} for s, d in subsets.items()}
    assert sum(map(len, paths.values())) == 20 and len(set().union(*paths.values())) == 20
    assert {m["word"] for _, _, m, _ in subsets["testing"].items} == {"no", "dog"}
    assert subsets["training"].classes == ["bird", "cat", "dog", "no", "yes"]
    kws = SpeechCommands(tmp_path, subset="training", classes="v2_12", unknown_percentage=50,
                         silence_percentage=50, n_mels=24)
    assert kws.classes[:3] == ["_silence_", "_unknown_", "yes"] and len(kws.classes) == 12
    labels = Counter(kws.classes[y] for _, y, _, _ in kws.items)
    assert labels == {"yes": 3, "no": 3, "_unknown_": 3, "_silence_": 3}
    for i in range(len(kws)):
        x, y, meta = kws[i]
        assert x.shape == (101, 24) and torch.isfinite(x).all()  # padded to 1 s
        assert (meta["word"] == "_silence_") == (y == 0)
    again = SpeechCommands(tmp_path, subset="training", classes="v2_12", unknown_percentage=50,
                           silence_percentage=50)
    assert [m for _, _, m, _ in again.items] == [m for _, _, m, _ in kws.items]  # seeded
    with pytest.raises(DataError, match="split list"):
        SpeechCommands(tmp_path / "yes")


def test_audio_folder_resamples_and_mixes(tmp_path):
    for k, name in enumerate(("hum", "beep")):
        (tmp_path / name).mkdir()
        sf.write(tmp_path / name / "a.wav", _tone(1.0, 16000, k, channels=2), 16000)
        sf.write(tmp_path / name / "b.flac", _tone(1.0, 16000, k + 5), 16000)
    ds = AudioFolder(tmp_path, sample_rate=8000, n_mels=16)
    assert ds.classes == ["beep", "hum"] and len(ds) == 4
    x, label, meta = ds[0]
    assert x.shape == (101, 16) and meta["class"] == "beep" and label == 0  # 8 kHz, 80-sample hop
    with pytest.raises(DataError, match="mono audio required"):
        AudioFolder(tmp_path, mono="require")[0]
    wave = LogMel(8000, mono="mix").load(tmp_path / "hum" / "a.wav")
    assert wave.shape == (8000,)
