"""Scoring for BGE-M3's three representations, and their fusion: pure numpy functions.

Shapes use ``m`` queries, ``n`` documents, ``d`` dimensions and ``t`` tokens. Nothing
here loops over documents or tokens in Python: sparse scores are one sparse matrix
product, ColBERT MaxSim over many documents is one matrix product and one segmented max.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from bgem3._types import EncodeOutput, SparseVector, sparse_to_csr

__all__ = [
    "colbert_scores",
    "dense_scores",
    "fuse_scores",
    "lexical_matching_score",
    "maxsim",
    "packed_colbert_scores",
    "pair_scores",
    "paired_dense_sparse_scores",
    "rrf_fuse",
    "sparse_scores",
    "weighted_fuse",
]

Weights = tuple[float, float, float]

SCORE_MODES = ("dense", "sparse", "colbert", "sparse+dense", "colbert+sparse+dense")
"""FlagEmbedding's ``compute_score`` modes."""
RRF_K = 60
"""The constant of reciprocal rank fusion, as in the RRF paper (the search default too)."""


def dense_scores(
    queries: NDArray[np.floating], documents: NDArray[np.floating]
) -> NDArray[np.float32]:
    """Dot products of dense vectors (cosine similarity for normalised vectors).

    Args:
        queries: ``[m, d]``.
        documents: ``[n, d]``.

    Returns:
        ``float32 [m, n]`` scores.

    Example:
        >>> dense_scores(np.eye(2), np.array([[1.0, 0.0], [0.6, 0.8]])).tolist()
        [[1.0, 0.6000000238418579], [0.0, 0.800000011920929]]
    """
    q = np.asarray(queries, dtype=np.float32)
    d = np.asarray(documents, dtype=np.float32)
    if q.ndim != 2 or d.ndim != 2 or q.shape[1] != d.shape[1]:
        raise ValueError(f"expected [m, d] and [n, d] arrays, got shapes {q.shape} and {d.shape}")
    return np.asarray(q @ d.T, dtype=np.float32)


def lexical_matching_score(query: SparseVector, document: SparseVector) -> float:
    """Sum over the token ids both vectors hold of ``w_query * w_document``.

    Args:
        query: Lexical weights of the query.
        document: Lexical weights of the document.

    Returns:
        The score (0.0 when no token is shared).

    Raises:
        TypeError: An argument that is not a :class:`SparseVector`, such as FlagEmbedding's
            ``{"token_id": weight}`` dict: convert it with :meth:`SparseVector.from_dict`
            (string keys of digits are read as ids). Dicts are refused rather than guessed
            at: keys are ``int`` ids everywhere in bgem3, and ``{5: w}`` and ``{"5": w}``
            would otherwise both look plausible.

    Example:
        >>> q = SparseVector.from_dict({5: 0.5, 9: 1.0})
        >>> lexical_matching_score(q, SparseVector.from_dict({9: 0.25, 11: 3.0}))
        0.25
    """
    _check_sparse(query, "query")
    _check_sparse(document, "document")
    _, qi, di = np.intersect1d(query.indices, document.indices, assume_unique=True,
                               return_indices=True)
    return float(np.dot(query.values[qi].astype(np.float64), document.values[di]))


def sparse_scores(
    queries: Sequence[SparseVector], documents: Sequence[SparseVector]
) -> NDArray[np.float32]:
    """Lexical matching scores of every query against every document.

    One sparse product of two CSR matrices; no Python loop over documents.

    Args:
        queries: ``m`` sparse vectors.
        documents: ``n`` sparse vectors.

    Returns:
        ``float32 [m, n]`` scores.

    Raises:
        TypeError: An item that is not a :class:`SparseVector` (see
            :func:`lexical_matching_score`).

    Example:
        >>> q = [SparseVector.from_dict({1: 2.0})]
        >>> d = [SparseVector.from_dict({1: 0.5, 2: 1.0}), SparseVector.from_dict({3: 1.0})]
        >>> sparse_scores(q, d).tolist()
        [[1.0, 0.0]]
    """
    for name, vectors in (("queries", queries), ("documents", documents)):
        if isinstance(vectors, (SparseVector, Mapping)):
            raise TypeError(f"{name} must be a list of SparseVector, got one "
                            f"{type(vectors).__name__} (wrap it in a list)")
        for i, vector in enumerate(vectors):
            _check_sparse(vector, f"{name}[{i}]")
    vocab = 1 + max(
        (int(v.indices[-1]) for v in (*queries, *documents) if len(v)), default=0
    )
    product = sparse_to_csr(queries, vocab) @ sparse_to_csr(documents, vocab).T
    return np.asarray(product.toarray(), dtype=np.float32)


