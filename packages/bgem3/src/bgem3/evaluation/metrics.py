"""Retrieval metrics with trec_eval's definitions, vectorized over queries and fusion grids.

The definitions are those of trec_eval 9 as ``pytrec_eval`` computes them (the evaluator
behind BEIR, MTEB and FlagEmbedding's scripts); the tests compare against it.

- **Order.** A run ranks its documents by score, highest first; equal scores are ordered by
  document id, *descending* (trec_eval's rule: the ranks a run file states are ignored).
- **Grades.** A document's gain is its judged grade; unjudged documents and negative grades
  gain 0. A document is *relevant* when its grade is at least 1.
- **nDCG@k** (``ndcg_cut_k``): ``sum_{i<=k} gain_i / log2(i + 1)`` divided by the same sum
  over the query's judged gains sorted best first (judged documents missing from the corpus
  included); 0 for a query without a positive grade.
- **Recall@k** (``recall_k``): relevant documents in the top k over all relevant documents
  judged for the query; 0 for a query without any.
- **MRR@k**: ``1 / rank`` of the first relevant document within the top k, else 0 (trec_eval's
  ``recip_rank`` of the run cut at k).
- **Averages** run over every judged query, including those for which the run retrieved
  nothing (they score 0, as with ``trec_eval -c``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["GRADE_MAX", "GRADE_MIN", "Judgments", "evaluate_run", "mrr", "ndcg", "order_run",
           "recall"]

GRADE_MIN, GRADE_MAX = -(2**63), 2**63 - 1
"""The range of the grades judgments hold, 64-bit integers (trec_eval's are C longs)."""


def order_run(scores: NDArray[np.floating], tiebreak: NDArray[np.integer]) -> NDArray[np.int64]:
    """Positions of each run's documents in trec_eval's order, along the last axis.

    Args:
        scores: ``[..., p]`` scores; ``-inf`` marks an empty slot (it sorts last).
        tiebreak: ``[..., p]`` rank of each document id in ascending id order, so that a
            larger value means a larger id.

    Returns:
        ``int64 [..., p]`` positions, best first: score descending, then id descending.

    Example:
        >>> order_run(np.array([[0.5, 0.9, 0.5]]), np.array([[0, 1, 2]])).tolist()
        [[1, 2, 0]]
    """
    by_id = np.argsort(-np.asarray(tiebreak), axis=-1, kind="stable")
    by_score = np.argsort(-np.take_along_axis(np.asarray(scores), by_id, axis=-1), axis=-1,
                          kind="stable")
    return np.take_along_axis(by_id, by_score, axis=-1).astype(np.int64, copy=False)


def _discounts(k: int) -> NDArray[np.float64]:
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def ndcg(grades: NDArray[np.integer], ideal: NDArray[np.integer], k: int) -> NDArray[np.float64]:
    """nDCG@k of ranked grades.

    Args:
        grades: ``[..., d]`` judged grades of each run's documents in rank order (0 for
            unjudged documents and empty slots).
        ideal: ``[..., m]`` the query's judged grades sorted best first (zero padded).
        k: Cut-off.

    Returns:
        ``float64 [...]``.

    Example:
        >>> ndcg(np.array([[0, 2, 1]]), np.array([[2, 1, 1]]), 10).round(4).tolist()
        [0.5627]
    """
    gains = np.maximum(np.asarray(grades)[..., :k], 0).astype(np.float64)
    best = np.maximum(np.asarray(ideal)[..., :k], 0).astype(np.float64)
    dcg = gains @ _discounts(gains.shape[-1])
    idcg = best @ _discounts(best.shape[-1])
    return np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0)


def recall(grades: NDArray[np.integer], n_relevant: NDArray[np.integer],
           k: int) -> NDArray[np.float64]:
    """Recall@k: relevant documents in the top ``k`` over ``n_relevant``.

    Example:
        >>> recall(np.array([[1, 0, 2]]), np.array([4]), 2).tolist()
        [0.25]
    """
    found: NDArray[np.float64] = (np.asarray(grades)[..., :k] >= 1).sum(axis=-1).astype(
        np.float64)
    total = np.asarray(n_relevant, dtype=np.float64)
    return np.divide(found, total, out=np.zeros_like(found), where=total > 0)


def mrr(grades: NDArray[np.integer], k: int) -> NDArray[np.float64]:
    """Reciprocal rank of the first relevant document within the top ``k`` (else 0).

    Example:
        >>> mrr(np.array([[0, 0, 1], [0, 0, 0]]), 10).round(4).tolist()
        [0.3333, 0.0]
    """
    hits = np.asarray(grades)[..., :k] >= 1
    first = hits.argmax(axis=-1)
    return np.where(hits.any(axis=-1), 1.0 / (first + 1.0), 0.0)


