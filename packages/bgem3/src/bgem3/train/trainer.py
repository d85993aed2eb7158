"""Fine-tuning on transformers' ``Trainer``.

The Trainer brings the optimizer, the schedule, resumable checkpoints and distributed
launch (``torchrun`` / ``accelerate launch``, DeepSpeed, FSDP); this module adds BGE-M3's
loss, length-bucketed group batches, optional gradient caching, and checkpoints saved in
BGE-M3's layout with their settings as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bgem3.model import _torch_load_refusal
from bgem3.train.loss import HEADS

__all__ = ["FinetuneSettings", "finetune"]

logger = logging.getLogger(__name__)

SETTINGS_FILE = "bgem3_finetune.json"


@dataclass
class FinetuneSettings:
    """Everything a fine-tuning run depends on (saved as ``bgem3_finetune.json``).

    Attributes:
        model: Hub id or checkpoint directory to start from.
        train_data: JSONL files or directories (FlagEmbedding's format).
        output: Directory of the fine-tuned checkpoint (``output/checkpoints`` holds the
            resumable training checkpoints).
        heads: Heads to train; the others are frozen and saved unchanged.
        self_distill: Self-knowledge distillation from the ensemble score.
        self_distill_start: First optimizer step with self-distillation.
        init_heads: Create the ColBERT and sparse heads (for a backbone without them).
        colbert_dim: Width of a created ColBERT head (default: the hidden size).
        group_size: Passages per query: one positive, ``group_size - 1`` negatives.
        temperature: Score temperature.
        learning_rate: Peak learning rate (linear warm-up and decay).
        epochs: Passes over the data.
        max_steps: Stop after this many optimizer steps (overrides ``epochs``).
        batch_size: Most queries per batch (per device).
        batch_tokens: Padded passage tokens per batch; long texts get fewer queries
            (``None``: ``batch_size * group_size * passage_max_length``; ``0``: fixed
            batches of ``batch_size``).
        query_max_length: Longest query in tokens.
        passage_max_length: Longest passage in tokens.
        seed: Seed of everything random (groups, batches, dropout, new heads).
        kd_loss: Use of the data's teacher scores: ``"kl_div"`` or ``"m3_kd_loss"``.
        in_batch_negatives: Also use the other queries' passages as negatives.
        freeze_backbone: Train the heads alone.
        gradient_checkpointing: Recompute activations in the backward pass.
        grad_cache: Gradient caching: encode the batch this many texts at a time, so that a
            large batch fits in small memory with the same gradients (``None``: off).
        gradient_accumulation_steps: Batches per optimizer step.
        warmup_ratio: Share of the steps spent warming up.
        weight_decay: AdamW weight decay.
        logging_steps: Log the loss and its parts every this many steps.
        save_steps: Save a resumable checkpoint every this many steps.
        save_total_limit: Resumable checkpoints kept.
        query_instruction: Prepended to queries without their own ``prompt``.
        device: ``"cpu"`` to stay on the CPU (default: what transformers picks).
        bf16: Mixed precision in bfloat16.
        fp16: Mixed precision in float16 (CUDA).
        resume: Continue from the last checkpoint in ``output/checkpoints``.
        show_progress: Progress bar (``False``: log lines only).
    """

    model: str
    train_data: list[str]
    output: str
    heads: list[str] = field(default_factory=lambda: list(HEADS))
    self_distill: bool = True
    self_distill_start: int = 0
    init_heads: bool = False
    colbert_dim: int | None = None
    group_size: int = 8
    temperature: float = 0.02
    learning_rate: float = 1e-5
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 16
    batch_tokens: int | None = None
    query_max_length: int = 512
    passage_max_length: int = 512
    seed: int = 0
    kd_loss: str = "kl_div"
    in_batch_negatives: bool = True
    freeze_backbone: bool = False
    gradient_checkpointing: bool = False
    grad_cache: int | None = None
    gradient_accumulation_steps: int = 1
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int = 2
    query_instruction: str | None = None
    device: str | None = None
    bf16: bool = False
    fp16: bool = False
    resume: bool = False
    show_progress: bool = True

    def check(self) -> None:
        """Raise ``ValueError`` for settings that cannot work, before anything loads."""
        heads = list(self.heads)
        if not heads or any(h not in HEADS for h in heads) or len(set(heads)) != len(heads):
            raise ValueError(f"heads must be a non-empty subset of {', '.join(HEADS)}, got "
                             f"{','.join(heads) or 'nothing'}")
        for name in ("group_size", "batch_size", "query_max_length", "passage_max_length",
                     "gradient_accumulation_steps", "logging_steps", "save_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("max_steps", "grad_cache", "colbert_dim"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
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


def _load(settings: FinetuneSettings) -> tuple[Any, Any, Path]:
    """The network (fp32, trainable), the tokenizer backend pieces, the source path."""
    from bgem3.checkpoint import resolve_checkpoint
    from bgem3.encoder import BGEM3
    from bgem3.errors import CheckpointNotFoundError
    from bgem3.train.model import new_heads

    checkpoint = resolve_checkpoint(settings.model, require_heads=False)
    needs_heads = any(h in settings.heads for h in ("sparse", "colbert"))
    if checkpoint.has_heads and settings.init_heads:
        raise ValueError(f"{settings.model} has its heads already: drop --init-heads to "
                         "fine-tune them")
    if not checkpoint.has_heads and not settings.init_heads:
        raise CheckpointNotFoundError(
            f"{settings.model} has no colbert_linear.pt / sparse_linear.pt: pass --init-heads "
            "to create them (or --heads dense to train the dense output alone)"
            if needs_heads else
            f"{settings.model} has no colbert_linear.pt / sparse_linear.pt: pass --init-heads "
            "so that the output is a complete BGE-M3 checkpoint")
    model = BGEM3(settings.model, device="cpu", dtype="float32",
                  dense_only=not checkpoint.has_heads)
    module = model._module  # the network the encoder runs: trained here in place
    if settings.init_heads:
        hidden = int(module.config.hidden_size)
        module.colbert_linear, module.sparse_linear = new_heads(
            hidden, settings.colbert_dim, seed=settings.seed)
    return module, model, checkpoint.path


def _warn_untrained(settings: FinetuneSettings) -> None:
    untrained = [h for h in ("colbert", "sparse") if h not in settings.heads]
    if untrained:
        files = " and ".join(f"{h}_linear.pt" for h in untrained)
        origin = "created at random" if settings.init_heads else f"copied from {settings.model}"
        warnings.warn(f"{files} {'was' if len(untrained) == 1 else 'were'} not trained "
                      f"(--heads {','.join(settings.heads)}): {origin}", UserWarning,
                      stacklevel=3)


def _warmup(ratio: float) -> dict[str, Any]:
    """The warm-up share as this transformers takes it.

    5.x: a float ``warmup_steps`` below 1; 4.x: ``warmup_ratio`` (``warmup_steps`` is an int).
    """
    import inspect

    from transformers import TrainingArguments

    if "warmup_ratio" in inspect.signature(TrainingArguments).parameters:
        return {"warmup_ratio": ratio}
    return {"warmup_steps": ratio}


def _resume_blocker() -> str | None:
    """Why transformers' ``Trainer`` would refuse to resume a run here, or ``None``.

    A resumed run loads the optimizer, scheduler and random state with ``torch.load``, which
    transformers may refuse (:func:`bgem3.model._torch_load_refusal`) only after the model is
    loaded; :func:`finetune` says so before it starts.
    """
    if _torch_load_refusal() is None:
        return None
    import torch
    import transformers

    return (f"cannot resume: transformers {transformers.__version__} loads a checkpoint's "
            f"optimizer state only on torch >= 2.6 (CVE-2025-32434), this is torch "
            f"{torch.__version__}; upgrade torch, or start a new run without resume")


def finetune(settings: FinetuneSettings, *, callbacks: Sequence[Any] = ()) -> Path:
    """Fine-tune a BGE-M3 checkpoint and save it in BGE-M3's layout.

    Args:
        settings: The run (see :class:`FinetuneSettings`).
        callbacks: ``transformers.TrainerCallback`` objects to add (early stopping, logging).

    Returns:
        The output checkpoint directory, which ``bgem3.BGEM3`` and FlagEmbedding's
        ``BGEM3FlagModel`` load.

    Raises:
        ValueError: Settings that cannot work (also: ``resume`` where transformers refuses to
            load the optimizer state, transformers >= 4.50 with torch < 2.6).
        DatasetError: Malformed training data (named ``file:line``).
        CheckpointNotFoundError: No such model, or no heads without ``init_heads``.
        ImportError: accelerate, which transformers' ``Trainer`` needs, is not installed
            (``pip install "bgem3[train]"``).

    Example (run in ``tests/core/test_train.py``)::

        from bgem3.train import FinetuneSettings, finetune
        out = finetune(FinetuneSettings(model="BAAI/bge-m3", train_data=["mined.jsonl"],
                                        output="my-bge-m3", group_size=8, batch_size=16))
        bgem3.BGEM3(out)  # or FlagEmbedding's BGEM3FlagModel(str(out))
    """
    try:
        import accelerate  # type: ignore[import-untyped]  # noqa: F401 - the Trainer needs it
    except ImportError as exc:
        raise ImportError('fine-tuning runs on transformers\' Trainer, which needs accelerate: '
                          'pip install "bgem3[train]"') from exc
    from transformers import TrainingArguments
    from transformers.utils import logging as hf_logging

    from bgem3.train.data import GroupBatches, TrainingSet, read_training_data
    from bgem3.train.model import M3ForTraining

    settings.check()
    if settings.resume and (blocker := _resume_blocker()):
        raise ValueError(blocker)
    examples = read_training_data(settings.train_data, settings.query_instruction)
    module, encoder, source = _load(settings)
    _warn_untrained(settings)
    train_set = TrainingSet(examples, encoder._backend, encoder._spec, settings.group_size,
                            settings.query_max_length, settings.passage_max_length,
                            settings.seed)
    truncated = train_set.truncated
    if any(truncated):
        logger.warning("%d queries and %d passages were longer than their maximum length and "
                       "were truncated", *truncated)
    batch_tokens = settings.batch_tokens
    if batch_tokens is None:
        batch_tokens = settings.batch_size * settings.group_size * settings.passage_max_length
    batches = GroupBatches(train_set, settings.batch_size, batch_tokens or None,
                           seed=settings.seed)
    network = M3ForTraining(
        module, encoder._spec, heads=settings.heads, group_size=settings.group_size,
        temperature=settings.temperature, self_distill=settings.self_distill,
        kd_loss=settings.kd_loss, in_batch_negatives=settings.in_batch_negatives,
        freeze_backbone=settings.freeze_backbone)
    output = Path(settings.output)
    args = TrainingArguments(
        output_dir=str(output / "checkpoints"),
        learning_rate=settings.learning_rate,
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps or -1,
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        **_warmup(settings.warmup_ratio),
        weight_decay=settings.weight_decay,
        lr_scheduler_type="linear",
        logging_steps=settings.logging_steps,
        save_steps=settings.save_steps,
        save_total_limit=settings.save_total_limit,
        seed=settings.seed,
        bf16=settings.bf16,
        fp16=settings.fp16,
        use_cpu=settings.device == "cpu",
        remove_unused_columns=False,
        label_names=[],
        report_to=[],
        dataloader_num_workers=0,
        disable_tqdm=not settings.show_progress,
        ddp_find_unused_parameters=False,
    )
    if settings.gradient_checkpointing:
        network.gradient_checkpointing_enable()
    hf_logging.set_verbosity_warning()  # type: ignore[no-untyped-call]
    from bgem3.train._trainer import M3Trainer

    trainer = M3Trainer(network=network, args=args, train_set=train_set, batches=batches,
                        source=source, settings=settings, callbacks=list(callbacks))
    started = time.time()
    result = trainer.train(resume_from_checkpoint=True if settings.resume else None)
    record = {
        **settings.to_json(),
        "steps": int(result.global_step),
        "train_loss": float(result.training_loss),
        "seconds": round(time.time() - started, 1),
        "log": [entry for entry in trainer.state.log_history if "loss" in entry],
        "versions": _versions(),
    }
    trainer.settings_record = record
    trainer.save_model(str(output))
    return output


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("bgem3", "torch", "transformers", "accelerate"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


def read_settings(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The settings a fine-tuned checkpoint was trained with (``bgem3_finetune.json``)."""
    data: dict[str, Any] = json.loads((Path(path) / SETTINGS_FILE).read_text())
    return data