def maxsim(query: NDArray[np.floating], document: NDArray[np.floating]) -> float:
    """ColBERT late interaction: mean over query vectors of their best dot product.

    Args:
        query: ``[t_q, d]`` query token vectors (``t_q >= 1``).
        document: ``[t_d, d]`` document token vectors (``t_d >= 1``).

    Returns:
        The score.

    Raises:
        ValueError: As :func:`colbert_scores`.

    Example:
        >>> maxsim(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 0.0], [0.0, -1.0]]))
        0.5
    """
    return float(colbert_scores(query, [document])[0])


def colbert_scores(
    query: NDArray[np.floating], documents: Sequence[NDArray[np.floating]]
) -> NDArray[np.float32]:
    """MaxSim of one query against many documents of different lengths.

    The documents are packed into one ``[sum t_i, d]`` matrix (or passed packed as a
    ``(vectors, offsets)`` pair by callers that store them so); one product gives every
    token similarity and a segmented max (``np.maximum.reduceat``) gives each document's
    best match per query token. No padding, so no mask is needed.

    Args:
        query: ``[t_q, d]`` query token vectors, ``t_q >= 1``.
        documents: ``n`` arrays ``[t_i, d]``, each with ``t_i >= 1`` (a list, not one
            array: a 3-d ``[n, t, d]`` array is refused, since its rows would count padding
            as tokens; ``list(array)`` when every row is all real tokens).

    Returns:
        ``float32 [n]`` scores: ``mean_q max_j <query[q], document[j]>``.

    Raises:
        ValueError: A query or document without vectors, arrays that are not ``[t, d]``,
            documents given as one array, or mismatched widths.

    Example:
        >>> q = np.array([[1.0, 0.0], [0.0, 1.0]])
        >>> docs = [np.array([[1.0, 0.0]]), np.array([[0.6, 0.8], [0.0, 1.0]])]
        >>> colbert_scores(q, docs).round(3).tolist()
        [0.5, 0.8]
    """
    query = np.asarray(query)
    if query.ndim != 2:
        raise ValueError(f"query must be one text's ColBERT vectors [t_q, d], got shape "
                         f"{query.shape} (score several queries one at a time)")
    _check_query(query)
    if isinstance(documents, np.ndarray):
        if documents.ndim == 2:
            raise ValueError("documents must be a list of [t_i, d] arrays, got one 2-d array "
                             "(wrap it in a list for a single document)")
        if documents.ndim == 3:
            raise ValueError(
                f"documents must be a list of [t_i, d] arrays, got one 3-d array of shape "
                f"{documents.shape}: pass list(documents) if each of its {documents.shape[0]} "
                "rows holds one document's vectors and no padding (padding would count as "
                "tokens)")
        if documents.dtype != object or documents.ndim != 1:
            raise ValueError(f"documents must be a list of [t_i, d] arrays, got an array of "
                             f"shape {documents.shape}")
        documents = list(documents)
    if len(documents) == 0:
        return np.zeros(0, dtype=np.float32)
    for i, doc in enumerate(documents):
        if np.ndim(doc) != 2:
            raise ValueError(f"each document must be a [t_i, d] array of ColBERT vectors, "
                             f"got shape {np.shape(doc)} (document {i})")
    lengths = np.fromiter((len(doc) for doc in documents), dtype=np.int64, count=len(documents))
    if lengths.min() < 1:
        raise ValueError("every document needs at least one ColBERT vector")
    packed = np.concatenate([np.asarray(doc, dtype=np.float32) for doc in documents])
    return packed_colbert_scores(np.asarray(query, dtype=np.float32), packed, lengths)


