"""The settings of a fine-tuning run: one dataclass, checked before anything loads.

Each field carries its help text in ``metadata["help"]`` (and, where the value is one of a
few, ``metadata["choices"]``): the ``bgem3 finetune`` flags are generated from the fields,
so a new option is one field here. Importing this module imports no torch (the CLI reads
it to build its parser).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bgem3._inputs import positive_int

__all__ = ["HEADS", "SETTINGS_FILE", "FinetuneSettings", "read_settings"]

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

    model: str = field(metadata=_help("hub id or checkpoint directory to start from"))
    train_data: list[str] = field(metadata=_help(
        "FlagEmbedding's JSONL files or directories of them: query, pos, neg [, pos_scores, "
        "neg_scores, prompt]", metavar="FILE_OR_DIR"))
    output: str = field(metadata=_help(
        "directory of the fine-tuned checkpoint (OUTPUT/checkpoints holds the resumable "
        "training checkpoints)"))
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
    temperature: float = field(default=0.02, metadata=_help("score temperature"))
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
        "recompute activations in the backward pass (less memory)"))
    grad_cache: int | None = field(default=None, metadata=_help(
        "gradient caching: encode a batch this many texts at a time (large batches in small "
        "memory, same gradients; default: off)", metavar="TEXTS"))
    gradient_accumulation_steps: int = field(default=1, metadata=_help(
        "batches per optimizer step"))
    warmup_ratio: float = field(default=0.1, metadata=_help(
        "share of the steps spent warming up"))
    weight_decay: float = field(default=0.01, metadata=_help("AdamW weight decay"))
    logging_steps: int = field(default=10, metadata=_help(
        "log the loss and its parts every this many steps"))
    save_steps: int = field(default=500, metadata=_help(
        "save a resumable checkpoint every this many steps"))
    save_total_limit: int = field(default=2, metadata=_help("resumable checkpoints kept"))
    query_instruction: str | None = field(default=None, metadata=_help(
        "prepended to queries without their own 'prompt'"))
    device: str | None = field(default=None, metadata=_help(
        "'cpu' to train on the CPU even if a GPU is there (default: what transformers picks)",
        choices=("cpu",)))
    bf16: bool = field(default=False, metadata=_help("bfloat16 mixed precision"))
    fp16: bool = field(default=False, metadata=_help("float16 mixed precision (CUDA)"))
    resume: bool = field(default=False, metadata=_help(
        "continue from the last checkpoint in OUTPUT/checkpoints"))
    show_progress: bool = field(default=True, metadata=_help(
        "progress bar (off: log lines only)"))

    def check(self) -> None:
        """Raise ``ValueError`` for settings that cannot work, before anything loads."""
        heads = list(self.heads)
        if not heads or any(h not in HEADS for h in heads) or len(set(heads)) != len(heads):
            raise ValueError(f"heads must be a non-empty subset of {', '.join(HEADS)}, got "
                             f"{','.join(heads) or 'nothing'}")
        for name in ("group_size", "batch_size", "query_max_length", "passage_max_length",
                     "gradient_accumulation_steps", "logging_steps", "save_steps"):
            positive_int(getattr(self, name), name)
        for name in ("max_steps", "grad_cache", "colbert_dim"):
            if getattr(self, name) is not None:
                positive_int(getattr(self, name), name)
        if self.query_max_length < 2 or self.passage_max_length < 2:
            raise ValueError("query_max_length and passage_max_length must be at least 2")
        if not self.temperature > 0 or not self.learning_rate > 0 or not self.epochs > 0:
            raise ValueError("temperature, learning_rate and epochs must be positive")
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


def read_settings(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The settings a fine-tuned checkpoint was trained with (``bgem3_finetune.json``).

    Args:
        path: The fine-tuned checkpoint directory.

    Returns:
        The settings, with the run's record (steps, loss log, versions).
    """
    data: dict[str, Any] = json.loads((Path(path) / SETTINGS_FILE).read_text())
    return data
