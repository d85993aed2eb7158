"""The output directory of a fine-tuning run: whose it is, its checkpoints, what a resume uses.

Resumable checkpoints appear atomically: the Trainer writes ``OUTPUT/checkpoints/.staging/
checkpoint-N``, every file is flushed to disk, a marker listing the files and their sizes is
written last (:data:`MARKER`), and the directory is renamed to ``OUTPUT/checkpoints/
checkpoint-N``. A process killed at any point leaves either the previous checkpoints or the
new one, never half of it. A resume uses the newest complete checkpoint and names the ones it
skipped (written by an older bgem3, or cut by a crash on a file system without atomic renames).

The output directory belongs to the run: a non-empty one is refused unless the run resumes
from it or ``overwrite_output`` is set, and it is never the model's directory, inside it, or
around it. Importing this module imports no torch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bgem3._files import fsync_path
from bgem3.train.settings import SETTINGS_FILE, FinetuneSettings

__all__ = ["CHECKPOINTS", "MARKER", "STAGING", "OutputPlan", "commit_checkpoint", "discard",
           "incomplete_reason", "plan_output"]

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
"""The folder of ``OUTPUT`` that holds the resumable checkpoints."""

STAGING = ".staging"
"""The folder of ``OUTPUT/checkpoints`` where a checkpoint is written before it is renamed."""

MARKER = "bgem3_checkpoint.json"
"""Written last into a checkpoint, it lists the checkpoint's files and their sizes."""

_STEP = re.compile(r"checkpoint-(\d+)")
_TRAINER_STATE = "trainer_state.json"  # transformers' name, written last by its Trainer


@dataclass(frozen=True)
class OutputPlan:
    """What :func:`plan_output` found in the output directory.

    Attributes:
        resume_from: The checkpoint to resume from, or ``None`` (start at step 0).
        saved: That checkpoint's ``bgem3_finetune.json``, or ``None``.
        discard: Leftovers of this tool to remove before training: the staging folder,
            incomplete checkpoints a resume skipped, an overwritten run's checkpoints.
    """

    resume_from: Path | None
    saved: dict[str, Any] | None
    discard: tuple[Path, ...]



def _step(path: Path) -> int | None:
    match = _STEP.fullmatch(path.name)
    return int(match.group(1)) if match and path.is_dir() else None


