"""Fine-tuning on transformers' ``Trainer``: :func:`finetune`.

The Trainer brings the optimizer, the schedule, resumable checkpoints and distributed
launch (``torchrun`` / ``accelerate launch``, DeepSpeed, FSDP); this module adds BGE-M3's
loss, length-bucketed group batches, optional gradient caching, and checkpoints saved in
BGE-M3's layout with their settings as JSON.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bgem3.train.settings import FinetuneSettings

if TYPE_CHECKING:
    from bgem3.batching import M3Tokenizer
    from bgem3.checkpoint import Checkpoint
    from bgem3.model import BGEM3Module
    from bgem3.train._output import OutputPlan

__all__ = ["finetune"]

logger = logging.getLogger(__name__)


def _load(settings: FinetuneSettings, checkpoint: Checkpoint
          ) -> tuple[BGEM3Module, M3Tokenizer]:
    """The network (fp32, on the CPU until the Trainer moves it) and the tokenizer."""
    import torch

    from bgem3.batching import load_tokenizer
    from bgem3.errors import CheckpointNotFoundError
    from bgem3.model import load_module
    from bgem3.train.model import new_heads

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
    tokenizer = load_tokenizer(checkpoint.path)
    module = load_module(checkpoint, device=torch.device("cpu"), dtype=torch.float32,
                         dense_only=not checkpoint.has_heads)
    if settings.init_heads:
        hidden = int(module.config.hidden_size)
        module.colbert_linear, module.sparse_linear = new_heads(
            hidden, settings.colbert_dim, seed=settings.seed)
    return module, tokenizer


def _run_record(settings: FinetuneSettings, checkpoint: Checkpoint, plan: OutputPlan
                ) -> dict[str, Any]:
    """The settings the run records: this one's, or the resumed run's (checked to match).

    Besides the settings: the fingerprints of the model's weights and of the data, which a
    resume compares instead of their paths.

    Raises:
        ValueError: A resume with settings that change what the run computes.
    """
    from bgem3.checkpoint import fingerprint
    from bgem3.train.data import data_fingerprint
    from bgem3.train.settings import resume_conflicts

    record = {**settings.to_json(), "model_fingerprint": fingerprint(checkpoint.path),
              "train_data_sha256": data_fingerprint(settings.train_data)}
    if plan.resume_from is None or plan.saved is None:
        return record
    conflicts = resume_conflicts(plan.saved, record)
    if conflicts:
        raise ValueError(
            f"cannot resume from {plan.resume_from}: settings that change the result differ "
            f"from the run's ({'; '.join(conflicts)}); resume with the run's settings (its "
            f"bgem3_finetune.json), or start a new run in another --output")
    step = int(plan.resume_from.name.rpartition("-")[2])
    kept = {k: v for k, v in plan.saved.items() if k in record or k == "resumed_from"}
    return {**record, **kept, "resumed_from": [*kept.get("resumed_from", []), step]}


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
    transformers may refuse (:func:`bgem3.model.torch_load_refusal`) only after the model is
    loaded; :func:`finetune` says so before it starts.
    """
    from bgem3.model import torch_load_refusal

    if torch_load_refusal() is None:
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
        ValueError: Settings that cannot work; an output that is, contains or lies inside the
            model's directory; ``resume`` with settings that change the result (named), or
            where transformers refuses to load the optimizer state (transformers >= 4.50
            with torch < 2.6).
        FileExistsError: A non-empty output that is not this run's, without ``resume`` or
            ``overwrite_output``.
        DatasetError: Malformed training data (named ``file:line``).
        CheckpointNotFoundError: No such model, or no heads without ``init_heads``.
        TrainingDivergedError: The loss, a gradient or a weight became NaN or infinite (a
            ``FloatingPointError``); nothing of that step was logged or saved.
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

    from bgem3.checkpoint import resolve_checkpoint
    from bgem3.train._output import CHECKPOINTS, plan_output
    from bgem3.train.data import GroupBatches, TrainingSet, read_training_data
    from bgem3.train.model import M3ForTraining

    settings.check()
    if settings.resume and (blocker := _resume_blocker()):
        raise ValueError(blocker)
    checkpoint = resolve_checkpoint(settings.model, require_heads=False)
    plan = plan_output(settings, checkpoint.path)
    run_record = _run_record(settings, checkpoint, plan)
    examples = read_training_data(settings.train_data, settings.query_instruction)
    module, tokenizer = _load(settings, checkpoint)
    _warn_untrained(settings)
    train_set = TrainingSet(examples, tokenizer.backend, tokenizer.spec, settings.group_size,
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
        module, tokenizer.spec, heads=settings.heads, group_size=settings.group_size,
        temperature=settings.temperature, self_distill=settings.self_distill,
        kd_loss=settings.kd_loss, in_batch_negatives=settings.in_batch_negatives,
        freeze_backbone=settings.freeze_backbone)
    output = Path(settings.output).expanduser()
    args = TrainingArguments(
        output_dir=str(output / CHECKPOINTS),
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
        logging_nan_inf_filter=False,  # a non-finite loss stops the run; never hide one
    )
    if settings.gradient_checkpointing:
        network.gradient_checkpointing_enable()
    hf_logging.set_verbosity_warning()  # type: ignore[no-untyped-call]
    from bgem3.train._hf_trainer import M3Trainer

    trainer = M3Trainer(network=network, args=args, train_set=train_set, batches=batches,
                        source=checkpoint.path, settings=settings, callbacks=list(callbacks))
    trainer.settings_record = run_record
    trainer.clear(plan.discard)
    started = time.time()
    result = trainer.train(resume_from_checkpoint=None if plan.resume_from is None
                           else str(plan.resume_from))
    record = {
        **run_record,
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