def packed_colbert_scores(
    query: NDArray[np.float32], packed: NDArray[np.floating], lengths: NDArray[np.int64]
) -> NDArray[np.float32]:
    """MaxSim of one query against documents stored back to back.

    Args:
        query: ``[t_q, d]`` query vectors.
        packed: ``[sum t_i, d]`` document vectors, document after document.
        lengths: ``int64 [n]`` rows per document, each ``>= 1``.

    Returns:
        ``float32 [n]`` scores.

    Example:
        >>> packed_colbert_scores(np.ones((1, 2), np.float32), np.eye(2, dtype=np.float32),
        ...                       np.array([1, 1])).tolist()
        [1.0, 1.0]
    """
    if query.ndim != 2 or packed.ndim != 2 or query.shape[1] != packed.shape[1]:
        raise ValueError(
            f"expected [t_q, d] and [t, d] arrays, got shapes {query.shape} and {packed.shape}"
        )
    _check_query(query)
    similarities = query @ packed.T.astype(np.float32, copy=False)  # [t_q, t]
    return segment_maxsim(similarities, lengths)


def _check_query(query: NDArray[np.floating]) -> None:
    if query.shape[0] == 0:
        raise ValueError(f"the query has no ColBERT vectors (shape {query.shape}): MaxSim "
                         "averages over query tokens and needs at least one")


def _check_sparse(vector: object, name: str) -> None:
    if isinstance(vector, SparseVector):
        return
    if isinstance(vector, Mapping):
        raise TypeError(
            f"{name} must be a SparseVector, got a {type(vector).__name__}: convert "
            "{token_id: weight} dicts (FlagEmbedding's lexical_weights too) with "
            "SparseVector.from_dict(...)")
    raise TypeError(f"{name} must be a SparseVector, got {type(vector).__name__}")


