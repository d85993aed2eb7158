"""The settings of a fine-tuning run: one dataclass, checked before anything loads.

Each field carries its help text in ``metadata["help"]`` (and, where the value is one of a
few, ``metadata["choices"]``): the ``bgem3 finetune`` flags are generated from the fields,
so a new option is one field here. A field that may change when a run is resumed (it does not
change what the run computes) says so with ``metadata["resume_free"]``; every other field must
equal the saved run's. Importing this module imports no torch (the CLI reads it to build its
parser).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bgem3._inputs import positive_int

__all__ = ["HEADS", "SETTINGS_FILE", "FinetuneSettings", "read_settings", "resume_conflicts"]

HEADS = ("dense", "sparse", "colbert")
"""BGE-M3's three outputs, each with its head and its term in the loss."""

SETTINGS_FILE = "bgem3_finetune.json"
"""The file of a fine-tuned checkpoint that records how it was trained."""


def _help(text: str, **more: Any) -> dict[str, Any]:
    return {"help": text, **more}


@dataclass
class FinetuneSettings:
    """Everything a fine-tuning run depends on (saved as ``bgem3_finetune.json``).

    Every field is documented by the help text in its metadata, which ``bgem3 finetune
    --help`` shows for the flag of the same name.

    Example:
        >>> settings = FinetuneSettings(model="BAAI/bge-m3", train_data=["train.jsonl"],
        ...                             output="out", group_size=4)
        >>> settings.check()
        >>> {f.name: f.metadata["help"] for f in dataclasses.fields(settings)}["group_size"]
        'passages per query: one positive and group_size - 1 negatives'
    """

    model: str = field(metadata=_help("hub id or checkpoint directory to start from",
                                      compare_by="model_fingerprint"))
    train_data: list[str] = field(metadata=_help(
        "FlagEmbedding's JSONL files or directories of them: query, pos, neg [, pos_scores, "
        "neg_scores, prompt]", metavar="FILE_OR_DIR", compare_by="train_data_sha256"))
    output: str = field(metadata=_help(
        "directory of the fine-tuned checkpoint (OUTPUT/checkpoints holds the resumable "
        "training checkpoints): new or empty, unless resume or overwrite_output; never the "
        "model's directory", resume_free=True))
    heads: list[str] = field(default_factory=lambda: list(HEADS), metadata=_help(
        "heads to train (dense, sparse, colbert); the others are frozen and saved unchanged",
        choices=HEADS))
    self_distill: bool = field(default=True, metadata=_help(
        "self-knowledge distillation from the ensemble score"))
    self_distill_start: int = field(default=0, metadata=_help(
        "first optimizer step with self-distillation", metavar="STEP"))
    init_heads: bool = field(default=False, metadata=_help(
        "create the sparse and ColBERT heads (for a backbone without them)"))
    colbert_dim: int | None = field(default=None, metadata=_help(
        "width of a created ColBERT head (default: the hidden size)"))
    group_size: int = field(default=8, metadata=_help(
        "passages per query: one positive and group_size - 1 negatives"))
    temperature: float = field(default=0.02, metadata=_help("score temperature (> 0)"))
    learning_rate: float = field(default=1e-5, metadata=_help(
        "peak learning rate (linear warm-up and decay)"))
    epochs: float = field(default=1.0, metadata=_help("passes over the data"))
    max_steps: int | None = field(default=None, metadata=_help(
        "stop after this many optimizer steps (overrides epochs)"))
    batch_size: int = field(default=16, metadata=_help("most queries per batch (per device)"))
    batch_tokens: int | None = field(default=None, metadata=_help(
        "padded passage tokens per batch: long texts get fewer queries (default: batch size "
        "x group size x passage max length; 0: fixed batches of batch_size)"))
    query_max_length: int = field(default=512, metadata=_help("longest query in tokens"))
    passage_max_length: int = field(default=512, metadata=_help("longest passage in tokens"))
    seed: int = field(default=0, metadata=_help(
        "seed of everything random (groups, batches, dropout, new heads)"))
    kd_loss: str = field(default="kl_div", metadata=_help(
        "use of the data's teacher scores", choices=("kl_div", "m3_kd_loss")))
    in_batch_negatives: bool = field(default=True, metadata=_help(
        "also use the other queries' passages as negatives (off: each query is scored "
        "against its own group only)"))
    freeze_backbone: bool = field(default=False, metadata=_help("train the heads alone"))
    gradient_checkpointing: bool = field(default=False, metadata=_help(
        "recompute activations in the backward pass (less memory)", resume_free=True))
    grad_cache: int | None = field(default=None, metadata=_help(
        "gradient caching: encode a batch this many texts at a time (large batches in small "
        "memory, same gradients; default: off)", metavar="TEXTS", resume_free=True))
    gradient_accumulation_steps: int = field(default=1, metadata=_help(
        "batches per optimizer step"))
    warmup_ratio: float = field(default=0.1, metadata=_help(
        "share of the steps spent warming up (0 <= ratio < 1)"))
    weight_decay: float = field(default=0.01, metadata=_help("AdamW weight decay (>= 0)"))
    logging_steps: int = field(default=10, metadata=_help(
        "log the loss and its parts every this many steps", resume_free=True))
    save_steps: int = field(default=500, metadata=_help(
        "save a resumable checkpoint every this many steps", resume_free=True))
    save_total_limit: int = field(default=2, metadata=_help(
        "resumable checkpoints kept (the newest)", resume_free=True))
    query_instruction: str | None = field(default=None, metadata=_help(
        "prepended to queries without their own 'prompt'"))
    device: str | None = field(default=None, metadata=_help(
        "'cpu' to train on the CPU even if a GPU is there (default: what transformers picks)",
        choices=("cpu",), resume_free=True))
    bf16: bool = field(default=False, metadata=_help("bfloat16 mixed precision"))
    fp16: bool = field(default=False, metadata=_help("float16 mixed precision (CUDA)"))
    resume: bool = field(default=False, metadata=_help(
        "continue from the newest complete checkpoint in OUTPUT/checkpoints, with the same "
        "settings (only the logging, saving, device, memory and progress options may "
        "change)",
        resume_free=True))
    overwrite_output: bool = field(default=False, metadata=_help(
        "write into a non-empty OUTPUT that is not this run's (files of the same names are "
        "replaced, an earlier run's checkpoints in OUTPUT/checkpoints are deleted)",
        resume_free=True))
    show_progress: bool = field(default=True, metadata=_help(
        "progress bar (off: log lines only)", resume_free=True))

    def check(self) -> None:
        """Raise ``ValueError`` for settings that cannot work, before anything loads."""
        heads = list(self.heads)
        if not heads or any(h not in HEADS for h in heads) or len(set(heads)) != len(heads):
            raise ValueError(f"heads must be a non-empty subset of {', '.join(HEADS)}, got "
                             f"{','.join(heads) or 'nothing'}")
        for name in ("group_size", "batch_size", "query_max_length", "passage_max_length",
                     "gradient_accumulation_steps", "logging_steps", "save_steps",
                     "save_total_limit"):
            positive_int(getattr(self, name), name)
        for name in ("max_steps", "grad_cache", "colbert_dim"):
            if getattr(self, name) is not None:
                positive_int(getattr(self, name), name)
        if isinstance(self.self_distill_start, bool) or not isinstance(
                self.self_distill_start, int) or self.self_distill_start < 0:
            raise ValueError(f"self_distill_start must be an int >= 0 (an optimizer step), "
                             f"got {self.self_distill_start!r}")
        if self.query_max_length < 2 or self.passage_max_length < 2:
            raise ValueError("query_max_length and passage_max_length must be at least 2")
        for name in ("temperature", "learning_rate", "epochs"):
            value = _finite(getattr(self, name), name)
            if not value > 0:
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not 0 <= _finite(self.warmup_ratio, "warmup_ratio") < 1:
            raise ValueError(f"warmup_ratio must be >= 0 and < 1 (the share of the steps "
                             f"spent warming up), got {self.warmup_ratio!r}")
        if not _finite(self.weight_decay, "weight_decay") >= 0:
            raise ValueError(f"weight_decay must be a finite number >= 0, got "
                             f"{self.weight_decay!r}")
        if self.kd_loss not in ("kl_div", "m3_kd_loss"):
            raise ValueError(f"kd_loss must be 'kl_div' or 'm3_kd_loss', got {self.kd_loss!r}")
        candidates = (self.batch_size if self.in_batch_negatives else 1) * self.group_size
        if candidates < 2:
            raise ValueError(
                f"each query would be scored against {candidates} passage: its loss is always "
                "0. Use --group-size 2 or more (with negatives in the data), or in-batch "
                "negatives with --batch-size 2 or more")
        if self.bf16 and self.fp16:
            raise ValueError("choose bf16 or fp16, not both")
        if self.batch_tokens is not None and self.batch_tokens < 0:
            raise ValueError(f"batch_tokens must be >= 0, got {self.batch_tokens}")

    def to_json(self) -> dict[str, Any]:
        """The settings as JSON-ready data."""
        return dataclasses.asdict(self)


