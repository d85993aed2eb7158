"""The trainable BGE-M3: the inference network with its training forward and its saving.

Lexical weights are gathered over the token ids present in the batch (a ``scatter_reduce``
with ``amax``), never into a ``[batch, length, vocabulary]`` tensor: the same scores and
gradients as FlagEmbedding's training path at a fraction of its memory (4.1 GB in fp16 for
16 x 512 tokens and 250,002 ids there).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the torch convention
from torch import nn

from bgem3._files import fsync_path
from bgem3.batching import TokenizerSpec
from bgem3.checkpoint import COLBERT_HEAD, SPARSE_HEAD
from bgem3.model import BGEM3Module
from bgem3.train.loss import HEADS, LossOutput, Representations, m3_loss
from bgem3.train.settings import SETTINGS_FILE

__all__ = ["M3ForTraining", "new_heads", "save_checkpoint"]

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "sentencepiece.bpe.model")
SPARSE_INIT_BIAS = 0.1


def new_heads(hidden: int, colbert_dim: int | None = None, *, seed: int = 0
              ) -> tuple[nn.Linear, nn.Linear]:
    """Fresh ColBERT and sparse heads for a backbone without them.

    The ColBERT head starts as ``nn.Linear``'s default (as FlagEmbedding's). The sparse
    head starts with zero weights and a small positive bias: every token then has the same
    positive weight, so lexical matching starts as a plain term overlap and every token
    receives gradient (a random start leaves many weights at ``relu``'s zero, where they
    get no gradient and can stay for good: the "sparse weights collapse to zero" reports).

    Args:
        hidden: The backbone's hidden size.
        colbert_dim: ColBERT output width (default: ``hidden``).
        seed: Seed of the ColBERT head's random start.

    Returns:
        ``(colbert_linear, sparse_linear)``.
    """
    generator = torch.Generator().manual_seed(seed)
    colbert = nn.Linear(hidden, colbert_dim or hidden)
    bound = 1.0 / hidden**0.5  # nn.Linear's default range, drawn from our own generator
    with torch.no_grad():
        colbert.weight.uniform_(-bound, bound, generator=generator)
        colbert.bias.uniform_(-bound, bound, generator=generator)
    sparse = nn.Linear(hidden, 1)
    with torch.no_grad():
        sparse.weight.zero_()
        sparse.bias.fill_(SPARSE_INIT_BIAS)
    return colbert, sparse


class M3ForTraining(nn.Module):
    """BGE-M3 in training: batches of queries and passage groups in, the loss out.

    Args:
        module: The network (backbone and both heads), fp32.
        spec: The tokenizer's special ids (dropped from lexical weights).
        heads: The heads trained; the others are frozen and not computed.
        group_size: Passages per query.
        temperature: Score temperature.
        self_distill: Self-knowledge distillation from the ensemble.
        kd_loss: Use of teacher scores: ``"kl_div"`` or ``"m3_kd_loss"``.
        in_batch_negatives: Score queries against the whole batch, not only their group.
        freeze_backbone: Train the heads alone (the dense output then stays as it was).

    Attributes:
        m3: The network being trained (``module``).
        spec: The tokenizer's special ids (the padding id collates batches).
    """

    def __init__(self, module: BGEM3Module, spec: TokenizerSpec, *,
                 heads: Sequence[str] = HEADS, group_size: int = 8, temperature: float = 0.02,
                 self_distill: bool = True, kd_loss: str = "kl_div",
                 in_batch_negatives: bool = True, freeze_backbone: bool = False) -> None:
        super().__init__()
        self.m3 = module
        self.spec = spec
        self.heads = [h for h in HEADS if h in heads]
        # m3_loss with the settings it takes as they are (self-distillation waits for
        # distill_active, which the trainer's callback switches on)
        self._m3_loss = partial(m3_loss, group_size=group_size, temperature=temperature,
                                kd_loss=kd_loss, in_batch_negatives=in_batch_negatives)
        self.self_distill = self_distill
        self.distill_active = True
        self.register_buffer("_unused_ids", torch.tensor(spec.unused_ids), persistent=False)
        module.train()
        module.requires_grad_(True)
        if freeze_backbone:
            module.backbone.requires_grad_(False)
        pooler = getattr(module.backbone, "pooler", None)
        if pooler is not None:  # not part of BGE-M3's outputs: no gradient ever reaches it
            pooler.requires_grad_(False)
        for name in ("colbert", "sparse"):
            head = getattr(module, f"{name}_linear")
            if head is not None and name not in self.heads:
                head.requires_grad_(False)

    @property
    def config(self) -> Any:
        """The backbone's transformers config (the Trainer reads it)."""
        return self.m3.config

    def gradient_checkpointing_enable(self, **kwargs: Any) -> None:
        """Recompute the backbone's activations in the backward pass (less memory)."""
        backbone: Any = self.m3.backbone
        backbone.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False})

    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Raw outputs of one padded batch.

        Dense vectors, then (for the heads trained) per-token lexical weights and ColBERT
        vectors.
        """
        hidden = self.m3.backbone(input_ids=ids, attention_mask=mask,
                                  return_dict=True).last_hidden_state
        out = [F.normalize(hidden[:, 0], dim=-1)]
        if "sparse" in self.heads:
            out.append(torch.relu(self._head("sparse")(hidden)).squeeze(-1))
        if "colbert" in self.heads:
            vectors = self._head("colbert")(hidden[:, 1:]) * mask[:, 1:, None]
            out.append(F.normalize(vectors, dim=-1))
        return tuple(out)

    def _head(self, name: str) -> nn.Module:
        head = getattr(self.m3, f"{name}_linear")
        if head is None:
            raise ValueError(f"the {name} head is trained but the model has none")
        return head  # type: ignore[no-any-return]

    def _lexical(self, ids: list[torch.Tensor], masks: list[torch.Tensor],
                 weights: list[torch.Tensor]) -> list[torch.Tensor]:
        """Lexical vectors over the ids present in all of ``ids``: max weight per id."""
        unused: torch.Tensor = self._unused_ids  # type: ignore[assignment]
        keep = [m.bool() & ~torch.isin(i, unused) for i, m in zip(ids, masks, strict=True)]
        present = torch.unique(torch.cat([i[k] for i, k in zip(ids, keep, strict=True)]))
        out = []
        for token_ids, k, w in zip(ids, keep, weights, strict=True):
            columns = torch.searchsorted(present, token_ids.contiguous())
            columns = torch.where(k, columns, present.numel())  # dropped: a spare column
            vectors = w.new_zeros(w.shape[0], present.numel() + 1)
            vectors = vectors.scatter_reduce(1, columns, w, reduce="amax", include_self=True)
            out.append(vectors[:, :-1])
        return out

    def assemble(self, q_raw: Sequence[torch.Tensor], p_raw: Sequence[torch.Tensor],
                 query_ids: torch.Tensor, query_mask: torch.Tensor, passage_ids: torch.Tensor,
                 passage_mask: torch.Tensor) -> tuple[Representations, Representations]:
        """The representations the loss takes, from the raw outputs of :meth:`encode`."""
        q_items = dict(zip(["dense", *[h for h in ("sparse", "colbert") if h in self.heads]],
                           q_raw, strict=True))
        p_items = dict(zip(["dense", *[h for h in ("sparse", "colbert") if h in self.heads]],
                           p_raw, strict=True))
        q_sparse = p_sparse = None
        if "sparse" in self.heads:
            q_sparse, p_sparse = self._lexical([query_ids, passage_ids],
                                               [query_mask, passage_mask],
                                               [q_items["sparse"], p_items["sparse"]])
        queries = Representations(q_items["dense"], q_sparse, q_items.get("colbert"),
                                  query_mask[:, 1:])
        passages = Representations(p_items["dense"], p_sparse, p_items.get("colbert"),
                                   passage_mask[:, 1:])
        return queries, passages

    def forward(self, query_ids: torch.Tensor | None = None,
                query_mask: torch.Tensor | None = None,
                passage_ids: torch.Tensor | None = None,
                passage_mask: torch.Tensor | None = None,
                teacher_scores: torch.Tensor | None = None,
                encode_ids: torch.Tensor | None = None,
                encode_mask: torch.Tensor | None = None) -> Any:
        """The loss of one batch (``b`` queries, ``b * group_size`` passages).

        With ``encode_ids`` / ``encode_mask`` instead, :meth:`encode` them (gradient
        caching runs its chunks through here, so that DDP sees every forward).
        """
        if encode_ids is not None and encode_mask is not None:
            return self.encode(encode_ids, encode_mask)
        if query_ids is None or query_mask is None or passage_ids is None \
                or passage_mask is None:
            raise ValueError("forward needs query_ids, query_mask, passage_ids, passage_mask")
        q_raw = self.encode(query_ids, query_mask)
        p_raw = self.encode(passage_ids, passage_mask)
        queries, passages = self.assemble(q_raw, p_raw, query_ids, query_mask, passage_ids,
                                          passage_mask)
        return self.loss(queries, passages, teacher_scores, query_mask, passage_mask, p_raw)

    def loss(self, queries: Representations, passages: Representations,
             teacher_scores: torch.Tensor | None = None,
             query_mask: torch.Tensor | None = None, passage_mask: torch.Tensor | None = None,
             p_raw: Sequence[torch.Tensor] | None = None) -> LossOutput:
        """:func:`~bgem3.train.m3_loss` with this model's settings.

        With the masks it also reports ``sparse_active``, the share of real passage tokens
        with a non-zero lexical weight (a collapsing sparse head shows there first).
        """
        out = self._m3_loss(queries, passages, heads=self.heads, teacher_scores=teacher_scores,
                            self_distill=self.self_distill and self.distill_active)
        if "sparse" in self.heads and p_raw is not None and passage_mask is not None:
            weights = p_raw[1].detach()
            real = passage_mask.bool()
            out.parts["sparse_active"] = (weights[real] > 0).float().mean()
        return out


def save_checkpoint(module: BGEM3Module, source: Path, output: str | os.PathLike[str],
                    settings: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint in BGE-M3's layout that ``bgem3.BGEM3`` and FlagEmbedding load.

    The backbone as ``config.json`` + ``model.safetensors``, both heads as fp32
    ``nn.Linear`` state dicts, the tokenizer files of ``source``, and ``settings`` as
    ``bgem3_finetune.json`` (JSON: no pickle). Each file is written under a temporary name,
    flushed to disk and moved into place.

    Args:
        module: The network to save.
        source: The checkpoint the training started from (its tokenizer files are copied).
        output: The directory (created).
        settings: How it was trained.

    Returns:
        The directory.
    """
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    staging = out / ".saving"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    state = {k: v.detach().cpu().contiguous() for k, v in module.backbone.state_dict().items()}
    backbone: Any = module.backbone
    backbone.save_pretrained(staging, state_dict=state, safe_serialization=True)
    for name, head in ((COLBERT_HEAD, module.colbert_linear), (SPARSE_HEAD, module.sparse_linear)):
        if head is None:
            raise ValueError(f"cannot save {name}: the model has no such head")
        torch.save({k: v.detach().cpu().float().contiguous() for k, v in head.state_dict().items()},
                   staging / name)
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, staging / name)
    if settings is not None:
        (staging / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
    for file in staging.iterdir():
        fsync_path(file)
        os.replace(file, out / file.name)
    staging.rmdir()
    fsync_path(out)
    return out
