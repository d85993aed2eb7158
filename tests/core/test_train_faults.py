"""Fine-tuning under fault: killed runs, divergence, foreign outputs, changed resumes, nonsense."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from bgem3.cli import main
from bgem3.testing import random_texts
from bgem3.train import FinetuneSettings, TrainingDivergedError, finetune
from bgem3.train._output import MARKER, incomplete_reason
from bgem3.train.finetuning import _resume_blocker
from safetensors.torch import load_file

from tests.core.train_data import small_run, write_jsonl


def _rows(n: int = 32, seed: int = 1) -> list[dict]:
    texts = random_texts(4 * n, min_words=6, max_words=30, seed=seed)
    return [{"query": " ".join(texts[i].split()[:4]), "pos": [texts[i]],
             "neg": [texts[n + (i * 7 + j * 13) % (3 * n)] for j in range(3)]}
            for i in range(n)]




@pytest.fixture(scope="module")
def train_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "train.jsonl", _rows())


def _settings(model: Path, data: Path, out: Path, **kw: object) -> FinetuneSettings:
    return small_run(model, data, out, **{"max_steps": 2, "logging_steps": 1, **kw})


def _flags(model: Path, data: Path, out: Path, *more: str) -> list[str]:
    return ["finetune", "--model", str(model), "--train-data", str(data), "--output", str(out),
            "--group-size", "4", "--batch-size", "8", "--learning-rate", "1e-3",
            "--logging-steps", "1", "--device", "cpu", "--no-progress", *more]


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.is_file()}


def _checkpoints(out: Path) -> list[Path]:
    run = out / "checkpoints"
    return sorted((p for p in run.glob("checkpoint-*") if p.is_dir()),
                  key=lambda p: int(p.name.rpartition("-")[2]))


def _newest(out: Path) -> int:
    found = _checkpoints(out)
    return int(found[-1].name.rpartition("-")[2]) if found else 0


def _skip_if_resume_is_blocked() -> None:
    if blocker := _resume_blocker():  # transformers >= 4.50 with torch < 2.6
        pytest.skip(blocker)


# ------------------------------------------------------------ nonsense options
@pytest.mark.parametrize(("change", "message"), [
    ({"temperature": float("inf")}, r"temperature must be a finite number, got inf"),
    ({"temperature": float("nan")}, r"temperature must be a finite number, got nan"),
    ({"learning_rate": float("inf")}, r"learning_rate must be a finite number"),
    ({"epochs": float("inf")}, r"epochs must be a finite number"),
    ({"warmup_ratio": 5.0}, r"warmup_ratio must be >= 0 and < 1 .*, got 5.0"),
    ({"warmup_ratio": 1.0}, r"warmup_ratio must be >= 0 and < 1 .*, got 1.0"),
    ({"warmup_ratio": -0.1}, r"warmup_ratio must be >= 0 and < 1 .*, got -0.1"),
    ({"weight_decay": float("nan")}, r"weight_decay must be a finite number, got nan"),
    ({"weight_decay": -0.5}, r"weight_decay must be a finite number >= 0, got -0.5"),
    ({"temperature": True}, r"temperature must be a number, got True"),
    ({"save_total_limit": 0}, r"save_total_limit must be a positive int, got 0"),
    ({"self_distill_start": -1}, r"self_distill_start must be an int >= 0"),
])
def test_settings_refuse_nonsense(change: dict, message: str) -> None:
    settings = FinetuneSettings(model="m", train_data=["t.jsonl"], output="o", **change)
    with pytest.raises(ValueError, match=message):
        settings.check()


def test_the_command_refuses_nonsense_in_one_line(tiny_path: Path, train_file: Path,
                                                  tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    for flags, message in ((["--temperature", "inf"], "temperature must be a finite number"),
                           (["--warmup-ratio", "5"], "warmup_ratio must be >= 0 and < 1"),
                           (["--weight-decay", "nan"], "weight_decay must be a finite number")):
        assert main(_flags(tiny_path, train_file, tmp_path / "out", *flags)) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"bgem3: error: {message}") and "Traceback" not in err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------ the output directory
def test_the_model_directory_is_never_written(tiny_path: Path, train_file: Path,
                                              tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    model = Path(shutil.copytree(tiny_path, tmp_path / "model"))
    before = _digests(model)
    for output, overlap in ((model, "is the model's directory"),
                            (model / "tuned", "is inside the model's directory"),
                            (tmp_path, "contains the model's directory")):
        for overwrite in (False, True):
            with pytest.raises(ValueError, match=f"--output .* {overlap}"):
                finetune(_settings(model, train_file, output, overwrite_output=overwrite))
    # a relative spelling of the same directory is the same directory
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="is the model's directory"):
        finetune(_settings(Path("model"), train_file, Path("./model/../model")))
    assert _digests(model) == before and sorted(p.name for p in model.iterdir()) == sorted(before)


def test_a_non_empty_output_is_refused_unless_overwrite(tiny_path: Path, train_file: Path,
                                                        tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="is not empty and holds no fine-tuning run"):
        finetune(_settings(tiny_path, train_file, out))
    assert main(_flags(tiny_path, train_file, out, "--max-steps", "1")) == 1
    assert "--overwrite-output" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]

    finetune(_settings(tiny_path, train_file, out, overwrite_output=True, save_steps=1))
    assert (out / "notes.txt").read_text() == "mine"
    assert [p.name for p in _checkpoints(out)] == ["checkpoint-1", "checkpoint-2"]
    # a finished run is this output's run now: run again only with resume or overwrite
    with pytest.raises(FileExistsError, match=r"holds a fine-tuning run .*--resume"):
        finetune(_settings(tiny_path, train_file, out))
    # overwriting it deletes its checkpoints: a later resume cannot pick one of them up
    finetune(_settings(tiny_path, train_file, out, overwrite_output=True, max_steps=1,
                       save_steps=1, seed=5))
    assert [p.name for p in _checkpoints(out)] == ["checkpoint-1"]
    assert json.loads((out / "bgem3_finetune.json").read_text())["seed"] == 5
    empty = tmp_path / "empty" / "checkpoints"  # empty folders hold nothing to refuse
    empty.mkdir(parents=True)
    finetune(_settings(tiny_path, train_file, empty.parent, max_steps=1))


# ------------------------------------------------------------ resume with other settings
def test_a_resume_with_other_settings_is_refused_naming_them(tiny_path: Path,
                                                             train_file: Path,
                                                             tmp_path: Path) -> None:
    _skip_if_resume_is_blocked()
    out = tmp_path / "out"
    finetune(_settings(tiny_path, train_file, out, save_steps=1))
    saved = (out / "bgem3_finetune.json").read_bytes()
    other_data = write_jsonl(tmp_path / "other.jsonl", _rows(seed=7))
    model_copy = Path(shutil.copytree(tiny_path, tmp_path / "model-copy"))
    changed_model = Path(shutil.copytree(tiny_path, tmp_path / "model-changed"))
    head = torch.load(changed_model / "sparse_linear.pt", weights_only=True)
    torch.save({k: v + 0.5 for k, v in head.items()}, changed_model / "sparse_linear.pt")

    for change, named in (({"learning_rate": 1e-2}, r"learning_rate: 0\.001 -> 0\.01"),
                          ({"seed": 3, "group_size": 2}, r"group_size: 4 -> 2; seed: 0 -> 3"),
                          ({"heads": ["dense"]}, r"heads: dense,sparse,colbert -> dense"),
                          ({"train_data": [str(other_data)]}, r"train_data: .*sha256 differs"),
                          ({"model": str(changed_model)}, r"model: .*fingerprint differs"),
                          ({"max_steps": 3}, r"max_steps: 2 -> 3")):
        with pytest.raises(ValueError, match=r"cannot resume from .*checkpoint-2: .*" + named):
            finetune(dataclasses.replace(_settings(tiny_path, train_file, out, save_steps=1,
                                                   resume=True), **change))
        assert (out / "bgem3_finetune.json").read_bytes() == saved

    # the same model and data elsewhere, and options that change nothing computed: resumed
    data_copy = Path(shutil.copyfile(train_file, tmp_path / "copy.jsonl"))
    finetune(_settings(model_copy, data_copy, out, resume=True, heads=["colbert", "sparse",
                                                                       "dense"],
                       logging_steps=5, save_steps=7, save_total_limit=1,
                       gradient_checkpointing=True))
    record = json.loads((out / "bgem3_finetune.json").read_text())
    assert record["model"] == str(tiny_path) and record["logging_steps"] == 1  # the run's own
    assert record["resumed_from"] == [2]


def test_the_cli_says_which_settings_differ(tiny_path: Path, train_file: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    _skip_if_resume_is_blocked()
    out = tmp_path / "out"
    assert main(_flags(tiny_path, train_file, out, "--max-steps", "2", "--save-steps",
                       "1")) == 0
    capsys.readouterr()
    assert main(_flags(tiny_path, train_file, out, "--max-steps", "2", "--resume",
                       "--heads", "dense")) == 1
    err = capsys.readouterr().err
    assert err.startswith("bgem3: error: cannot resume from") and "heads: " in err
    assert "Traceback" not in err and "optimizer" not in err


# ------------------------------------------------------------ divergence
def test_divergence_stops_the_run_and_saves_nothing_non_finite(tiny_path: Path,
                                                               train_file: Path,
                                                               tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture
                                                               ) -> None:
    out = tmp_path / "out"
    with caplog.at_level(logging.ERROR, logger="bgem3.train"), \
            pytest.raises(TrainingDivergedError, match=r"training diverged at step 2: "):
        finetune(_settings(tiny_path, train_file, out, learning_rate=1e6, warmup_ratio=0.0,
                           max_steps=6, save_steps=1))
    assert "training diverged at step 2: " in caplog.text  # weights of about 1e6 after step 1
    assert [c.name for c in _checkpoints(out)] == ["checkpoint-1"]
    assert not (out / "bgem3_finetune.json").exists()  # no final checkpoint
    assert isinstance(TrainingDivergedError("x"), FloatingPointError)
    for checkpoint in _checkpoints(out):  # the ones saved before it are finite throughout
        weights = load_file(str(checkpoint / "model.safetensors"))
        assert all(torch.isfinite(w).all() for w in weights.values()), checkpoint.name
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        assert all(np.isfinite(e["loss"]) for e in state["log_history"] if "loss" in e)


def test_a_non_finite_first_loss_fails_the_command(tiny_path: Path, train_file: Path,
                                                   tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(_flags(tiny_path, train_file, out, "--max-steps", "2", "--save-steps", "1",
                       "--temperature", "1e-44")) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith(
        "bgem3: error: training diverged at step 1: the loss was nan")
    assert "Traceback" not in err and err.count("training diverged") == 1
    assert not _checkpoints(out) and not (out / "bgem3_finetune.json").exists()


# ------------------------------------------------------------ killed runs, incomplete checkpoints
def test_a_resume_skips_incomplete_checkpoints_and_says_which(tiny_path: Path, train_file: Path,
                                                              tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture
                                                              ) -> None:
    _skip_if_resume_is_blocked()
    from transformers import TrainerCallback

    class StopAt4(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            control.should_training_stop = state.global_step == 4

    out = tmp_path / "out"
    finetune(_settings(tiny_path, train_file, out, max_steps=6, save_steps=2),
             callbacks=[StopAt4()])
    assert all(incomplete_reason(c) is None and (c / MARKER).is_file()
               for c in _checkpoints(out))
    run = out / "checkpoints"
    # what a crash left under an older bgem3: a newer step without its trainer state,
    # and one whose weights were cut short
    shutil.copytree(run / "checkpoint-4", run / "checkpoint-5")
    (run / "checkpoint-5" / "trainer_state.json").unlink()
    (run / "checkpoint-5" / MARKER).unlink()
    shutil.copytree(run / "checkpoint-4", run / "checkpoint-6")
    weights = run / "checkpoint-6" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with caplog.at_level(logging.INFO, logger="bgem3.train"):
        finetune(_settings(tiny_path, train_file, out, max_steps=6, save_steps=2,
                           resume=True))
    assert ("resuming from checkpoint-4; skipped incomplete checkpoint-6 (model.safetensors "
            "has 1000 bytes") in caplog.text
    assert "checkpoint-5 (no trainer_state.json)" in caplog.text
    log = json.loads((out / "bgem3_finetune.json").read_text())["log"]
    assert [e["step"] for e in log] == [1, 2, 3, 4, 5, 6]
    assert [c.name for c in _checkpoints(out)] == ["checkpoint-4", "checkpoint-6"]
    assert all(incomplete_reason(c) is None for c in _checkpoints(out))


def test_killed_runs_always_resume(tiny_path: Path, train_file: Path, tmp_path: Path) -> None:
    """SIGKILL a real ``bgem3 finetune`` at random points; every resume then works."""
    _skip_if_resume_is_blocked()
    out = tmp_path / "out"
    command = [sys.executable, "-m", "bgem3", *_flags(
        tiny_path, train_file, out, "--max-steps", "24", "--save-steps", "1",
        "--save-total-limit", "2", "--warmup-ratio", "0")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    rng = np.random.default_rng(0)
    newest = 0
    for kill in range(3):  # each start costs seconds of imports
        process = subprocess.Popen(command + (["--resume"] if kill else []), env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while _newest(out) <= newest and process.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.02)  # until this run has saved a checkpoint of its own
        time.sleep(float(rng.uniform(0.0, 0.4)))  # then anywhere in a step or a save
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL, process.stderr.read()[-2000:]
        for checkpoint in _checkpoints(out):  # a checkpoint is there whole, or not at all
            assert incomplete_reason(checkpoint) is None, checkpoint
        assert _newest(out) > newest  # each run got further than the one before
        newest = _newest(out)
    done = subprocess.run(command + ["--resume"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    log = json.loads((out / "bgem3_finetune.json").read_text())["log"]
    assert [e["step"] for e in log] == list(range(1, 25))
    assert all(np.isfinite(e["loss"]) for e in log)
    assert not (out / "checkpoints" / ".staging").exists()