def _finite(value: Any, name: str) -> float:
    """``value`` as a float if it is a finite real number (``bool`` is not one here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def resume_conflicts(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The settings that differ from a saved run's and change what it computes.

    Fields with ``metadata["resume_free"]`` may differ; a field with ``metadata["compare_by"]``
    is compared by that key of the records (the model's and the data's fingerprints) where
    both have it, else by its value. A field the saved run did not have is not compared.

    Args:
        saved: The saved run's ``bgem3_finetune.json``.
        current: This run's record (:meth:`FinetuneSettings.to_json` with the fingerprints).

    Returns:
        ``"name: saved -> current"`` for each conflicting field, in field order.

    Example:
        >>> saved = FinetuneSettings(model="m", train_data=["t"], output="o").to_json()
        >>> now = FinetuneSettings(model="m", train_data=["t"], output="elsewhere",
        ...                        learning_rate=1e-4, logging_steps=1).to_json()
        >>> resume_conflicts(saved, now)
        ['learning_rate: 1e-05 -> 0.0001']
    """
    conflicts = []
    for f in dataclasses.fields(FinetuneSettings):
        if f.metadata.get("resume_free") or f.name not in saved:
            continue
        key = f.metadata.get("compare_by")
        if key and key in saved and key in current:
            if saved[key] != current[key]:
                conflicts.append(f"{f.name}: {_shown(saved[f.name])} -> "
                                 f"{_shown(current[f.name])} ({key} differs)")
            continue
        before, after = saved[f.name], json.loads(json.dumps(current[f.name]))
        shown = f"{f.name}: {_shown(before)} -> {_shown(after)}"
        if f.name == "heads":  # the order of the heads changes nothing
            before, after = sorted(before), sorted(after)
        if before != after:
            conflicts.append(shown)
    return conflicts


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def read_settings(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The settings a fine-tuned checkpoint was trained with (``bgem3_finetune.json``).

    Args:
        path: The fine-tuned checkpoint directory.

    Returns:
        The settings, with the run's record (steps, loss log, versions).
    """
    data: dict[str, Any] = json.loads((Path(path) / SETTINGS_FILE).read_text())
    return data
