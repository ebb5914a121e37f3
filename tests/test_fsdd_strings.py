"""FSDD digit strings (bimsnn.data.FSDDStrings) and the speech-recognition recipe on them.

A small FSDD-layout folder of synthetic clips (a distinct tone per digit, a noise floor at
the edges) checks the composition exactly; the recipe runs on the real shared FSDD copy
(skipped where it is absent) and on that folder for ``--eval-only``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from bimsnn.data import DataError, FSDDStrings
from bimsnn.data.fsdd_strings import DIGIT_WORDS, digits_text, fsdd_files, split_files

SR = 8000
TINY = ["--fsdd-utts", "8", "--epochs", "1", "--d-model", "16", "--n-layers", "1",
        "--d-state", "4", "--batch-size", "4", "--stack", "4", "--no-progress"]


@pytest.fixture(autouse=True)
def _keep_threads():
    """main() sets torch's thread count for its process; give the test process its own back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _clip(digit: int, take: int) -> np.ndarray:
    """(N,) float32: 0.2-0.3 s tone of 300 + 250·digit Hz between 20 ms of faint noise."""
    rng = np.random.default_rng(100 * digit + take)
    n = int(SR * (0.2 + 0.01 * (take % 10)))
    tone = 0.4 * np.sin(2 * np.pi * (300 + 250 * digit) * np.arange(n) / SR)
    edge = 0.001 * rng.standard_normal(int(0.02 * SR))
    return np.concatenate([edge, tone, edge]).astype(np.float32)


@pytest.fixture
def fsdd(tmp_path):
    """``{digit}_{speaker}_{take}.wav`` for 2 speakers, 10 digits, takes 0-11."""
    root = tmp_path / "fsdd"
    root.mkdir()
    for speaker in ("ann", "bob"):
        for d in range(10):
            for take in range(12):
                sf.write(root / f"{d}_{speaker}_{take}.wav", _clip(d, take), SR,
                         subtype="PCM_16")
    return root


def test_transcripts_match_the_digits_and_gaps_are_in_range(fsdd):
    ds = FSDDStrings(fsdd, n_utts=30, seed=3)
    lengths = set()
    for wave, text, meta in ds:
        digits = meta["digits"]
        lengths.add(len(digits))
        assert 2 <= len(digits) <= 7
        assert text == " ".join(DIGIT_WORDS[d] for d in digits) == meta["text"]
        # each file used is of that digit and of the utterance's one speaker
        for d, path in zip(digits, meta["files"]):
            name = path.rsplit("/", 1)[-1]
            assert name.startswith(f"{d}_{meta['speaker']}_")
        gaps = np.asarray(meta["gaps_ms"])
        assert len(gaps) == len(digits) and (gaps >= 50).all() and (gaps <= 300).all()
        # the wave is exactly the files and the pauses, in order
        clips = [sf.read(p, dtype="float32")[0] for p in meta["files"]]
        pauses = [round(g / 1000 * SR) for g in gaps]
        assert len(wave) == sum(map(len, clips)) + sum(pauses)
        at = 0
        for clip, pause in zip(clips, pauses):
            assert wave[at: at + pause].abs().max() < 0.02         # a pause is quiet
            at += pause
            np.testing.assert_array_equal(wave[at: at + len(clip)].numpy(), clip)
            at += len(clip)
        assert at == len(wave)                                     # ends with the last digit
    assert lengths >= {2, 7} or len(lengths) >= 4                 # the range is used


def test_same_seed_same_utterances_other_seed_differs(fsdd):
    a, b = FSDDStrings(fsdd, n_utts=6, seed=1), FSDDStrings(fsdd, n_utts=6, seed=1)
    c = FSDDStrings(fsdd, n_utts=6, seed=2)
    for i in range(6):
        assert torch.equal(a[i][0], b[i][0]) and a[i][2] == b[i][2]
    assert [a[i][2]["files"] for i in range(6)] != [c[i][2]["files"] for i in range(6)]
    assert not torch.equal(a[0][0], c[0][0])


def test_splits_by_takes_and_by_speaker(fsdd):
    files = fsdd_files(fsdd)
    takes = {k: {f[3] for f in split_files(files, k)} for k in ("train", "val", "test")}
    assert takes == {"test": set(range(5)), "val": set(range(5, 10)), "train": {10, 11}}
    spk = {k: split_files(files, k, "speaker", ["bob"]) for k in ("train", "val", "test")}
    assert {f[2] for f in spk["test"]} == {"bob"} and len(spk["test"]) == 120
    assert {f[2] for f in spk["train"] + spk["val"]} == {"ann"}
    assert {f[3] for f in spk["val"]} == set(range(5))
    test = FSDDStrings(fsdd, n_utts=10, split="test", seed=0)
    assert all(int(p.rsplit("_", 1)[1][:-4]) <= 4 for _, _, m in test for p in m["files"])
    assert test[0][2]["files"] != FSDDStrings(fsdd, n_utts=10, split="val")[0][2]["files"]


def test_per_file_and_features(fsdd):
    from bimsnn.data import LogMel

    ds = FSDDStrings(fsdd, per_file=True, pipeline=LogMel(SR, 20))
    assert len(ds) == 240
    x, text, meta = ds[37]
    assert x.dim() == 2 and x.shape[1] == 20 and len(meta["digits"]) == 1
    assert text == digits_text(meta["digits"]) and meta["files"] == [str(ds.files[37][0])]


