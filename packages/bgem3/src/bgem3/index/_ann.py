"""Approximate dense candidates for large indexes: an HNSW graph (faiss) over fp16 vectors.

The embedded index scans its whole dense matrix for each block of queries: exact, and
bandwidth-bound at a million documents (about 150 ms for one query on 2 cores). An HNSW
graph visits a few thousand vectors instead. It only proposes the dense candidates: the
pool is re-scored exactly from the index's own vectors afterwards, so scores stay exact
and only the membership of the candidate list is approximate.

faiss was chosen over hnswlib and usearch for its wheels (Linux, macOS, Windows, x86 and
ARM), its filtered search (a bitmap of allowed rows, so deleted and filtered-out documents
are skipped inside the graph walk) and its byte serialisation (saved as ``.npy``, no pickle).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from bgem3._kernels import Rows

__all__ = ["DenseHNSW", "faiss_available", "import_faiss"]


def import_faiss() -> Any:
    """The faiss module, or an ``ImportError`` with the install command."""
    try:
        import faiss
    except ImportError as exc:
        raise ImportError('approximate dense search needs faiss: pip install "bgem3[ann]"'
                          ) from exc
    return faiss


def faiss_available() -> bool:
    """Whether faiss can be imported (``dense_search="auto"`` uses the graph only then)."""
    try:
        import_faiss()
    except ImportError:
        return False
    return True


class DenseHNSW:
    """An HNSW graph over the dense vectors, rows numbered as the index stores them.

    Args:
        dim: Vector width.
        m: Graph degree (links per node; 32 is faiss's usual choice for high recall).
        ef_construction: Breadth of the search that inserts a node.
        ef_search: Breadth of the search at query time (at least the candidates asked).
    """

    def __init__(self, dim: int, *, m: int = 32, ef_construction: int = 80,
                 ef_search: int = 128, _index: Any = None) -> None:
        faiss = import_faiss()
        self.dim, self.m = dim, m
        self.ef_construction, self.ef_search = ef_construction, ef_search
        if _index is None:
            _index = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_fp16, m,
                                       faiss.METRIC_INNER_PRODUCT)
            _index.hnsw.efConstruction = ef_construction
            _index.train(np.zeros((1, dim), dtype=np.float32))  # fp16 needs no statistics
        self._index = _index

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, vectors: NDArray[Any]) -> None:
        """Append rows (in the index's row order)."""
        if len(vectors):
            self._index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    def search(self, queries: NDArray[np.float32], k: int, allowed: NDArray[np.bool_]
               ) -> list[NDArray[np.int64]]:
        """Each query's ``k`` best rows among the ``allowed`` ones (best first, maybe fewer)."""
        faiss = import_faiss()
        params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k))
        if allowed.shape[0] != len(self) or not allowed.all():  # else no per-node filter test
            bitmap = np.packbits(allowed, bitorder="little")
            selector = faiss.IDSelectorBitmap(int(bitmap.size), faiss.swig_ptr(bitmap))  # bytes
            params.sel = selector
        _, rows = self._index.search(np.ascontiguousarray(queries, dtype=np.float32), k,
                                     params=params)
        return [r[r >= 0].astype(np.int64) for r in rows]

    def holds(self, dense: Rows | NDArray[Any], sample: int = 256) -> bool:
        """Whether the graph's vectors are ``dense`` (in fp16), checked on ``sample`` rows.

        Rows spread evenly over the index, first and last included: a graph built from
        other vectors (another index's, an older version's) differs on nearly all of them.
        """
        n = len(self)
        if n != len(dense):
            return False
        if n == 0:
            return True
        rows = np.unique(np.linspace(0, n - 1, num=min(sample, n)).astype(np.int64))
        expected = np.asarray(dense.take(rows) if isinstance(dense, Rows) else dense[rows])
        expected = expected.astype(np.float16).astype(np.float32)
        stored = np.stack([self._index.reconstruct(int(r)) for r in rows])
        return bool(np.allclose(stored, expected, rtol=2e-3, atol=1e-6))

    def to_bytes(self) -> NDArray[np.uint8]:
        """The graph and vectors as one byte array (``faiss.serialize_index``)."""
        data: NDArray[np.uint8] = import_faiss().serialize_index(self._index)
        return data

    @classmethod
    def from_bytes(cls, data: NDArray[np.uint8], *, m: int, ef_construction: int,
                   ef_search: int) -> DenseHNSW:
        """Rebuild from :meth:`to_bytes`.

        Raises:
            ValueError: The bytes do not hold a faiss HNSW index.
        """
        faiss = import_faiss()
        try:
            index = faiss.deserialize_index(np.ascontiguousarray(data, dtype=np.uint8))
        except RuntimeError as exc:
            raise ValueError(f"the HNSW graph cannot be read ({str(exc).splitlines()[0]})"
                             ) from exc
        if not hasattr(index, "hnsw"):
            raise ValueError("the dense graph file holds no HNSW index")
        return cls(int(index.d), m=m, ef_construction=ef_construction, ef_search=ef_search,
                   _index=index)
