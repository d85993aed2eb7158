"""The exhaustive-search kernels: dense top-k, packed MaxSim and top-k selection.

The embedded index, evaluation and negative mining all run these, so a speed or masking
fix lands once. In a process that runs a local model, matrix products run in torch:
alternating between numpy's BLAS threads and torch's makes both wait for each other (a
hybrid query took 1.7x longer), and torch widens fp16 and selects top-k several times faster
than numpy here. In a process that has not imported torch (a client of a remote model), the
same kernels run in numpy, so that searching never imports torch.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bgem3.scoring import segment_maxsim

__all__ = [
    "SCORE_BLOCK_VALUES",
    "Rows",
    "as_rows",
    "dense_scores",
    "dense_top",
    "maxsim_all",
    "maxsim_rows",
    "pool_dense_scores",
    "query_block",
    "row_ranges",
    "top",
]

SCORE_BLOCK_VALUES = 1 << 26
"""Scores held at once by a block of queries against a whole matrix (256 MB of float32)."""


def row_ranges(starts: NDArray[np.int64], ends: NDArray[np.int64]) -> NDArray[np.int64]:
    """Concatenated ``arange(start, end)`` of every pair, without a Python loop.

    Example:
        >>> row_ranges(np.array([5, 0]), np.array([7, 3])).tolist()
        [5, 6, 0, 1, 2]
    """
    lengths = ends - starts
    total = int(lengths.sum())
    # each position's offset inside its own range, plus that range's start
    first = np.repeat(np.cumsum(lengths) - lengths, lengths)
    out: NDArray[np.int64] = np.repeat(starts, lengths) + np.arange(total, dtype=np.int64) - first
    return out


class Rows:
    """The rows of a :class:`BlockArray` as a reader sees them: read-only, frozen in size.

    Example:
        >>> a = np.arange(10, dtype=np.float32).reshape(5, 2)
        >>> rows = Rows([a[:2], a[2:4], a[4:]], (2,), a.dtype)
        >>> rows.shape, [len(x) for x in rows.blocks], rows.take(np.array([4, 0]))[:, 0].tolist()
        ((5, 2), [2, 2, 1], [8.0, 0.0])
    """

    def __init__(self, blocks: list[NDArray[Any]], row_shape: tuple[int, ...],
                 dtype: np.dtype[Any]) -> None:
        self.blocks = tuple(blocks)
        self.dtype = dtype
        lengths = np.fromiter((len(b) for b in blocks), np.int64, len(blocks))
        self._starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.shape = (int(self._starts[-1]), *row_shape)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes of the rows held (not of spare capacity)."""
        return sum(b.nbytes for b in self.blocks)

    def take(self, rows: NDArray[np.int64]) -> NDArray[Any]:
        """Rows at these positions, in this order, as one new array."""
        if len(self.blocks) == 1:
            return self.blocks[0][rows]
        block = np.searchsorted(self._starts, rows, side="right") - 1
        local = rows - self._starts[block]
        out = np.empty((rows.shape[0], *self.shape[1:]), dtype=self.dtype)
        for b in np.unique(block).tolist():  # one gather per block touched
            sel = np.flatnonzero(block == b)
            out[sel] = self.blocks[b][local[sel]]
        return out




def _torch() -> Any:
    """The torch module if this process runs it already (a local model), else ``None``."""
    return sys.modules.get("torch")


