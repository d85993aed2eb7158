"""BGE-M3's unified training loss, as a pure function of the three representations.

The definitions are FlagEmbedding's (``finetune/embedder/encoder_only/m3/modeling.py``),
checked against it by the tests: every score is divided by the temperature; each head has
an InfoNCE loss over in-batch and group negatives; the ensemble score is
``dense + 0.3 * sparse + colbert``; the total is
``(L_dense + L_ensemble + 0.1 * L_sparse + L_colbert) / 4``; with self-knowledge distillation
it becomes ``(L + (KD_dense + 0.1 * KD_sparse + KD_colbert) / 3) / 2``, where each ``KD`` is the
cross-entropy of a head's scores against the softmax of the detached ensemble score.

With a subset of heads the same rule applies to the terms present (one head: its own loss;
two: theirs and the ensemble of the two). Unlike FlagEmbedding, group-only training
(``in_batch_negatives=False``) scores every head, the ensemble included, on each query's own
group (FlagEmbedding's issue #1410).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F  # noqa: N812 - the torch convention

from bgem3.train.settings import HEADS

__all__ = ["HEADS", "LossOutput", "Representations", "m3_loss"]

HEAD_WEIGHTS = {"dense": 1.0, "sparse": 0.1, "colbert": 1.0}  # in the loss
ENSEMBLE_WEIGHTS = {"dense": 1.0, "sparse": 0.3, "colbert": 1.0}  # in the ensemble score


@dataclass
class Representations:
    """What one forward pass gives for ``n`` texts (padded to length ``L``).

    Attributes:
        dense: ``[n, d]`` normalised ``[CLS]`` states.
        sparse: ``[n, u]`` lexical weights over the ``u`` token ids present in the batch
            (the max over each id's positions; special tokens dropped), or ``None``.
        colbert: ``[n, L - 1, c]`` normalised ColBERT vectors, zero at padding, or ``None``.
        colbert_mask: ``[n, L - 1]`` 1 for real tokens (``<s>`` excluded), or ``None``.
    """

    dense: torch.Tensor | None = None
    sparse: torch.Tensor | None = None
    colbert: torch.Tensor | None = None
    colbert_mask: torch.Tensor | None = None


@dataclass
class LossOutput:
    """The total loss and each of its parts (unweighted), for logging.

    Attributes:
        loss: The scalar to minimise.
        parts: ``"dense"``, ``"sparse"``, ``"colbert"``, ``"ensemble"`` and, with
            self-distillation, ``"distill_dense"`` etc.: each term before weighting.
    """

    loss: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)


def _colbert_scores(q: torch.Tensor, q_mask: torch.Tensor, p: torch.Tensor,
                    chunk: int = 64) -> torch.Tensor:
    """``[m, n]`` MaxSim as FlagEmbedding trains it.

    The mean over real query tokens of the best dot product over the passage's rows, the
    zero rows at padding included.

    Passages are taken ``chunk`` at a time so that the ``[m, Lq, chunk, Lp]`` products
    never all exist at once.
    """
    parts = []
    for start in range(0, p.shape[0], chunk):
        token_scores = torch.einsum("qin,pjn->qipj", q, p[start : start + chunk])
        parts.append(token_scores.max(-1).values.sum(1))
    return torch.cat(parts, dim=1) / q_mask.sum(-1, keepdim=True)


def _local(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """Each query's scores of its own group: ``[b, b * g]`` -> ``[b, g]``."""
    b = scores.shape[0]
    columns = torch.arange(b, device=scores.device)[:, None] * group_size + torch.arange(
        group_size, device=scores.device)
    return scores.gather(1, columns)


def _kl_div(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    return -torch.mean(torch.sum(torch.log_softmax(student, dim=-1) * teacher, dim=-1))


def _m3_kd(teacher: torch.Tensor, scores: torch.Tensor, first: torch.Tensor,
           group_size: int) -> torch.Tensor:
    """FlagEmbedding's ``m3_kd_loss``: a teacher-weighted InfoNCE per group member.

    Each member's term masks out the members before it; ``first`` holds each query's
    column of its positive.
    """
    labels = first
    loss = scores.new_zeros(())
    mask = torch.zeros_like(scores)
    for i in range(group_size):
        target = labels + i
        per_query = F.cross_entropy(scores + mask, target, reduction="none")
        loss = loss + torch.mean(teacher[:, i] * per_query)
        mask = torch.scatter(mask, -1, target[:, None], torch.finfo(scores.dtype).min)
    return loss


def _infonce(scores: torch.Tensor, group_size: int, in_batch: bool,
             teacher: torch.Tensor | None, kd_loss: str) -> torch.Tensor:
    """One head's loss from its scores (``[b, b * g]`` in-batch, ``[b, g]`` group-only)."""
    b = scores.shape[0]
    targets = (torch.arange(b, device=scores.device) * group_size if in_batch
               else torch.zeros(b, dtype=torch.long, device=scores.device))
    if teacher is None:
        return F.cross_entropy(scores, targets)
    if kd_loss == "kl_div":
        local = _local(scores, group_size) if in_batch else scores
        return _kl_div(teacher, local) + F.cross_entropy(scores, targets)
    return _m3_kd(teacher, scores, targets, group_size)


def m3_loss(
    queries: Representations,
    passages: Representations,
    *,
    group_size: int,
    temperature: float = 0.02,
    heads: Sequence[str] = HEADS,
    self_distill: bool = True,
    teacher_scores: torch.Tensor | None = None,
    kd_loss: str = "kl_div",
    in_batch_negatives: bool = True,
) -> LossOutput:
    """BGE-M3's training loss for ``b`` queries and their groups of ``g`` passages.

    Args:
        queries: Representations of the ``b`` queries.
        passages: Representations of the ``b * g`` passages, group by group (each group's
            positive first).
        group_size: ``g``.
        temperature: Every score is divided by it (FlagEmbedding: 0.02).
        heads: The heads trained: any non-empty subset of ``("dense", "sparse", "colbert")``.
        self_distill: Add self-knowledge distillation from the ensemble (needs 2+ heads).
        teacher_scores: ``[b, g]`` teacher scores of each group (from the data's
            ``pos_scores`` / ``neg_scores``), or ``None``.
        kd_loss: How teacher scores are used: ``"kl_div"`` (FlagEmbedding's default) or
            ``"m3_kd_loss"``.
        in_batch_negatives: Score each query against every passage of the batch (``True``)
            or only its own group.

    Returns:
        The total loss and its parts.

    Raises:
        ValueError: Unknown heads or ``kd_loss``, a missing representation, or shapes that
            do not match ``group_size``.

    Example:
        >>> q = Representations(dense=F.normalize(torch.randn(2, 8), dim=-1))
        >>> p = Representations(dense=F.normalize(torch.randn(4, 8), dim=-1))
        >>> out = m3_loss(q, p, group_size=2, heads=["dense"])
        >>> sorted(out.parts), out.loss.shape
        (['dense'], torch.Size([]))
    """
    active = [h for h in HEADS if h in heads]
    if not active or len(active) != len(set(heads)):
        raise ValueError(f"heads must be a non-empty subset of {HEADS}, got {list(heads)}")
    if kd_loss not in ("kl_div", "m3_kd_loss"):
        raise ValueError(f"kd_loss must be 'kl_div' or 'm3_kd_loss', got {kd_loss!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    teacher = None
    if teacher_scores is not None:
        teacher = F.softmax(teacher_scores.detach().to(torch.float32).view(-1, group_size), -1)

    scores: dict[str, torch.Tensor] = {}
    for head in active:
        q, p = getattr(queries, head), getattr(passages, head)
        if q is None or p is None:
            raise ValueError(f"the {head} head is trained but its representations are missing")
        b = q.shape[0]
        if p.shape[0] != b * group_size:
            raise ValueError(f"expected {b} x {group_size} passages, got {p.shape[0]}")
        if not in_batch_negatives:  # each query against its own group only
            p = p.view(b, group_size, *p.shape[1:])
        if head == "colbert":
            if queries.colbert_mask is None:
                raise ValueError("ColBERT needs the queries' colbert_mask")
            if in_batch_negatives:
                s = _colbert_scores(q, queries.colbert_mask, p)
            else:
                s = torch.stack([_colbert_scores(q[i : i + 1], queries.colbert_mask[i : i + 1],
                                                 p[i])[0] for i in range(b)])
        elif in_batch_negatives:
            s = q @ p.T
        else:
            s = torch.einsum("bd,bgd->bg", q, p)
        scores[head] = s / temperature

    parts = {head: _infonce(scores[head], group_size, in_batch_negatives, teacher, kd_loss)
             for head in active}
    terms = [HEAD_WEIGHTS[h] * parts[h] for h in active]
    ensemble = None
    if len(active) > 1:
        ensemble = ENSEMBLE_WEIGHTS[active[0]] * scores[active[0]]
        for head in active[1:]:
            ensemble = ensemble + ENSEMBLE_WEIGHTS[head] * scores[head]
        parts["ensemble"] = _infonce(ensemble, group_size, in_batch_negatives, teacher, kd_loss)
        terms.insert(1, parts["ensemble"])
    loss = terms[0]
    for term in terms[1:]:
        loss = loss + term
    loss = loss / len(terms)
    if self_distill and ensemble is not None:
        target = torch.softmax(ensemble.detach(), dim=-1)
        for head in active:
            parts[f"distill_{head}"] = _kl_div(target, scores[head])
        distill = torch.stack([HEAD_WEIGHTS[h] * parts[f"distill_{h}"] for h in active])
        loss = (loss + distill.sum() / len(active)) / 2
    return LossOutput(loss=loss, parts={k: v.detach() for k, v in parts.items()})