def segment_maxsim(similarities: NDArray[np.float32], lengths: NDArray[np.int64]
                   ) -> NDArray[np.float32]:
    """MaxSim scores from query-token x packed-document-token similarities ``[t_q, t]``.

    Each document's columns are consecutive (``lengths`` of them, each ``>= 1``): a
    segmented max gives each query token's best match, and the mean over query tokens
    is the score.
    """
    starts = np.zeros(lengths.shape[0], dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    best = np.maximum.reduceat(similarities, starts, axis=1)  # [t_q, n]
    return np.asarray(best.mean(axis=0, dtype=np.float64), dtype=np.float32)


def fuse_scores(
    dense: NDArray[np.floating] | float,
    sparse: NDArray[np.floating] | float,
    colbert: NDArray[np.floating] | float | None = None,
    weights: Sequence[float] = (1.0, 1.0, 1.0),
) -> NDArray[np.float64]:
    """FlagEmbedding's weighted average of the per-mode scores.

    ``weights`` is ``(w_dense, w_sparse, w_colbert)``. Without ``colbert`` this is
    FlagEmbedding's ``sparse+dense``: ``(w1*s + w0*d) / (w0 + w1)``; with it,
    ``colbert+sparse+dense``: ``(w2*c + w1*s + w0*d) / (w0 + w1 + w2)``.

    Args:
        dense: Dense scores.
        sparse: Sparse scores (same shape).
        colbert: ColBERT scores (same shape), or ``None``.
        weights: Three non-negative weights with a positive sum over the used modes.

    Returns:
        The fused scores.

    Raises:
        ValueError: On a wrong number of weights, a negative weight or a zero sum.

    Example:
        >>> fuse_scores(1.0, 0.0, weights=(0.4, 0.2, 0.4)).round(4).item()
        0.6667
        >>> fuse_scores(1.0, 0.0, 0.5, weights=(0.4, 0.2, 0.4)).round(4).item()
        0.6
    """
    w = tuple(float(x) for x in weights)
    if len(w) != 3 or not all(math.isfinite(x) and x >= 0 for x in w):
        raise ValueError(
            f"weights must be three finite non-negative numbers (dense, sparse, colbert), got "
            f"{weights}"
        )
    d, s = np.asarray(dense, dtype=np.float64), np.asarray(sparse, dtype=np.float64)
    if colbert is None:
        total = w[0] + w[1]
        if total <= 0:
            raise ValueError(f"dense and sparse weights sum to zero: {weights}")
        return (w[1] * s + w[0] * d) / total
    total = sum(w)
    if total <= 0:
        raise ValueError(f"weights sum to zero: {weights}")
    c = np.asarray(colbert, dtype=np.float64)
    return (w[2] * c + w[1] * s + w[0] * d) / total


def weighted_fuse(scores: Sequence[NDArray[np.floating]],
                  weights: NDArray[np.floating] | Sequence[float]) -> NDArray[np.float64]:
    """``sum(w_m * s_m) / sum(w_m)`` over modes, for one weight vector or a grid of them.

    The index's weighted fusion and the evaluation's weight grid both run this function,
    so a grid point ranks documents exactly as a search with those weights does.

    Args:
        scores: One ``[n]`` score array per mode.
        weights: ``[m]`` weights, or ``[g, m]`` for ``g`` weight vectors at once.

    Returns:
        ``float64 [n]``, or ``[n, g]`` for a grid.

    Raises:
        ValueError: A negative or non-finite weight, or weights that sum to zero.

    Example:
        >>> weighted_fuse([np.array([1.0, 0.0]), np.array([0.0, 1.0])], [3, 1]).tolist()
        [0.75, 0.25]
        >>> weighted_fuse([np.array([1.0]), np.array([0.0])], [[1, 0], [1, 1]]).tolist()
        [[1.0, 0.5]]
    """
    w = np.asarray(weights, dtype=np.float64)
    grid = w.ndim == 2
    w = w if grid else w[None, :]
    if w.ndim != 2 or w.shape[1] != len(scores):
        raise ValueError(f"expected {len(scores)} weights per vector, got shape "
                         f"{np.shape(weights)}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"weights must be finite and non-negative, got {np.asarray(weights)}")
    total_weight = w.sum(axis=1)
    if (total_weight <= 0).any():
        raise ValueError("the weights of the modes in use sum to zero")
    total = np.zeros((np.shape(scores[0])[0], w.shape[0]), dtype=np.float64)
    for m, values in enumerate(scores):
        total += w[:, m] * np.asarray(values, dtype=np.float64)[:, None]
    fused: NDArray[np.float64] = total / total_weight
    return fused if grid else fused[:, 0]


def rrf_fuse(scores: Sequence[NDArray[np.floating]], members: Sequence[NDArray[np.bool_]],
             k: float | NDArray[np.floating] = RRF_K) -> NDArray[np.float64]:
    """Reciprocal rank fusion: ``sum over modes of 1 / (k + rank)``, ranks from 1.

    Each mode ranks only its own members (its candidate list) by score, ties by position;
    the other documents get nothing from that mode.

    Args:
        scores: One ``[n]`` score array per mode.
        members: One ``bool [n]`` mask per mode.
        k: The RRF constant (60 in the original paper), or ``[g]`` values at once.

    Returns:
        ``float64 [n]``, or ``[n, g]`` for an array of ``k``.

    Example:
        >>> rrf_fuse([np.array([0.9, 0.1])], [np.array([True, True])], k=1).tolist()
        [0.5, 0.3333333333333333]
    """
    ks = np.asarray(k, dtype=np.float64)
    grid = ks.ndim == 1
    ks = ks if grid else ks[None]
    if not np.isfinite(ks).all() or (ks < 0).any():
        raise ValueError(f"the RRF constant must be finite and non-negative, got {k}")
    total = np.zeros((np.shape(scores[0])[0], ks.shape[0]), dtype=np.float64)
    for values, member in zip(scores, members, strict=True):
        rows = np.flatnonzero(member)
        order = rows[np.argsort(-np.asarray(values)[rows], kind="stable")]
        total[order] += 1.0 / (ks[None, :] + np.arange(1, order.size + 1)[:, None])
    return total if grid else total[:, 0]


def paired_dense_sparse_scores(
    queries: EncodeOutput,
    passages: EncodeOutput,
    query_of: NDArray[np.int64],
    passage_of: NDArray[np.int64],
    vocab_size: int,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Dense and lexical scores of pairs: query ``query_of[i]`` with passage ``passage_of[i]``.

    One score per pair, not a matrix: for ``compute_score``-style inputs where each text is
    encoded once and pairs index into the outputs.

    Args:
        queries: Encoded queries, with ``dense`` and ``sparse``.
        passages: Encoded passages, with ``dense`` and ``sparse``.
        query_of: ``int64 [p]`` row of ``queries`` for each pair.
        passage_of: ``int64 [p]`` row of ``passages`` for each pair.
        vocab_size: Number of token ids (sparse ids lie below it).

    Returns:
        ``float32 [p]`` dense scores and ``float32 [p]`` lexical scores.

    Raises:
        ValueError: An output without ``dense`` or ``sparse``.

    Example:
        >>> q = EncodeOutput(np.eye(2, dtype=np.float32), [SparseVector.from_dict({1: 0.5}),
        ...                  SparseVector.from_dict({2: 1.0})])
        >>> dense, sparse = paired_dense_sparse_scores(q, q, np.array([0, 1]), np.array([1, 1]), 4)
        >>> dense.tolist(), sparse.tolist()
        ([0.0, 1.0], [0.0, 1.0])
    """
    q_dense, q_sparse = queries.dense, queries.sparse
    p_dense, p_sparse = passages.dense, passages.sparse
    if q_dense is None or q_sparse is None or p_dense is None or p_sparse is None:
        raise ValueError("paired scores need the dense and sparse outputs of queries and "
                         "passages (encode with dense=True, sparse=True)")
    dense = np.einsum("ij,ij->i", q_dense[query_of], p_dense[passage_of])
    sparse = np.asarray(
        sparse_to_csr(q_sparse, vocab_size)[query_of]
        .multiply(sparse_to_csr(p_sparse, vocab_size)[passage_of]).sum(axis=1)
    ).ravel()
    return dense, sparse


def pair_scores(
    queries: EncodeOutput,
    passages: EncodeOutput,
    query_of: NDArray[np.int64],
    passage_of: NDArray[np.int64],
    weights: Sequence[float],
    vocab_size: int,
) -> dict[str, list[float]]:
    """``compute_score``'s five scores of pairs, from the pairs' encoded texts.

    Args:
        queries: Encoded distinct queries with ``dense``, ``sparse`` and ``colbert``.
        passages: Encoded distinct passages with the same outputs.
        query_of: ``int64 [p]`` row of ``queries`` for each pair.
        passage_of: ``int64 [p]`` row of ``passages`` for each pair.
        weights: ``(w_dense, w_sparse, w_colbert)`` of the fused modes.
        vocab_size: Number of token ids.

    Returns:
        Each mode of ``SCORE_MODES`` to one float per pair; ``sparse+dense`` is NaN
        when its two weights are 0.

    Raises:
        ValueError: An output is missing, or invalid weights.
    """
    w = tuple(float(x) for x in weights)
    fuse_scores(0.0, 0.0, 0.0, w)  # validates the weights
    if queries.colbert is None or passages.colbert is None:
        raise ValueError("pair scores need the ColBERT outputs of queries and passages")
    dense, sparse = paired_dense_sparse_scores(queries, passages, query_of, passage_of,
                                               vocab_size)
    colbert = np.zeros(len(query_of), dtype=np.float32)
    for query_index in np.unique(query_of):  # one MaxSim call per distinct query
        where = np.flatnonzero(query_of == query_index)
        colbert[where] = colbert_scores(queries.colbert[query_index],
                                        [passages.colbert[j] for j in passage_of[where]])
    scores = {
        "dense": dense,
        "sparse": sparse,
        "colbert": colbert,
        "sparse+dense": (fuse_scores(dense, sparse, weights=w) if w[0] + w[1] > 0
                         else np.full(len(query_of), np.nan)),
        "colbert+sparse+dense": fuse_scores(dense, sparse, colbert, weights=w),
    }
    return {mode: np.asarray(scores[mode], dtype=np.float64).tolist() for mode in SCORE_MODES}
