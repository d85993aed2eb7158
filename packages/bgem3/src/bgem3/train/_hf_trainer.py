"""The ``transformers.Trainer`` subclass behind :func:`bgem3.train.finetune`."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback

from bgem3.errors import TrainingDivergedError
from bgem3.train._output import STAGING, commit_checkpoint, discard
from bgem3.train.data import GroupBatches, TrainingSet, collate_groups
from bgem3.train.loss import LossOutput
from bgem3.train.model import M3ForTraining, save_checkpoint

logger = logging.getLogger(__name__)

__all__ = ["M3Trainer", "grad_cache_step"]


class _Indices(torch.utils.data.Dataset[int]):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class _SelfDistillStart(TrainerCallback):
    """Turns self-distillation on at the configured optimizer step (also after a resume)."""

    def __init__(self, network: M3ForTraining, start: int) -> None:
        self.network = network
        self.start = start

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.network.distill_active = state.global_step >= self.start


class _DivergenceGuard(TrainerCallback):
    """Stops the run at the first non-finite loss, gradient or weight (before it is saved)."""

    def __init__(self, trainer: M3Trainer) -> None:
        self.trainer = trainer

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer.check_step(state.global_step + 1)

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer.check_weights(state.global_step + 1)


class M3Trainer(Trainer):
    """A Trainer for BGE-M3: group batches, loss parts in the logs, gradient caching.

    Checkpoints are written in BGE-M3's layout, with ``bgem3_finetune.json`` instead of a
    pickled ``training_args.bin``, atomically (:mod:`bgem3.train._output`). A non-finite
    loss, gradient or weight stops the run with :class:`TrainingDivergedError` before that
    step is logged or saved.
    """

    def __init__(self, *, network: M3ForTraining, train_set: TrainingSet, batches: GroupBatches,
                 source: Path, settings: Any, **kwargs: Any) -> None:
        self._staging: str | None = None  # where checkpoints go while one is being written
        super().__init__(model=network, **kwargs)
        self.train_set = train_set
        self.batches = batches
        self.source = source
        self.settings = settings
        self.settings_record: dict[str, Any] = settings.to_json()
        self._parts: dict[str, float] = {}
        self._parts_count = 0
        self._losses: list[torch.Tensor] = []  # of the micro-batches since the last step
        self.add_callback(_SelfDistillStart(network, settings.self_distill_start))
        self.add_callback(_DivergenceGuard(self))

    # ------------------------------------------------------------------ data
    def get_train_dataloader(self) -> DataLoader[Any]:
        """Length-bucketed group batches; the Trainer sets their epoch."""
        pad_id = self.train_set_pad_id
        loader = DataLoader(_Indices(len(self.train_set)), batch_sampler=self.batches,
                            collate_fn=lambda idx: collate_groups(self.train_set, idx, pad_id),
                            num_workers=0)
        return self.accelerator.prepare(loader)  # type: ignore[no-any-return]

    @property
    def train_set_pad_id(self) -> int:
        """The padding id of the tokenizer."""
        network: M3ForTraining = self.accelerator.unwrap_model(self.model)
        return network.spec.pad_id

    # ------------------------------------------------------------------ loss
    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, Any],
                     return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
        """The loss of one batch; its parts are kept for the next log line."""
        out = model(**inputs)
        self._keep(out.parts)
        return (out.loss, out) if return_outputs else out.loss

    def _keep(self, parts: dict[str, torch.Tensor]) -> None:
        for name, value in parts.items():
            self._parts[name] = self._parts.get(name, 0.0) + float(value)
        self._parts_count += 1

    def log(self, logs: dict[str, float], *rest: Any) -> None:
        """Add the mean of each loss part since the last log line.

        ``rest``: what this transformers passes after the logs (``start_time`` since 4.47).
        """
        if "loss" in logs and self._parts_count:
            names = sorted(self._parts)
            local = torch.tensor([self._parts[n] / self._parts_count for n in names],
                                 device=self.args.device)
            mean = self.accelerator.reduce(local, reduction="mean")
            logs.update({f"loss_{n}" if not n.startswith("sparse_") else n: round(float(v), 5)
                         for n, v in zip(names, mean.tolist(), strict=True)})
            self._parts, self._parts_count = {}, 0
        super().log(logs, *rest)

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any],
                      *rest: Any) -> torch.Tensor:
        """One batch; with gradient caching, the GradCache procedure (Gao et al., 2021).

        ``rest`` is what this transformers passes after the inputs (``num_items_in_batch``
        since 4.46, nothing before).
        """
        loss = self._training_step(model, inputs, *rest)
        self._losses.append(loss.detach().float().reshape(-1)[:1])
        return loss

    def _training_step(self, model: torch.nn.Module, inputs: dict[str, Any],
                       *rest: Any) -> torch.Tensor:
        if not self.settings.grad_cache:
            return super().training_step(model, inputs, *rest)
        model.train()
        inputs = self._prepare_inputs(inputs)
        # the last accumulation window may be shorter (transformers >= 4.46 says so)
        scale = 1.0 / getattr(self, "current_gradient_accumulation_steps",
                              self.args.gradient_accumulation_steps)
        out = grad_cache_step(model, self.accelerator.unwrap_model(model), inputs,
                              int(self.settings.grad_cache), scale=scale,
                              backward=self.accelerator.backward,
                              autocast=self.compute_loss_context_manager)
        self._keep(out.parts)
        return out.loss.detach() * scale

    # ------------------------------------------------------------------ divergence
    def _everywhere(self, flags: torch.Tensor) -> list[float]:
        """``flags`` summed over the processes (each decides alike, none waits for another)."""
        if self.accelerator.num_processes > 1:
            flags = self.accelerator.reduce(flags, reduction="sum")
        return [float(v) for v in flags.tolist()]

    def check_step(self, step: int) -> None:
        """Before the optimizer step: raise if a loss or a gradient of this step is not finite.

        With fp16, gradients that overflow are left to the loss scaler (it skips the step).
        """
        network: M3ForTraining = self.accelerator.unwrap_model(self.model)
        losses = torch.cat(self._losses) if self._losses else torch.zeros(1)
        self._losses = []
        bad_loss = (~torch.isfinite(losses)).any()
        grads = [p.grad for p in network.parameters() if p.grad is not None]
        if grads and not self.args.fp16:
            bad_grad = ~_finite_norms(grads)
        else:
            bad_grad = torch.zeros((), dtype=torch.bool, device=bad_loss.device)
        flags = torch.stack([bad_loss.to(self.args.device), bad_grad.to(self.args.device)])
        loss_flag, grad_flag = self._everywhere(flags.float())
        if loss_flag or grad_flag:
            what = (f"the loss was {_shown(losses)}" if loss_flag
                    else f"the loss was {_shown(losses)} but a gradient was not finite")
            self._diverged(step, what)

    def check_weights(self, step: int) -> None:
        """After the optimizer step: raise if it made a trained weight non-finite."""
        network: M3ForTraining = self.accelerator.unwrap_model(self.model)
        trained = [p for p in network.parameters() if p.requires_grad]
        if not trained:
            return
        bad = ~_finite_norms(trained)
        if self._everywhere(bad.float().reshape(1))[0]:
            self._diverged(step, "the optimizer step made weights NaN, infinite or too large "
                                 "for float32")

    def _diverged(self, step: int, what: str) -> None:
        rate = (f" (learning rate {self.optimizer.param_groups[0]['lr']:.3g})"
                if self.optimizer is not None else "")
        message = (f"training diverged at step {step}: {what}{rate}; the "
                   f"run stopped, and nothing of step {step} was logged or saved. Lower "
                   "--learning-rate (or check --temperature and the data) and start again")
        logger.error(message)
        raise TrainingDivergedError(message)

    # ------------------------------------------------------------------ saving
    def clear(self, paths: Sequence[Path]) -> None:
        """Remove this tool's leftovers in the output (main process; the others wait)."""
        self.accelerator.wait_for_everyone()  # every process has read the output first
        if self.args.should_save:
            staging = Path(str(self.args.output_dir)) / STAGING
            for path in paths:
                discard(path, staging)
        self.accelerator.wait_for_everyone()

    def _get_output_dir(self, trial: Any) -> str:
        """Where the Trainer puts ``checkpoint-N``: the staging folder while saving one."""
        return self._staging or str(super()._get_output_dir(trial))

    def _save_checkpoint(self, model: Any, trial: Any, *rest: Any, **kwargs: Any) -> None:
        """Save a resumable checkpoint atomically.

        Every process writes its part (the weights, the optimizer state, its random state)
        into ``OUTPUT/checkpoints/.staging/checkpoint-N``; then the main process flushes it,
        writes the marker and renames it into place (:func:`commit_checkpoint`), and removes
        the oldest checkpoints beyond ``save_total_limit``.
        """
        run = Path(super()._get_output_dir(trial))
        staging = run / STAGING
        staged = staging / f"checkpoint-{self.state.global_step}"
        if self.args.should_save:
            staging.mkdir(parents=True, exist_ok=True)
            discard(staged, staging)  # what a killed save of this step left
        self.accelerator.wait_for_everyone()
        self._staging = str(staging)
        try:
            super()._save_checkpoint(model, trial, *rest, **kwargs)
        finally:
            self._staging = None
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            commit_checkpoint(staged, run, keep=self.args.save_total_limit)
        self.accelerator.wait_for_everyone()

    def _save(self, output_dir: str | None = None, state_dict: dict[str, Any] | None = None
              ) -> None:
        """Save in BGE-M3's layout (no ``training_args.bin``)."""
        if not self.args.should_save:
            return
        network: M3ForTraining = self.accelerator.unwrap_model(self.model)
        if state_dict is not None:  # gathered by DeepSpeed / FSDP: load it into place first
            own = {k: v for k, v in state_dict.items() if k.startswith("m3.")}
            network.load_state_dict(own, strict=False)
        save_checkpoint(network.m3, self.source, output_dir or str(self.args.output_dir),
                        self.settings_record)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        """Load a checkpoint written by :meth:`_save` (resume)."""
        from safetensors.torch import load_file

        from bgem3.checkpoint import COLBERT_HEAD, SPARSE_HEAD, load_head

        network: M3ForTraining = self.accelerator.unwrap_model(model or self.model)
        folder = Path(resume_from_checkpoint)
        state = load_file(str(folder / "model.safetensors"))
        missing, unexpected = network.m3.backbone.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if "pooler" not in k]:
            raise ValueError(f"{folder} does not match the model being trained "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        for name, attr in ((COLBERT_HEAD, "colbert_linear"), (SPARSE_HEAD, "sparse_linear")):
            head = getattr(network.m3, attr)
            if head is not None:
                loaded = load_head(folder / name, head.in_features, head.out_features)
                head.load_state_dict(loaded.state_dict())


def grad_cache_step(model: torch.nn.Module, network: M3ForTraining, inputs: dict[str, Any],
                    chunk: int, *, scale: float = 1.0,
                    backward: Callable[[torch.Tensor], Any] = torch.Tensor.backward,
                    autocast: Callable[[], Any] = nullcontext) -> LossOutput:
    """Accumulate the gradients of one batch, encoding ``chunk`` texts at a time.

    GradCache (Gao et al., 2021): encode every chunk without a graph, compute the loss over
    the whole batch and its gradient with respect to the representations, then encode each
    chunk again with a graph and back-propagate that cached gradient. Each chunk's random
    state (dropout) is replayed, so the gradients equal those of one big forward pass while
    only one chunk's activations are alive at a time.

    Args:
        model: The (possibly DDP-wrapped) model whose forward encodes a chunk.
        network: The unwrapped :class:`M3ForTraining`.
        inputs: A collated batch.
        chunk: Texts per chunk.
        scale: Multiplies the loss (``1 / gradient accumulation steps``).
        backward: How to back-propagate (the accelerator's, in the Trainer).
        autocast: Mixed-precision context.

    Returns:
        The batch's loss and parts (unscaled).
    """
    pieces = [(name, start) for name in ("query", "passage")
              for start in range(0, inputs[f"{name}_ids"].shape[0], chunk)]
    states: list[tuple[torch.Tensor, list[torch.Tensor] | None]] = []
    raw: dict[str, list[tuple[torch.Tensor, ...]]] = {"query": [], "passage": []}
    for name, start in pieces:  # 1. every chunk without a graph
        states.append(_rng_state())
        with torch.no_grad(), autocast():
            raw[name].append(model(encode_ids=inputs[f"{name}_ids"][start : start + chunk],
                                   encode_mask=inputs[f"{name}_mask"][start : start + chunk]))
    leaves = {name: [torch.cat(parts).detach().requires_grad_()
                     for parts in zip(*chunks, strict=True)]
              for name, chunks in raw.items()}
    with autocast():  # 2. the loss of the whole batch; its gradient w.r.t. the outputs
        queries, passages = network.assemble(
            leaves["query"], leaves["passage"], inputs["query_ids"], inputs["query_mask"],
            inputs["passage_ids"], inputs["passage_mask"])
        out = network.loss(queries, passages, inputs.get("teacher_scores"),
                           inputs["query_mask"], inputs["passage_mask"], leaves["passage"])
    flat = [t for ts in leaves.values() for t in ts]
    grads = dict(zip([id(t) for t in flat],
                     torch.autograd.grad(out.loss * scale, flat, allow_unused=True), strict=True))
    for i, ((name, start), state) in enumerate(zip(pieces, states, strict=True)):
        _set_rng_state(state)  # 3. each chunk again, with its cached gradient
        ddp: Any = model
        last = i == len(pieces) - 1
        sync = nullcontext() if last or not hasattr(ddp, "no_sync") else ddp.no_sync()
        with sync:
            with autocast():
                fresh = model(encode_ids=inputs[f"{name}_ids"][start : start + chunk],
                              encode_mask=inputs[f"{name}_mask"][start : start + chunk])
            terms = [(f * grads[id(t)][start : start + f.shape[0]]).sum()
                     for f, t in zip(fresh, leaves[name], strict=True)
                     if grads[id(t)] is not None]
            if terms:
                backward(torch.stack(terms).sum())
    return out


def _finite_norms(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Whether every tensor's norm is finite (no NaN, no infinity, no overflow), on device.

    One reduction per tensor, no temporary of a tensor's size (the embedding matrix's
    gradient is a quarter of BGE-M3's weights).
    """
    return torch.isfinite(torch.stack([t.detach().norm() for t in tensors])).all()


def _shown(losses: torch.Tensor) -> str:
    """The first non-finite loss of a step, else its last loss."""
    values = [float(v) for v in losses.tolist()]
    bad = [v for v in values if not math.isfinite(v)]
    return str(bad[0]) if bad else f"{values[-1]:.4g}"


def _rng_state() -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[torch.Tensor, list[torch.Tensor] | None]) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])
