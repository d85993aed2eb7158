"""Hard-negative mining: retrieve for each training query, sample negatives from a rank range.

FlagEmbedding's ``hn_mine.py`` recipe (dense retrieval over every passage of the file,
negatives drawn from ranks 10 to 210, 15 of them), with two fixes: positives are never
negatives, and teacher scores that no longer match the negatives are dropped (with a
warning) instead of kept. Hybrid retrieval (dense + sparse, the embedded index) is an option.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bgem3._inputs import positive_int
from bgem3._jsonl import read_jsonl
from bgem3._kernels import dense_top
from bgem3._types import Encoder
from bgem3.errors import DatasetError
from bgem3.index.options import DEFAULT_SEARCH
from bgem3.train.data import parse_example, read_training_rows

__all__ = ["MiningReport", "mine_negatives"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MiningReport:
    """What :func:`mine_negatives` did.

    Attributes:
        output: The file written.
        queries: Lines written.
        corpus: Passages searched.
        negatives: Mean negatives per query.
        short: Queries that got fewer than ``num`` negatives (too few candidates in range).
        dropped_scores: Lines whose stale teacher scores were removed.
    """

    output: Path
    queries: int
    corpus: int
    negatives: float
    short: int
    dropped_scores: int


def mine_negatives(
    train_data: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    model: Encoder,
    output: str | os.PathLike[str],
    *,
    rank_range: tuple[int, int] = (10, 210),
    num: int = 15,
    mode: str = "dense",
    candidate_pool: str | os.PathLike[str] | None = None,
    query_instruction: str | None = None,
    seed: int = 0,
    batch_size: int = 256,
    show_progress: bool | None = None,
) -> MiningReport:
    """Write the training data with hard negatives drawn from retrieval ranks.

    Args:
        train_data: FlagEmbedding-format JSONL (files or directories).
        model: A :class:`~bgem3.BGEM3` or another encoder (a dense-only one mines with
            ``mode="dense"``).
        output: The JSONL to write (atomically; other fields of each line are kept).
        rank_range: ``(start, end)``: negatives come from ranks ``start`` to ``end - 1``
            (0 = best) of each query's retrieval, positives skipped.
        num: Negatives per query (fewer when the range holds fewer candidates).
        mode: ``"dense"`` (exact dense search) or ``"hybrid"`` (dense + sparse candidates,
            weighted fusion, as ``HybridIndex.search`` with the default
            :class:`~bgem3.index.SearchOptions`).
        candidate_pool: A JSONL file with a ``text`` per line to search instead of every
            passage of the training data.
        query_instruction: Prepended to queries without their own ``prompt``.
        seed: Seed of the sampling.
        batch_size: Encoding batch size.
        show_progress: Progress bars (``None``: for large inputs).

    Returns:
        A :class:`MiningReport`.

    Raises:
        DatasetError: Malformed training data or candidate pool (named ``file:line``).
        ValueError: A bad range, ``num`` or ``mode``.
    """
    start, end = rank_range
    if not 0 <= start < end:
        raise ValueError(f"rank_range must be (start, end) with 0 <= start < end, got {rank_range}")
    positive_int(num, "num")
    if mode not in ("dense", "hybrid"):
        raise ValueError(f"mode must be 'dense' or 'hybrid', got {mode!r}")
    if mode == "hybrid" and not model.has_heads:
        raise ValueError("hybrid mining needs a model with sparse and ColBERT heads; use "
                         "mode='dense'")
    items = [train_data] if isinstance(train_data, (str, os.PathLike)) else list(train_data)
    rows = list(read_training_rows(items))
    examples = [parse_example(row, where, query_instruction) for where, row in rows]
    if candidate_pool is not None:
        pool_texts = []
        for number, row in read_jsonl(candidate_pool):
            if not isinstance(row.get("text"), str):
                raise DatasetError(f"{candidate_pool}:{number}: each line needs a 'text' string")
            pool_texts.append(row["text"])
        corpus = sorted(set(pool_texts))
    else:
        corpus = sorted({t for e in examples for t in (*e.pos, *e.neg)})
    ranked = _retrieve(model, [e.query for e in examples], corpus, end, mode, batch_size,
                       show_progress)
    rng = np.random.default_rng(seed)
    short = dropped = 0
    counts = []
    lines = []
    for (_, row), example, found in zip(rows, examples, ranked, strict=True):
        skip = set(example.pos) | {example.query}
        window = [corpus[i] for i in found[start:end] if corpus[i] not in skip]
        picked = ([window[i] for i in sorted(rng.choice(len(window), num, replace=False))]
                  if len(window) > num else window)
        short += len(picked) < num
        counts.append(len(picked))
        out = dict(row)
        out["neg"] = picked
        if "pos_scores" in out or "neg_scores" in out:
            out.pop("pos_scores", None)
            out.pop("neg_scores", None)
            dropped += 1
        lines.append(json.dumps(out, ensure_ascii=False))
    if dropped:
        warnings.warn(f"removed the teacher scores (pos_scores, neg_scores) of {dropped} "
                      "lines: they scored the old negatives, not the mined ones", UserWarning,
                      stacklevel=2)
    target = Path(output)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=target.parent, delete=False,
                                     prefix=f".{target.name}.", suffix=".tmp") as handle:
        handle.write("\n".join(lines) + "\n")
    os.replace(handle.name, target)
    return MiningReport(output=target, queries=len(lines), corpus=len(corpus),
                        negatives=float(np.mean(counts)) if counts else 0.0, short=short,
                        dropped_scores=dropped)


def _retrieve(model: Encoder, queries: list[str], corpus: list[str], depth: int, mode: str,
              batch_size: int, show_progress: bool | None) -> list[list[int]]:
    """Each query's top ``depth`` corpus rows, best first."""
    if mode == "hybrid":
        from bgem3.index import HybridIndex

        index = HybridIndex(model, store_colbert=False)
        ids = [str(i) for i in range(len(corpus))]
        index.add(corpus, ids=ids, batch_size=batch_size, show_progress=show_progress)
        encoded = model.encode_queries(queries, dense=True, sparse=True, batch_size=batch_size,
                                       show_progress=show_progress)
        options = DEFAULT_SEARCH.replace(k=depth, candidates=depth)
        hits = index.search_encoded(encoded, **options.as_kwargs())
        return [[int(h.id) for h in found] for found in hits]
    docs = model.encode_documents(corpus, dense=True, batch_size=batch_size,
                                  show_progress=show_progress).dense
    q = model.encode_queries(queries, dense=True, batch_size=batch_size,
                             show_progress=show_progress).dense
    if docs is None or q is None:
        raise ValueError("the model returned no dense vectors")
    return [rows.tolist() for rows, _ in dense_top(docs, q, depth)]