def test_no_fsdd_files_is_a_data_error_naming_the_folder(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"")
    with pytest.raises(DataError, match=str(tmp_path)):
        FSDDStrings(tmp_path)


def test_recipe_on_real_fsdd_tiny(recipe, shared_data, tmp_path):
    asr = recipe("speech_recognition")
    res = asr.main(["--dataset", "fsdd_strings", "--data-dir", str(shared_data / "fsdd"),
                    "--out", str(tmp_path), *TINY])
    assert res["data"]["dataset"] == "fsdd_strings" and res["n_test"] == 2
    assert 0 <= res["cer"] and 0 <= res["wer"]
    refs = [e["ref"] for e in res["examples"]]
    assert all(set(r.split()) <= {w.upper() for w in DIGIT_WORDS} for r in refs)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["config"]["features"]["sample_rate"] == SR
    assert m["config"]["features"]["dataset"] == "fsdd_strings"


def test_eval_only_on_an_fsdd_folder_scores_every_file(recipe, fsdd, tmp_path):
    asr = recipe("speech_recognition")
    small = tmp_path / "small"
    small.mkdir()
    for p in sorted(fsdd.glob("*_ann_1[01].wav")):                 # 20 files
        p.rename(small / p.name)
    asr.main(["--dataset", "fsdd_strings", "--data-dir", str(fsdd), "--out",
              str(tmp_path / "run"), *TINY])
    ev = asr.main(["--eval-only", "--checkpoint", str(tmp_path / "run" / "model.pt"),
                   "--data-dir", str(small), "--out", str(tmp_path / "ev"), "--no-progress"])
    assert ev["data"]["dataset"] == "fsdd_strings" and ev["n_test"] == 20
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["wer"] == ev["wer"] and m["cer"] == ev["cer"] and 0 <= m["cer"]
    assert m["n_test"] == 20


def test_word_units_round_trip_and_refuse_an_unknown_word():
    from bimsnn.tasks.asr import CHAR_UNITS, DIGIT_UNITS, ASRPre

    ids = DIGIT_UNITS.encode("three one  four")
    assert ids == [4, 2, 5] and DIGIT_UNITS.n_classes == 11
    assert DIGIT_UNITS.decode([0, 4, 0, 2, 5, 99]) == "THREE ONE FOUR"   # blank, unknown dropped
    assert CHAR_UNITS.decode(CHAR_UNITS.encode("He's")) == "HE'S" and CHAR_UNITS.n_classes == 29
    with pytest.raises(ValueError, match="'TEN'"):
        DIGIT_UNITS.encode("one ten")
    assert ASRPre(units="word").vocab is DIGIT_UNITS and ASRPre().vocab is CHAR_UNITS


def test_recipe_word_units_on_digit_strings_and_eval_only_keeps_them(recipe, fsdd, tmp_path):
    """--units auto is the digit words on fsdd_strings: 11 outputs, one label per digit;
    --eval-only decodes with the checkpoint's units; --units char gives 29 outputs."""
    from bimsnn.data import LogMel
    from bimsnn.tasks.asr import DIGIT_UNITS, ASRPre, UttSet, collate_ctc

    asr = recipe("speech_recognition")
    res = asr.main(["--dataset", "fsdd_strings", "--data-dir", str(fsdd), "--out",
                    str(tmp_path / "run"), *TINY])
    assert res["model"]["kwargs"]["n_classes"] == 11
    assert res["config"]["features"]["units"] == "word"
    # the per-dataset defaults apply when the flag is not given (TINY gives --stack, not --beta)
    assert res["config"]["recipe"]["beta"] == 0.5 and res["model"]["kwargs"]["beta"] == 0.5
    ev = asr.main(["--eval-only", "--checkpoint", str(tmp_path / "run" / "model.pt"),
                   "--data-dir", str(fsdd), "--out", str(tmp_path / "ev"), "--no-progress"])
    assert ev["config"]["features"]["units"] == "word"
    assert all(set(e["hyp"].split()) <= set(DIGIT_UNITS.symbols) for e in ev["examples"])
    ch = asr.main(["--dataset", "fsdd_strings", "--data-dir", str(fsdd), "--out",
                   str(tmp_path / "char"), "--units", "char", *TINY])
    assert ch["model"]["kwargs"]["n_classes"] == 29
    # the labels are one id per digit: "three one four" -> 3 labels
    pre = ASRPre(dataset="fsdd_strings", sample_rate=SR, n_mels=16, units="word")
    base = FSDDStrings(fsdd, 4, split="train", seed=0, sample_rate=SR,
                       pipeline=LogMel(SR, pre.n_mels))
    ds = UttSet(base, pre.code, pre.stack, vocab=pre.vocab)
    x, (labels, _, tgt_lens), metas = collate_ctc([ds[i] for i in range(4)], DIGIT_UNITS)
    for row, n, m in zip(labels, tgt_lens, metas):
        assert n == len(m["text"].split())
        assert DIGIT_UNITS.decode(row[:n].tolist()) == m["text"].upper()


def test_dataset_defaults_follow_the_detected_dataset(fsdd):
    from bimsnn.tasks.asr import dataset_defaults

    d = dataset_defaults("auto", fsdd)
    assert d["recipe"] == {"stack": 4, "beta": 0.5} and d["train"]["epochs"] == 15
    assert dataset_defaults("auto", None) == {"recipe": {}, "train": {}}
    assert dataset_defaults("librispeech", fsdd) == {"recipe": {}, "train": {}}