def query_block(n_documents: int, most: int = 256) -> int:
    """Queries scored together against ``n_documents`` within :data:`SCORE_BLOCK_VALUES`.

    Example:
        >>> query_block(1000), query_block(1_000_000), query_block(10**9)
        (256, 67, 1)
    """
    return max(1, min(most, SCORE_BLOCK_VALUES // max(n_documents, 1)))


def as_rows(matrix: Rows | NDArray[Any]) -> Rows:
    """A plain ``[n, d]`` array as one-block :class:`Rows` (``Rows`` pass through)."""
    if isinstance(matrix, Rows):
        return matrix
    array = np.ascontiguousarray(matrix)
    return Rows([array], tuple(array.shape[1:]), array.dtype)


def dense_scores(dense: Rows | NDArray[Any], queries: NDArray[np.floating],
                 chunk: int = 65536) -> NDArray[np.float32]:
    """``queries @ dense.T`` as ``float32 [m, n]``, reading ``dense`` once, in row chunks.

    fp16 storage is multiplied in fp16: these scores pick candidates that are re-scored
    exactly, and widening every chunk first costs 3x more than the product.

    Example:
        >>> dense_scores(np.eye(3, dtype=np.float32), np.array([[0, 2, 1]], np.float32))
        array([[0., 2., 1.]], dtype=float32)
    """
    torch = _torch()
    rows = as_rows(dense)
    if torch is None:
        out = np.empty((len(queries), len(rows)), dtype=np.float32)
        q32 = np.ascontiguousarray(queries, dtype=np.float32)
        start = 0
        for block in rows.blocks:
            for i in range(0, len(block), chunk):  # numpy has no fp16 BLAS: widen a chunk
                part = block[i : i + chunk].astype(np.float32, copy=False)
                np.matmul(q32, part.T, out=out[:, start : start + part.shape[0]])
                start += part.shape[0]
        return out
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    if rows.dtype == np.float16:
        q = q.half()
    out = np.empty((q.shape[0], len(rows)), dtype=np.float32)
    scores = torch.from_numpy(out)
    start = 0
    for block in rows.blocks:
        for i in range(0, len(block), chunk):
            part = torch.from_numpy(block[i : i + chunk])
            if q.dtype == torch.float32:
                torch.mm(q, part.T, out=scores[:, start : start + part.shape[0]])
            else:
                scores[:, start : start + part.shape[0]] = q @ part.T
            start += part.shape[0]
    return out


def dense_top(dense: Rows | NDArray[Any], queries: NDArray[np.floating], k: int,
              mask: NDArray[np.bool_] | None = None, *, most_queries: int = 256
              ) -> list[tuple[NDArray[np.int64], NDArray[np.float32]]]:
    """Each query's ``k`` best rows by dot product among the ``mask`` rows, best first.

    Queries go in blocks (:func:`query_block`), so memory stays bounded for any corpus.

    Returns:
        Per query, ``(rows, scores)``: at most ``k`` rows (fewer when fewer are allowed).

    Example:
        >>> docs = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
        >>> [r.tolist() for r, _ in dense_top(docs, np.array([[1, 0.5]], np.float32), 2)]
        [[2, 0]]
    """
    torch = _torch()
    rows = as_rows(dense)
    n = len(rows)
    k = min(k, n)
    out: list[tuple[NDArray[np.int64], NDArray[np.float32]]] = []
    if k == 0:
        return [(np.zeros(0, np.int64), np.zeros(0, np.float32)) for _ in range(len(queries))]
    block = query_block(n, most_queries)
    for start in range(0, len(queries), block):
        scores = dense_scores(rows, queries[start : start + block])
        if mask is not None and not mask.all():
            scores[:, ~mask] = -np.inf
        if torch is None:
            for row in scores:
                best = top(row, k)
                values = row[best]
                keep = np.isfinite(values)
                out.append((best[keep].astype(np.int64), values[keep]))
            continue
        # torch.topk: 4x faster than numpy's argpartition over a million scores
        values, found = torch.topk(torch.from_numpy(scores), k, dim=1)
        keep = torch.isfinite(values).numpy()
        for r, v, f in zip(found.numpy(), values.numpy(), keep, strict=True):
            out.append((r[f].astype(np.int64), v[f]))
    return out


def pool_dense_scores(vectors: NDArray[Any], query: NDArray[np.float32]) -> NDArray[np.float32]:
    """Exact fp32 dense scores of a few stored vectors (fp16 storage widened first)."""
    torch = _torch()
    if torch is None:
        exact: NDArray[np.float32] = vectors.astype(np.float32) @ np.asarray(query, np.float32)
        return exact
    scores = torch.from_numpy(vectors).float() @ torch.from_numpy(
        np.ascontiguousarray(query, dtype=np.float32))
    result: NDArray[np.float32] = scores.numpy()
    return result


def maxsim_rows(query: NDArray[np.floating], colbert: Rows, vectors: NDArray[np.int64],
                lengths: NDArray[np.int64]) -> NDArray[np.float32]:
    """MaxSim of one query against the documents whose packed vectors are ``vectors``.

    ``vectors`` lists the documents' vector rows back to back, ``lengths`` how many each
    has (each ``>= 1``). The fp16 vectors are widened and multiplied by torch.
    """
    torch = _torch()
    if torch is None:
        similarities = np.asarray(query, np.float32) @ colbert.take(vectors).astype(np.float32).T
        return segment_maxsim(similarities, lengths)
    packed = torch.from_numpy(colbert.take(vectors)).float()
    q = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32))
    return segment_maxsim((q @ packed.T).numpy(), lengths)


def maxsim_all(query: NDArray[np.floating], colbert: Rows, offsets: NDArray[np.int64],
               documents: NDArray[np.int64], chunk_vectors: int = 1 << 18
               ) -> NDArray[np.float32]:
    """MaxSim of one query against many documents, ``chunk_vectors`` vectors at a time.

    Args:
        query: ``[t_q, d]`` query vectors.
        colbert: The packed document vectors.
        offsets: ``int64 [N + 1]``: document ``i`` owns vector rows ``offsets[i]:offsets[i+1]``.
        documents: The documents to score.
        chunk_vectors: Vectors widened at once (bounds the memory).

    Returns:
        ``float32 [len(documents)]``.
    """
    lengths = offsets[documents + 1] - offsets[documents]
    bounds = np.searchsorted(np.cumsum(lengths),
                             np.arange(chunk_vectors, int(lengths.sum()), chunk_vectors))
    scores = np.empty(documents.size, dtype=np.float32)
    for part in np.split(np.arange(documents.size), np.unique(bounds)):
        if part.size:
            docs = documents[part]
            scores[part] = maxsim_rows(query, colbert,
                                       row_ranges(offsets[docs], offsets[docs + 1]), lengths[part])
    return scores


def top(scores: NDArray[np.floating], k: int) -> NDArray[np.int64]:
    """Indices of the ``k`` largest scores, best first (``argpartition``, then sort k).

    Example:
        >>> top(np.array([0.1, 0.9, 0.5, 0.7]), 2).tolist()
        [1, 3]
    """
    if scores.size <= k:
        return np.argsort(-scores, kind="stable")
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")]
