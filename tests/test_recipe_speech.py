"""recipes/keyword_spotting.py, speech_recognition.py and language_modeling.py end to end at
tiny sizes: default outputs and ``bimsnn.models.load``, ``--eval-only``, online rules,
resume, another recipe's model.pt, bad input as one line with exit status 2.

The recipes are loaded by path (the ``recipe`` fixture) and driven through ``main(argv)``;
the one-line-error tests run them as real processes. Library parts (CTC, BPC, specs,
SequenceTarget) are tested in tests/test_speech_lm.py.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pytest
import soundfile as sf
import torch

from bimsnn import models
from bimsnn.data import Vocab
from bimsnn.paths import repo_root
from bimsnn.tasks import asr as asr_task
from bimsnn.tasks import common
from bimsnn.tasks import lm as lm_task
from bimsnn.tasks import speech as kws_task
from bimsnn.training import CheckpointError, RunError

TINY_KWS = ["--epochs", "1", "--d-model", "16", "--d-state", "4", "--duration-s", "0.3",
            "--no-progress"]
TINY_ASR = ["--smoke-utts", "8", "--epochs", "1", "--d-model", "16", "--n-layers", "1",
            "--d-state", "4", "--batch-size", "4", "--no-progress"]
TINY_LM = ["--epochs", "1", "--max-train-tokens", "1500", "--max-eval-tokens", "400",
           "--seq-len", "16", "--d-model", "16", "--d-embed", "8", "--n-layers", "1",
           "--d-state", "4", "--no-progress"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


@pytest.fixture(autouse=True)
def _keep_threads():
    """main() sets torch's thread count for its process; give the test process its own back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """Default outputs (``runs/<recipe>``) go under tmp_path, not the checkout; no shared
    FSDD, so keyword spotting writes its synthetic set."""
    monkeypatch.setattr(common, "repo_root", lambda: tmp_path)
    monkeypatch.setenv("BIMSNN_SHARED_DATA", str(tmp_path / "absent"))
    return tmp_path


def _one_line_error(argv: list[str], *names: str) -> None:
    """Run a recipe as a process: exit status 2 and one stderr line naming ``names``."""
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=ENV,
                          timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for n in names:
        assert n in lines[0], lines[0]


def _other_model(path, recipe: str):
    """A small model.pt as ``recipe`` writes it (its own preprocessing and name)."""
    if recipe == "language_modeling":
        spec = lm_task.lm_spec("mamba", 3, d_embed=4, d_model=8, d_state=4)
        pre = lm_task.lm_pre(Vocab(["<unk>", "a", "b"]), "char", 8)
    else:
        spec = models.spec("spiking_mamba", d_model=8, n_inputs=160, n_classes=10, d_state=4)
        pre = asdict(kws_task.KWSPre())
    return models.save(path, models.build(spec), spec, preprocessing=pre, recipe=recipe)


# ---------------------------------------------------------------------------- keyword spotting
@pytest.mark.slow
def test_kws_default_output_reloads_and_eval_only_scores_every_file(recipe, home):
    kws = recipe("keyword_spotting")
    res = kws.main(TINY_KWS)
    out = home / "runs" / "keyword_spotting"
    assert res["out"] == str(out) and res["data"]["synthetic"]
    for name in ("metrics.json", "confusion.png", "curves.png", "model.pt", "ckpt.pt",
                 "best.pt", "synthetic_fsdd/recordings/9_cat_9.wav"):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    for key in ("accuracy", "macro_f1", "confusion", "train_seconds", "peak_rss_mb"):
        assert key in m, key
    assert m["accuracy"] == res["accuracy"] and 0 <= m["accuracy"] <= 1
    assert m["n_test"] == 150 and np.asarray(m["confusion"]).shape == (10, 10)  # takes 0-4
    assert m["train_seconds"] > 0 and m["peak_rss_mb"] > 0
    model, ck = models.load(out / "model.pt")
    assert ck["recipe"] == "keyword_spotting" and ck["classes"] == [str(d) for d in range(10)]
    assert kws_task.pre_from_checkpoint(ck, "m") == kws_task.KWSPre(duration_s=0.3)
    assert ck["spec"] == m["model"] and model.cfg.readout == "mean_mem"

    new = home / "new" / "recordings"                      # only the test takes, elsewhere
    new.mkdir(parents=True)
    for wav in (out / "synthetic_fsdd" / "recordings").glob("*_[0-4].wav"):
        shutil.copy(wav, new)
    ev = kws.main(["--eval-only", "--data-dir", str(new.parent), "--no-progress"])
    assert ev["out"] == str(home / "runs" / "keyword_spotting_eval")
    assert ev["checkpoint"] == str(out / "model.pt")       # the default --checkpoint
    assert ev["n_test"] == 150 and ev["accuracy"] == res["accuracy"]
    assert ev["confusion"] == res["confusion"]
    assert json.loads((home / "runs/keyword_spotting_eval/metrics.json").read_text())[
        "accuracy"] == ev["accuracy"]
    every = kws.main(["--eval-only", "--data-dir", str(out / "synthetic_fsdd"), "--out",
                      str(home / "all"), "--no-progress"])
    assert every["n_test"] == 300 and every["data"]["split"] == "all"


@pytest.mark.slow
def test_kws_short_audio_is_one_line_with_exit_status_2(tmp_path):
    root = kws_task.write_synthetic_fsdd(tmp_path / "fsdd", speakers=("ann",), takes=6)
    sf.write(root / "recordings" / "3_ann_5.wav", np.zeros(100, dtype=np.float32), 8000)
    _one_line_error([str(repo_root() / "recipes" / "keyword_spotting.py"), "--data-dir",
                     str(root), "--out", str(tmp_path / "run"), *TINY_KWS], "3_ann_5.wav")


def test_kws_real_fsdd_hybrid(recipe, shared_data, tmp_path):
    kws = recipe("keyword_spotting")
    res = kws.main(["--out", str(tmp_path), "--rule", "hybrid", *TINY_KWS, "--max-items",
                    "30", "--split", "speaker", "--test-speakers", "theo"])
    assert res["data"]["test_speakers"] == ["theo"] and res["n_test"] == 30
    assert 0.0 <= res["accuracy"] <= 1.0 and res["rule"] == "hybrid"
    # --split speaker brings the unseen-speaker defaults (tasks.speech.SPLIT_DEFAULTS)
    rc = res["config"]["recipe"]
    assert (rc["norm"], rc["fit"], rc["speed_perturb"]) == ("speaker", "stretch", [0.9, 1.1])
    assert res["config"]["features"]["norm"] == "speaker"
    _, ck = models.load(tmp_path / "model.pt")
    assert ck["rule"] == "hybrid" and ck["spec"]["kwargs"]["readout"] == "li"
    # The recipe's default is the task's DEFAULT_TRAIN: chunked Hybrid, per-weight balance.
    tc = ck["train_config"]
    assert (tc["hybrid_grad"], tc["balance"], tc["chunk"]) == (
        kws_task.DEFAULT_TRAIN.hybrid_grad, "element", kws_task.DEFAULT_TRAIN.chunk)


def test_kws_split_defaults_apply_only_to_their_split_and_flags_override(recipe, tmp_path):
    kws = recipe("keyword_spotting")
    root = kws_task.write_synthetic_fsdd(tmp_path / "fsdd", speakers=("ann", "bob"), takes=6)
    res = kws.main(["--data-dir", str(root), "--out", str(tmp_path / "a"), *TINY_KWS,
                    "--split", "speaker", "--test-speakers", "bob", "--speed-perturb", "none",
                    "--norm", "global"])
    rc = res["config"]["recipe"]
    assert (rc["norm"], rc["fit"], rc["speed_perturb"]) == ("global", "stretch", None)
    res = kws.main(["--data-dir", str(root), "--out", str(tmp_path / "b"), *TINY_KWS])
    rc = res["config"]["recipe"]
    assert (rc["norm"], rc["fit"], rc["speed_perturb"]) == ("global", "crop", None)


def test_kws_lstm_baseline_trains_with_bptt_and_reloads(recipe, tmp_path):
    kws = recipe("keyword_spotting")
    root = kws_task.write_synthetic_fsdd(tmp_path / "fsdd", speakers=("ann",), takes=6)
    res = kws.main(["--data-dir", str(root), "--out", str(tmp_path / "run"), *TINY_KWS,
                    "--model", "lstm", "--rule", "hybrid"])
    assert res["model"]["name"] == "lstm" and res["rule"] == "bptt"
    assert 0.0 <= res["accuracy"] <= 1.0
    ev = kws.main(["--eval-only", "--checkpoint", str(tmp_path / "run" / "model.pt"),
                   "--data-dir", str(root), "--out", str(tmp_path / "ev"), "--no-progress"])
    assert ev["model"]["name"] == "lstm" and ev["n_test"] == 60


def test_kws_speech_commands_layout(recipe, tmp_path):
    """A tiny Speech Commands v2 folder (yes/no/cat + noise): the 12-class task runs."""
    kws = recipe("keyword_spotting")
    root = tmp_path / "sc"
    rng = np.random.default_rng(0)
    lists = {"validation": [], "testing": []}
    for w, word in enumerate(("yes", "no", "cat")):
        (root / word).mkdir(parents=True)
        for k in range(6):
            name = f"{word}/{k:08x}_nohash_0.wav"
            t = np.arange(8000) / 16000
            sf.write(root / name, (0.3 * np.sin(2 * np.pi * (300 + 400 * w) * t)
                                   + 0.01 * rng.standard_normal(len(t))).astype(np.float32),
                     16000)
            if k == 4:
                lists["validation"].append(name)
            elif k == 5:
                lists["testing"].append(name)
    (root / "_background_noise_").mkdir()
    sf.write(root / "_background_noise_" / "white.wav",
             (0.1 * rng.standard_normal(32000)).astype(np.float32), 16000)
    for split, names in lists.items():
        (root / f"{split}_list.txt").write_text("\n".join(names) + "\n")
    res = kws.main(["--dataset", "speechcommands", "--data-dir", str(root), "--classes",
                    "v2_12", "--out", str(tmp_path / "run"), "--epochs", "1",
                    "--d-model", "8", "--d-state", "4", "--duration-s", "0.2", "--no-progress"])
    assert res["classes"][:3] == ["_silence_", "_unknown_", "yes"] and len(res["classes"]) == 12
    assert res["n_test"] == 4 and np.asarray(res["confusion"]).shape == (12, 12)
    ev = kws.main(["--eval-only", "--checkpoint", str(tmp_path / "run" / "model.pt"),
                   "--data-dir", str(root), "--out", str(tmp_path / "ev"), "--no-progress"])
    assert ev["n_test"] == 4 and ev["accuracy"] == res["accuracy"]
    with pytest.raises(RunError, match="--data-dir"):
        kws.main(["--dataset", "speechcommands", "--out", str(tmp_path / "x")])


# ---------------------------------------------------------------------------- another recipe's model
@pytest.mark.parametrize("name,other", [("keyword_spotting", "language_modeling"),
                                        ("speech_recognition", "keyword_spotting"),
                                        ("language_modeling", "speech_recognition")])
def test_another_recipes_model_is_a_checkpoint_error_naming_it(recipe, tmp_path, name, other):
    path = _other_model(tmp_path / f"{other}.pt", other)
    with pytest.raises(CheckpointError, match=f"{other}.pt"):
        recipe(name).main(["--eval-only", "--checkpoint", str(path), "--out",
                           str(tmp_path / "ev"), "--no-progress"])


@pytest.mark.slow
def test_asr_with_a_kws_model_is_one_line_with_exit_status_2(tmp_path):
    path = _other_model(tmp_path / "kws_model.pt", "keyword_spotting")
    _one_line_error([str(repo_root() / "recipes" / "speech_recognition.py"), "--eval-only",
                     "--checkpoint", str(path), "--out", str(tmp_path / "ev")],
                    "kws_model.pt", "another recipe")


# ---------------------------------------------------------------------------- speech recognition
def test_asr_default_output_reloads_and_eval_only(recipe, home):
    asr = recipe("speech_recognition")
    res = asr.main([*TINY_ASR, "--beam", "2"])
    out = home / "runs" / "speech_recognition"
    for name in ("metrics.json", "curves.png", "model.pt", "ckpt.pt", "best.pt"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["wer"] == res["wer"] >= 0 and saved["cer"] == res["cer"] >= 0
    assert saved["train_seconds"] > 0 and saved["peak_rss_mb"] > 0
    assert res["n_test"] == 2 and len(res["examples"]) == 2 and res["decoder"] == "beam2"
    assert (out / "smoke_librispeech/LibriSpeech/train-clean-100").is_dir()
    model, ck = models.load(out / "model.pt")
    assert ck["recipe"] == "speech_recognition" and model.cfg.n_classes == 29
    assert asr_task.pre_from_checkpoint(ck, "m") == asr_task.ASRPre()
    ev = asr.main(["--eval-only", "--data-dir", str(out / "smoke_librispeech"), "--beam", "2",
                   "--no-progress"])
    assert ev["out"] == str(home / "runs" / "speech_recognition_eval")
    assert (ev["wer"], ev["cer"], ev["n_test"]) == (res["wer"], res["cer"], 2)
    assert ev["examples"] == res["examples"]


@pytest.mark.parametrize("model", ["mamba", "lstm"])
def test_ctc_prior_bias_puts_the_logits_at_rest_at_the_log_frame_prior(model):
    """Blank: the share of steps with no character; characters: their share of the rest."""
    items = [(torch.zeros(10, 3), "AB", {}), (torch.zeros(6, 3), "A", {})]   # 16 steps, 3 chars
    net = models.build(asr_task.asr_spec(3, model=model, d_model=8, n_layers=1, d_state=4))
    asr_task.ctc_prior_bias_(net, items)
    fc, gain = asr_task.output_layer(net)
    p = (fc.bias * gain).softmax(-1)
    a, b = asr_task.text_to_ids("AB")
    assert p[asr_task.BLANK].item() == pytest.approx(13 / 16, rel=1e-2)
    assert p[a].item() == pytest.approx(2 / 16, rel=1e-2)
    assert p[b].item() == pytest.approx(1 / 16, rel=1e-2)


def test_asr_hybrid_smoke(recipe, tmp_path):
    asr = recipe("speech_recognition")
    res = asr.main(["--out-dir", str(tmp_path), *TINY_ASR, "--rule", "hybrid"])  # old spelling
    assert math.isfinite(res["wer"]) and math.isfinite(res["cer"]) and res["rule"] == "hybrid"
    ck = models.load(tmp_path / "model.pt")[1]
    assert ck["rule"] == "hybrid" and ck["train_config"]["chunk"] == 16    # chunked default


# ---------------------------------------------------------------------------- language modelling
def test_lm_default_output_reloads_and_eval_only(recipe, home):
    lm = recipe("language_modeling")
    res = lm.main(TINY_LM)
    out = home / "runs" / "language_modeling"
    for name in ("metrics.json", "curves.png", "model.pt", "ckpt.pt", "best.pt",
                 "corpus/wiki.train.tokens"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["bpc"] == res["bpc"] and saved["train_seconds"] > 0 and saved["peak_rss_mb"] > 0
    assert math.isfinite(res["bpc"]) and 0 < res["bpc"] < math.log2(res["vocab_size"]) + 0.5
    assert res["ppl"] == pytest.approx(2 ** res["bpc"], rel=1e-6)       # char level
    model, ck = models.load(out / "model.pt")
    vocab, level = lm_task.pre_from_checkpoint(ck, "m")
    assert ck["recipe"] == "language_modeling" and level == "char"
    assert len(vocab) == res["vocab_size"] and ck["preprocessing"]["seq_len"] == 16
    ev = lm.main(["--eval-only", "--max-eval-tokens", "400", "--seq-len", "64", "--level",
                  "word", "--no-progress"])                  # window and level as trained
    assert ev["bpc"] == pytest.approx(res["bpc"], rel=1e-6) and ev["level"] == "char"
    assert ev["out"] == str(home / "runs" / "language_modeling_eval")


@pytest.mark.slow
@pytest.mark.parametrize("level,model", [("word", "mamba"), ("char", "lstm")])
def test_lm_word_level_and_lstm(recipe, tmp_path, level, model):
    lm = recipe("language_modeling")
    args = ["--out", str(tmp_path), "--level", level, "--model", model, *TINY_LM]
    res = lm.main(args)
    assert math.isfinite(res["bpc"]) and res["bpc"] > 0 and res["ppl"] > 1
    assert res["model"]["name"] == ("lstm_lm" if model == "lstm" else "spiking_mamba_lm")
    again = lm.main(["--eval-only", "--checkpoint", str(tmp_path / "model.pt"), "--out",
                     str(tmp_path / "eval"), *args[2:]])
    assert again["bpc"] == pytest.approx(res["bpc"], rel=1e-6)


def test_lm_online_rule(recipe, tmp_path):
    lm = recipe("language_modeling")
    res = lm.main(["--out", str(tmp_path), "--rule", "hybrid", "--epochs", "1",
                   "--max-train-tokens", "300", "--max-eval-tokens", "200", "--seq-len", "8",
                   "--d-model", "8", "--d-embed", "4", "--n-layers", "1", "--d-state", "4",
                   "--no-progress"])
    assert math.isfinite(res["bpc"]) and res["rule"] == "hybrid"
    with pytest.raises(RunError, match="lstm"):
        lm.main(["--out", str(tmp_path), "--model", "lstm", "--rule", "rtrl", *TINY_LM])


def test_lm_resume_after_max_steps_equals_uninterrupted(recipe, tmp_path):
    lm = recipe("language_modeling")
    args = [*TINY_LM, "--epochs", "2", "--max-train-tokens", "600"]   # 37 windows, 2 batches
    full = lm.main(["--out", str(tmp_path / "full"), *args])
    part = lm.main(["--out", str(tmp_path / "part"), *args, "--max-steps", "3"])
    assert part["interrupted"] and not (tmp_path / "part" / "model.pt").exists()
    resumed = lm.main(["--out", str(tmp_path / "part"), *args, "--resume"])
    assert resumed["bpc"] == full["bpc"]
    a, _ = models.load(tmp_path / "full" / "model.pt")
    b, _ = models.load(tmp_path / "part" / "model.pt")
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


@pytest.mark.slow
def test_lm_missing_split_is_one_line_with_exit_status_2(tmp_path):
    data = tmp_path / "wt"
    data.mkdir()
    for split in ("train", "valid"):
        (data / f"wiki.{split}.tokens").write_text(" = A = \n some text \n")
    _one_line_error([str(repo_root() / "recipes" / "language_modeling.py"), "--data-dir",
                     str(data), "--out", str(tmp_path / "run")], str(data), "wiki.")
