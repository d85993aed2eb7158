"""Runs: the documents each query ranks with their scores, and the metrics of runs.

A run is ``(corpus rows, scores [p, g])``: the ``p`` documents one query ranks, scored
under ``g`` scorings at once (one for a row of the report, one per grid point when
tuning). Metrics order each run as trec_eval does (score descending, then document id
descending), so a run need not be sorted. Runs come from the index's candidate pools
(what a search fuses) or from exhaustive dense and ColBERT search over the corpus, both
computed by the kernels the index itself runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from bgem3._kernels import dense_top, maxsim_all, top
from bgem3.evaluation.data import BeirData
from bgem3.evaluation.metrics import Judgments, order_run
from bgem3.index.pool import CandidatePool
from bgem3.index.state import Snapshot

__all__ = [
    "QUERY_BLOCK",
    "Run",
    "RunScorer",
    "colbert_runs",
    "dense_runs",
    "measure_runs",
    "pool_run",
]

Run = tuple[NDArray[np.int64], NDArray[np.float64]]
"""``(corpus rows [p], scores [p, g])`` of one query."""

QUERY_BLOCK = 256
"""Queries scored and measured together (bounds the padded ``[q, g, p]`` score arrays)."""


class RunScorer:
    """Turns scored candidates into metrics with trec_eval's ordering.

    Args:
        data: The dataset: its corpus ids give the tie-break order, its qrels the grades.
        query_ids: The judged queries, in the order runs are given.
        k: Cut-off of nDCG and MRR.
        recall_at: Cut-off of recall.

    Attributes:
        doc_row: Corpus id to corpus row.
    """

    def __init__(self, data: BeirData, query_ids: Sequence[str], k: int, recall_at: int) -> None:
        self.doc_row = {d: i for i, d in enumerate(data.corpus_ids)}
        tiebreak = np.empty(len(data.corpus_ids), dtype=np.int64)
        tiebreak[np.argsort(np.asarray(data.corpus_ids, dtype=object), kind="stable")] = \
            np.arange(len(data.corpus_ids))
        self.tiebreak = tiebreak
        self.judgments = Judgments.build(data.qrels, query_ids, self.doc_row)
        self.k, self.recall_at = k, recall_at

    def measure(self, queries: NDArray[np.int64], docs: NDArray[np.int64],
                scores: NDArray[np.float64]) -> dict[str, NDArray[np.float64]]:
        """Metrics of ``scores [q, g, p]`` over ``docs [q, p]``, flattened to ``[q * g]``.

        ``queries`` are positions in ``query_ids``; a document row of ``-1`` or a score
        of ``-inf`` is an empty slot.
        """
        grid = scores.shape[1]
        docs_g = np.repeat(docs[:, None, :], grid, axis=1).reshape(-1, docs.shape[1])
        flat = scores.reshape(-1, scores.shape[2])
        tie = np.where(docs_g >= 0, self.tiebreak[np.maximum(docs_g, 0)], -1)
        order = order_run(flat, tie)
        ranked = np.take_along_axis(docs_g, order, axis=1)
        ranked[np.take_along_axis(flat, order, axis=1) == -np.inf] = -1
        return self.judgments.measure(np.repeat(queries, grid), ranked, self.k, self.recall_at)


def measure_runs(scorer: RunScorer, runs: Sequence[Run]) -> dict[str, NDArray[np.float64]]:
    """Per-query metrics of runs (one per query of ``scorer``, in order).

    Returns:
        ``{metric: [q]}`` for runs of one scoring, ``{metric: [q, g]}`` for ``g`` scorings.

    Raises:
        ValueError: No runs.
    """
    if not runs:
        raise ValueError("no queries to evaluate")
    grid = runs[0][1].shape[1]
    parts: list[dict[str, NDArray[np.float64]]] = []
    for start in range(0, len(runs), QUERY_BLOCK):
        block = runs[start : start + QUERY_BLOCK]
        docs, scores = _padded(block)
        parts.append(scorer.measure(np.arange(start, start + len(block)), docs, scores))
    out = {name: np.concatenate([p[name] for p in parts]).reshape(len(runs), grid)
           for name in parts[0]}
    return {name: v[:, 0] if grid == 1 else v for name, v in out.items()}


def _padded(runs: Sequence[Run]) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Ragged ``(docs, scores[..., g])`` per query -> ``docs [q, p]``, ``scores [q, g, p]``."""
    width = max((d.size for d, _ in runs), default=0) or 1
    grid = runs[0][1].shape[1]
    docs = np.full((len(runs), width), -1, dtype=np.int64)
    scores = np.full((len(runs), grid, width), -np.inf)
    for i, (d, s) in enumerate(runs):
        docs[i, : d.size] = d
        scores[i, :, : d.size] = s.reshape(d.size, grid).T
    return docs, scores


def pool_run(to_corpus: NDArray[np.int64], pool: CandidatePool,
             scores: NDArray[np.floating]) -> Run:
    """A candidate pool's corpus rows with ``scores [p]`` (or ``[p, g]``) as one run.

    Args:
        to_corpus: Index storage row to corpus row.
        pool: The pool of one query.
        scores: Its scores under one scoring (``[p]``) or a grid of them (``[p, g]``).
    """
    values = np.asarray(scores, dtype=np.float64)
    return to_corpus[pool.rows], values[:, None] if values.ndim == 1 else values


def dense_runs(corpus: NDArray[np.float32], queries: NDArray[np.float32], depth: int
               ) -> list[Run]:
    """Exact dense top ``depth`` of the whole corpus per query (``bgem3._kernels.dense_top``).

    Args:
        corpus: ``[n, d]`` dense vectors of the corpus, in corpus row order.
        queries: ``[q, d]`` dense vectors of the queries.
        depth: Documents kept per query.
    """
    return [(rows, scores.astype(np.float64)[:, None])
            for rows, scores in dense_top(corpus, queries, depth, most_queries=QUERY_BLOCK)]


def colbert_runs(snap: Snapshot, to_corpus: NDArray[np.int64],
                 queries: Sequence[NDArray[np.float32]], depth: int,
                 chunk_vectors: int = 1 << 18) -> list[Run]:
    """MaxSim of every query against every live document, top ``depth`` kept.

    Args:
        snap: The index's snapshot (its ColBERT vectors and offsets).
        to_corpus: Index storage row to corpus row.
        queries: ``[t_q, c]`` ColBERT vectors of each query.
        depth: Documents kept per query.
        chunk_vectors: Document vectors widened at once (bounds the memory).

    Raises:
        ValueError: The index stores no ColBERT vectors.
    """
    offsets = snap.colbert_offsets
    colbert = snap.colbert
    if offsets is None or colbert is None:
        raise ValueError("the index stores no ColBERT vectors")
    alive = np.flatnonzero(snap.alive)
    runs: list[Run] = []
    for query in queries:
        scores = maxsim_all(query, colbert, offsets, alive, chunk_vectors)
        best = top(scores, depth)
        runs.append((to_corpus[alive[best]], scores[best].astype(np.float64)[:, None]))
    return runs