def _checkpoints(run: Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every ``checkpoint-N`` folder of ``run``, newest first."""
    if not run.is_dir():
        return []
    found = [(step, p) for p in run.iterdir() if (step := _step(p)) is not None]
    return sorted(found, reverse=True)


def incomplete_reason(folder: Path) -> str | None:
    """Why ``folder`` is not a complete checkpoint, or ``None`` if it is.

    Complete: its marker lists files that all exist with the recorded sizes. A checkpoint
    without a marker (an older bgem3's) is complete if transformers' ``trainer_state.json``,
    which its Trainer writes last, reads as JSON, and the weights and settings are there.
    """
    try:
        record = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except FileNotFoundError:
        for name in ("model.safetensors", SETTINGS_FILE, _TRAINER_STATE):
            if not (folder / name).is_file():
                return f"no {name}"
        try:
            json.loads((folder / _TRAINER_STATE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return f"{_TRAINER_STATE} is cut short or unreadable"
        return None
    except (OSError, ValueError):
        return f"{MARKER} is cut short or unreadable"
    files = record.get("files") if isinstance(record, dict) else None
    if not isinstance(files, dict) or not files:
        return f"{MARKER} lists no files"
    for name, size in files.items():
        try:
            actual = (folder / name).stat().st_size
        except OSError:
            return f"{name} is missing"
        if actual != size:
            return f"{name} has {actual} bytes, not {size}"
    return None


def _has_files(path: Path) -> bool:
    """Whether ``path`` holds any file (empty folders do not count)."""
    return any(files for _, _, files in os.walk(path))


def _overlap(output: Path, model: Path) -> str | None:
    out, source = output.resolve(), model.resolve()
    if out == source:
        return "is the model's directory"
    if out.is_relative_to(source):
        return "is inside the model's directory"
    if source.is_relative_to(out):
        return "contains the model's directory"
    return None


def plan_output(settings: FinetuneSettings, model: Path) -> OutputPlan:
    """Check that ``settings.output`` is this run's to write, and find what a resume uses.

    Args:
        settings: The run.
        model: The checkpoint directory the run starts from.

    Returns:
        The checkpoint to resume from and the leftovers to remove.

    Raises:
        ValueError: The output is, contains or lies inside the model's directory.
        FileExistsError: The output is a file, or a non-empty directory that is not this
            run's (no ``resume``), or holds no run to resume, without ``overwrite_output``.
    """
    output = Path(settings.output).expanduser()
    shown = f"--output {settings.output}"
    if overlap := _overlap(output, model):
        raise ValueError(f"{shown} {overlap} ({model.resolve()}): fine-tuning never writes "
                         "into the checkpoint it starts from; choose another output directory")
    if output.exists() and not output.is_dir():
        raise FileExistsError(f"{shown} is a file; expected a directory for the checkpoint")
    run = output / CHECKPOINTS
    staging = (run / STAGING,) if (run / STAGING).exists() else ()
    if not output.exists() or not _has_files(output):  # new, or nothing but empty folders
        if settings.resume:
            logger.warning("nothing to resume in %s (no checkpoint): starting from step 0", run)
        return OutputPlan(None, None, ())
    if settings.resume:
        if not run.is_dir():
            raise FileExistsError(
                f"{shown} holds no fine-tuning run to resume (no {CHECKPOINTS} folder); give "
                "the run's output directory, or start a new run without --resume")
        return _resume_plan(run, staging)
    if settings.overwrite_output:
        old = tuple(folder for _, folder in _checkpoints(run))
        if old:
            logger.warning("--overwrite-output: deleting the %d checkpoints of an earlier run "
                           "in %s", len(old), run)
        return OutputPlan(None, None, staging + old)
    if run.is_dir():
        raise FileExistsError(
            f"{shown} holds a fine-tuning run ({run}): pass --resume to continue it with the "
            "same settings, or --overwrite-output to start over there, or choose another "
            "output directory")
    raise FileExistsError(f"{shown} is not empty and holds no fine-tuning run: choose a new or "
                          "empty directory, or pass --overwrite-output to write into it")


def _resume_plan(run: Path, staging: tuple[Path, ...]) -> OutputPlan:
    skipped: list[Path] = []
    for _, folder in _checkpoints(run):
        reason = incomplete_reason(folder)
        if reason is None:
            saved = json.loads((folder / SETTINGS_FILE).read_text(encoding="utf-8"))
            if skipped:
                logger.warning("resuming from %s; skipped incomplete %s", folder.name,
                               _skipped(skipped, run))
            else:
                logger.info("resuming from %s", folder)
            return OutputPlan(folder, saved, staging + tuple(skipped))
        logger.debug("%s is incomplete: %s", folder, reason)
        skipped.append(folder)
    if skipped:
        logger.warning("no complete checkpoint in %s (skipped incomplete %s): starting from "
                       "step 0", run, _skipped(skipped, run))
    else:
        logger.warning("no checkpoint in %s yet: starting from step 0", run)
    return OutputPlan(None, None, staging + tuple(skipped))


def _skipped(folders: list[Path], run: Path) -> str:
    return ", ".join(f"{f.name} ({incomplete_reason(f)})" for f in folders)


def discard(path: Path, staging: Path) -> None:
    """Remove a folder this tool wrote, renaming it out of sight first.

    A checkpoint is renamed into ``staging`` before it is deleted, so a process killed while
    deleting never leaves a half-deleted ``checkpoint-N`` behind. ``staging`` itself is
    deleted in place.
    """
    if path == staging:
        shutil.rmtree(path, ignore_errors=True)
        return
    staging.mkdir(parents=True, exist_ok=True)
    gone = staging / f"discarded-{path.name}-{uuid.uuid4().hex[:8]}"
    try:
        os.replace(path, gone)
    except FileNotFoundError:
        return
    shutil.rmtree(gone, ignore_errors=True)


def commit_checkpoint(staged: Path, run: Path, keep: int | None) -> Path:
    """Make a checkpoint written into ``staged`` durable and move it into ``run``.

    Every file is flushed to disk, then the marker (the files and their sizes) is written and
    flushed, then the folder is renamed into ``run`` (atomic) and ``run`` is flushed. The
    oldest checkpoints beyond ``keep`` are removed after.

    Args:
        staged: ``run/.staging/checkpoint-N``, as the Trainer wrote it.
        run: ``OUTPUT/checkpoints``.
        keep: How many checkpoints to keep (the newest; ``None`` or 0: all).

    Returns:
        ``run/checkpoint-N``.
    """
    files = sorted(p for p in staged.rglob("*") if p.is_file() and p.name != MARKER)
    for file in files:
        fsync_path(file)
    sizes = {f.relative_to(staged).as_posix(): f.stat().st_size for f in files}
    marker = staged / MARKER
    marker.write_text(json.dumps({"format": 1, "files": sizes}, indent=1) + "\n",
                      encoding="utf-8")
    fsync_path(marker)
    for folder in sorted((p for p in staged.rglob("*") if p.is_dir()), reverse=True):
        fsync_path(folder)
    fsync_path(staged)
    target = run / staged.name
    if target.exists():  # an older save of the same step (a resume with other save steps)
        discard(target, staged.parent)
    os.replace(staged, target)
    fsync_path(run)
    if keep:
        for _, folder in _checkpoints(run)[keep:]:
            discard(folder, staged.parent)
    with contextlib.suppress(OSError):  # gone when empty
        staged.parent.rmdir()
    return target