@dataclass(frozen=True)
class Judgments:
    """Relevance judgments of ``q`` queries over a corpus of ``n`` documents, as arrays.

    Attributes:
        n_docs: Corpus size; document ``j`` is row ``j`` of the corpus.
        keys: Sorted ``query * n_docs + document`` of every judged corpus document.
        grades: The grade of each key.
        ideal: ``int64 [q, m]`` each query's judged grades, best first, zero padded
            (documents outside the corpus included).
        n_relevant: ``int64 [q]`` judged documents with grade >= 1 per query.
    """

    n_docs: int
    keys: NDArray[np.int64]
    grades: NDArray[np.int64]
    ideal: NDArray[np.int64]
    n_relevant: NDArray[np.int64]

    @classmethod
    def build(cls, qrels: Mapping[str, Mapping[str, int]], query_ids: Sequence[str],
              doc_row: Mapping[str, int]) -> Judgments:
        """Arrays for ``query_ids`` (in that order) from ``{query: {doc: grade}}``.

        Args:
            qrels: Judgments; documents not in ``doc_row`` still count in the ideal
                ranking and in ``n_relevant``.
            query_ids: The queries, row order of everything computed from this.
            doc_row: Corpus row of each document id.

        Raises:
            ValueError: A grade that is not a number, or out of the 64-bit range
                (:data:`GRADE_MIN` to :data:`GRADE_MAX`).
        """
        n_docs = len(doc_row)
        keys: list[int] = []
        grades: list[int] = []
        for q in query_ids:
            for doc, grade in qrels.get(q, {}).items():
                _check_grade(grade, q, doc)
        per_query = [sorted(qrels.get(q, {}).values(), reverse=True) for q in query_ids]
        width = max((len(g) for g in per_query), default=0)
        ideal = np.zeros((len(query_ids), max(width, 1)), dtype=np.int64)
        for i, q in enumerate(query_ids):
            judged = qrels.get(q, {})
            ideal[i, : len(per_query[i])] = per_query[i]
            for doc, grade in judged.items():
                row = doc_row.get(doc)
                if row is not None:
                    keys.append(i * n_docs + row)
                    grades.append(int(grade))
        key_array = np.asarray(keys, dtype=np.int64)
        order = np.argsort(key_array, kind="stable")
        return cls(n_docs=n_docs, keys=key_array[order],
                   grades=np.asarray(grades, dtype=np.int64)[order], ideal=ideal,
                   n_relevant=(ideal >= 1).sum(axis=1).astype(np.int64))

    def lookup(self, queries: NDArray[np.integer], docs: NDArray[np.integer]) -> NDArray[np.int64]:
        """Grades of ``(query row, corpus row)`` pairs (broadcast); 0 if unjudged or ``doc < 0``."""
        q, d = np.broadcast_arrays(np.asarray(queries, np.int64), np.asarray(docs, np.int64))
        wanted = q * self.n_docs + d
        out = np.zeros(wanted.shape, dtype=np.int64)
        if self.keys.size == 0:
            return out
        at = np.minimum(np.searchsorted(self.keys, wanted), self.keys.size - 1)
        found = (self.keys[at] == wanted) & (d >= 0)
        out[found] = self.grades[at[found]]
        return out

    def measure(self, queries: NDArray[np.integer], ranked_docs: NDArray[np.integer],
                k: int, recall_at: int) -> dict[str, NDArray[np.float64]]:
        """nDCG@k, Recall@recall_at and MRR@k of ranked runs.

        Args:
            queries: ``[r]`` query row of each run.
            ranked_docs: ``[r, d]`` corpus rows in rank order (``-1`` for empty slots).
            k: Cut-off of nDCG and MRR.
            recall_at: Cut-off of recall.

        Returns:
            ``{"ndcg@k": [r], "recall@recall_at": [r], "mrr@k": [r]}``.
        """
        rows = np.asarray(queries, np.int64)
        grades = self.lookup(rows[:, None], ranked_docs[:, : max(k, recall_at)])
        return {f"ndcg@{k}": ndcg(grades, self.ideal[rows], k),
                f"recall@{recall_at}": recall(grades, self.n_relevant[rows], recall_at),
                f"mrr@{k}": mrr(grades, k)}


def _check_grade(grade: object, query: str, doc: str) -> None:
    try:
        value = int(grade)  # type: ignore[call-overload]  # whatever int() takes, as before
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"the grade of query {query!r} and document {doc!r} must be an "
                         f"integer, got {grade!r}") from exc
    if not GRADE_MIN <= value <= GRADE_MAX:
        raise ValueError(f"the grade of query {query!r} and document {doc!r} is out of range: "
                         f"grades are 64-bit integers, got {grade!r}")


def evaluate_run(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]],
                 k: int = 10, recall_at: int = 100) -> dict[str, dict[str, float]]:
    """Per-query metrics of a run, like ``pytrec_eval.RelevanceEvaluator(...).evaluate``.

    Args:
        run: ``{query_id: {doc_id: score}}``.
        qrels: ``{query_id: {doc_id: grade}}``; every query here is evaluated.
        k: Cut-off of nDCG and MRR.
        recall_at: Cut-off of recall.

    Returns:
        ``{query_id: {"ndcg@k": ..., "recall@recall_at": ..., "mrr@k": ...}}`` for every
        judged query (0 for queries the run does not rank).

    Raises:
        ValueError: A grade that is not a number or does not fit 64 bits.

    Example:
        >>> evaluate_run({"q": {"a": 0.2, "b": 0.9}}, {"q": {"a": 1}}, k=1)["q"]
        {'ndcg@1': 0.0, 'recall@100': 1.0, 'mrr@1': 0.0}
    """
    query_ids = sorted(qrels)
    doc_ids = sorted({d for q in query_ids for d in run.get(q, {})} |
                     {d for q in query_ids for d in qrels[q]})
    doc_row = {d: i for i, d in enumerate(doc_ids)}  # sorted: row order is id order
    judgments = Judgments.build(qrels, query_ids, doc_row)
    width = max((len(run.get(q, {})) for q in query_ids), default=0)
    scores = np.full((len(query_ids), max(width, 1)), -np.inf)
    docs = np.full(scores.shape, -1, dtype=np.int64)
    for i, q in enumerate(query_ids):
        items = run.get(q, {})
        docs[i, : len(items)] = [doc_row[d] for d in items]
        scores[i, : len(items)] = [float(s) for s in items.values()]
    order = order_run(scores, docs)
    ranked = np.take_along_axis(docs, order, axis=1)
    values = judgments.measure(np.arange(len(query_ids)), ranked, k, recall_at)
    return {q: {name: float(v[i]) for name, v in values.items()} for i, q in
            enumerate(query_ids)}
