"""``HybridIndex``: dense + sparse candidates, ColBERT rerank and fusion, in memory.

Search runs in three stages, all vectorized: the top ``candidates`` documents by dense
score and by lexical score (one sparse product over the inverted index), the union of the
two lists scored by ColBERT MaxSim over the packed vectors, and a fusion of the per-mode
scores (FlagEmbedding's weighted average, or reciprocal rank fusion).

Thread safety: any number of threads may search while one thread adds or deletes. Every
search works on a snapshot taken under a lock and sees the index either before or after a
write, never halfway. Writes are serialised by the same lock.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bgem3._inputs import as_ids, positive_int
from bgem3._kernels import dense_top, maxsim_rows, pool_dense_scores, query_block, row_ranges
from bgem3._types import EncodeOutput, Encoder, Hit, SparseVector
from bgem3.index._ann import DenseHNSW, faiss_available, import_faiss
from bgem3.index._store import BlockArray, GrowingArray
from bgem3.index.base import ParquetLoad, SearchIndex, check_encoder
from bgem3.index.filters import Postings, check_filter
from bgem3.index.options import DEFAULT_SEARCH, Fusion, Mode, SearchOptions
from bgem3.index.pool import CandidatePool
from bgem3.index.state import (
    FP16_MAX,
    FP16_SAFE_SCORE,
    DocumentRows,
    IndexState,
    Snapshot,
    largest_norm,
    validate_embeddings,
    validate_state,
)

__all__ = [
    "CandidatePool",
    "HybridIndex",
    "IndexState",
    "check_filter",
    "check_search_args",
    "validate_embeddings",
    "validate_state",
]

RRF_K = DEFAULT_SEARCH.rrf_k
"""Kept for code that imported it from here; the default lives in :data:`DEFAULT_SEARCH`."""
DEFAULT_WEIGHTS = DEFAULT_SEARCH.weights
"""Kept for code that imported it from here; the default lives in :data:`DEFAULT_SEARCH`."""
COMPACT_MIN_DEAD = 1024
"""Dead rows (deleted or replaced documents) before an index compacts itself."""
HNSW_MIN_DOCUMENTS = 200_000
"""Size at which ``dense_search="auto"`` switches from the exact scan to the HNSW graph."""
_KEPT = (Fusion,)  # importable from here for code written before bgem3.index.options
_QUERY_BLOCK = 64
"""Most queries whose dense candidates are found in one scan of the matrix."""


class HybridIndex(SearchIndex):
    """An embedded hybrid index over BGE-M3's three representations.

    Args:
        model: The :class:`~bgem3.BGEM3` that encodes added texts and queries.
        store_colbert: Keep ColBERT vectors (fp16, packed) for reranking.
        dense_dtype: ``"float32"`` (default) or ``"float16"`` storage for dense vectors
            (any norm: the scan scales each query so that no float16 score overflows,
            and scores the candidates in float32).
        dense_search: How the dense candidates are found: ``"exact"`` (a scan of every
            vector), ``"hnsw"`` (an HNSW graph, faiss; the pool is still scored exactly)
            or ``"auto"`` (default): exact until the index holds ``HNSW_MIN_DOCUMENTS``
            rows, then the graph is built once and kept up to date.
        ef_search: Breadth of the HNSW search (more: higher recall, slower).

    Example:
        >>> import tempfile, bgem3
        >>> from bgem3.testing import build_tiny_checkpoint
        >>> model = bgem3.BGEM3(build_tiny_checkpoint(tempfile.mkdtemp()), device="cpu")
        >>> index = bgem3.HybridIndex(model)
        >>> index.add(["paris is a city", "a dog and a cat"], ids=["p", "d"])
        ['p', 'd']
        >>> hits = index.search("paris city", k=1)
        >>> len(hits), sorted(hits[0].scores)
        (1, ['colbert', 'dense', 'sparse'])
    """

    _BLOCK_BYTES = 256 * 2**20  # storage block size of the dense and ColBERT matrices

    def __init__(
        self,
        model: Encoder,
        *,
        store_colbert: bool = True,
        dense_dtype: str = "float32",
        dense_search: str = "auto",
        ef_search: int = 128,
    ) -> None:
        if dense_search not in ("auto", "exact", "hnsw"):
            raise ValueError(f"dense_search must be 'auto', 'exact' or 'hnsw', got "
                             f"{dense_search!r}")
        positive_int(ef_search, "ef_search")
        model = check_encoder(model, "HybridIndex")
        if dense_dtype not in ("float32", "float16"):
            raise ValueError(f"dense_dtype must be 'float32' or 'float16', got {dense_dtype!r}")
        self.model = model
        self.store_colbert = store_colbert
        self.dense_dim: int = model.dense_dim
        self.colbert_dim: int | None = model.colbert_dim if store_colbert else None
        self.vocab_size: int = model.vocab_size
        self._lock = threading.RLock()
        self._ids: list[str] = []
        self._texts: list[str | None] = []
        self._metadata: list[dict[str, Any]] = []
        self._row: dict[str, int] = {}
        self._alive = np.zeros(0, dtype=np.bool_)
        self._dense = BlockArray.of_bytes((self.dense_dim,), dense_dtype, self._BLOCK_BYTES)
        self._sp_indptr = GrowingArray((), np.int64)
        self._sp_indptr.extend(np.zeros(1, np.int64))
        self._sp_indices = GrowingArray((), np.int32)
        self._sp_values = GrowingArray((), np.float32)
        self._cb_vectors = BlockArray.of_bytes((self.colbert_dim or 1,), np.float16,
                                               self._BLOCK_BYTES)
        self._cb_offsets = GrowingArray((), np.int64)
        self._cb_offsets.extend(np.zeros(1, np.int64))
        self._postings = Postings()
        self._dense_norm = 0.0  # float16 storage: at least the largest stored norm
        self._snapshot: Snapshot | None = None
        self.dense_search = dense_search
        self.ef_search = ef_search
        self._graph: DenseHNSW | None = None
        if dense_search == "hnsw":
            import_faiss()  # the ImportError with the install command, now

    # ------------------------------------------------------------------ size and access
    def __len__(self) -> int:
        return len(self._row)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._row

    def get(self, ids: Sequence[str]) -> list[Hit]:
        """Return the stored documents with these ids (``score`` is NaN, ``scores`` empty).

        Raises:
            KeyError: If any id is not in the index (listing the unknown ones).
        """
        ids = as_ids(ids)
        with self._lock:
            unknown = [i for i in ids if i not in self._row]
            if unknown:
                raise KeyError(f"unknown ids: {unknown[:10]}")
            rows = [self._row[i] for i in ids]
            return [Hit(self._ids[r], float("nan"), {}, self._texts[r], dict(self._metadata[r]))
                    for r in rows]

    # ------------------------------------------------------------------ writing
    def _store(self, texts: list[str] | None, doc_ids: list[str],
               metas: list[dict[str, Any]], embeddings: EncodeOutput, batch_size: int) -> None:
        self._append(self._checked_rows(texts, doc_ids, metas, embeddings))

    def _checked_rows(self, texts: list[str] | None, doc_ids: list[str],
                      metas: list[dict[str, Any]], embeddings: EncodeOutput) -> DocumentRows:
        """Checked documents in storage form (dense vectors in the index's dtype)."""
        n = len(doc_ids)
        dense, sparse, colbert = validate_embeddings(
            embeddings, n, dense_dim=self.dense_dim, vocab_size=self.vocab_size,
            colbert_dim=self.colbert_dim if self.store_colbert else None)
        if self._dense.dtype == np.float16 and n:
            if float(np.abs(dense).max()) > FP16_MAX:
                raise ValueError("dense vectors exceed the float16 range of this index "
                                 "(dense_dtype='float16'): normalise them or use float32")
            dense = dense.astype(np.float16)
        counts = np.fromiter((len(v) for v in sparse), dtype=np.int64, count=n)
        indices = (np.concatenate([v.indices for v in sparse]).astype(np.int32) if n
                   else np.zeros(0, np.int32))
        values = (np.concatenate([v.values for v in sparse]).astype(np.float32) if n
                  else np.zeros(0, np.float32))
        return DocumentRows(doc_ids, [None] * n if texts is None else list(texts), metas,
                            dense, counts, indices, values, colbert)

    def add_parquet(self, path: str | os.PathLike[str], *, text_column: str | None = "text",
                    metadata_columns: Sequence[str] = (), batch_rows: int = 8192
                    ) -> ParquetLoad:
        """Add the vectors of Parquet files written by ``bgem3.arrow`` / ``bgem3.ray``.

        All or nothing, like :meth:`add`: every file's metadata is checked first
        (another model's vectors are refused before any row is read), then the files are
        read ``batch_rows`` rows at a time and each batch is checked as :meth:`add`
        checks it (ids unique across all the files, widths, NaN, metadata, unreadable
        pages). Checked batches are kept in the index's own storage form (the memory the
        index needs for them anyway) until the last file is read; only then are they
        added, in one step under the lock. A bad row anywhere leaves the index as it
        was. Memory: what the added documents take in the index, plus one batch.

        Args:
            path: A ``.parquet`` file or a directory of them (read in name order).
            text_column: The column with the texts to store (absent: no texts).
            metadata_columns: Columns to store as each document's metadata.
            batch_rows: Rows per batch.

        Returns:
            The number of documents added (``len(index)`` grew by it), an ``int`` whose
            ``replaced`` attribute counts the rows that replaced a document with the same
            id (upserts) and ``rows`` the rows read.

        Raises:
            FileNotFoundError: No such file, or a directory without ``.parquet`` files.
            ValueError: Another model's vectors, a missing column, bad content or an id
                given twice (the message names the file or the path); nothing was added.
            TypeError: A metadata value the index cannot store (a timestamp column...).

        Example:
            >>> import tempfile, pathlib, bgem3, bgem3.arrow, pyarrow.parquet as pq
            >>> from bgem3.testing import build_tiny_checkpoint
            >>> model = bgem3.BGEM3(build_tiny_checkpoint(tempfile.mkdtemp()), device="cpu")
            >>> texts = ["a cat", "a dog"]
            >>> out = model.encode_documents(texts, dense=True, sparse=True, colbert=True)
            >>> file = pathlib.Path(tempfile.mkdtemp()) / "v.parquet"
            >>> table = bgem3.arrow.to_arrow(out, ["c", "d"], texts=texts, model=model)
            >>> pq.write_table(table, file)
            >>> index = bgem3.HybridIndex(model)
            >>> index.add_parquet(file)
            ParquetLoad(added=2, replaced=0)
            >>> again = index.add_parquet(file)  # the same ids: upserts
            >>> again == 0, again.replaced, len(index)
            (True, 2, 2)
        """
        staged = [self._checked_rows(*checked) for checked in self._parquet_documents(
            path, text_column, metadata_columns, batch_rows)]
        with self._lock:  # one step: no search sees part of the load
            replaced = sum(doc_id in self._row for rows in staged for doc_id in rows.ids)
            rows_read = sum(len(rows.ids) for rows in staged)
            staged.reverse()
            while staged:  # each batch's memory is freed as it moves into storage
                self._append(staged.pop())
        return ParquetLoad(added=rows_read - replaced, replaced=replaced)

    def delete(self, ids: Sequence[str]) -> None:
        """Delete documents by id.

        Raises:
            KeyError: If any id is unknown; then nothing is deleted.
        """
        ids = list(dict.fromkeys(as_ids(ids)))  # an id given twice is deleted once
        with self._lock:
            unknown = [i for i in ids if i not in self._row]
            if unknown:
                raise KeyError(f"unknown ids, nothing deleted: {unknown[:10]}")
            alive = self._alive.copy()
            alive[[self._row[i] for i in ids]] = False
            for doc_id in ids:
                del self._row[doc_id]
            self._alive = alive
            self._snapshot = None
            self._compact_if_sparse()

    def _append(self, rows: DocumentRows, *, graph: bool = True) -> None:
        """Append checked rows.

        Their packed ColBERT matrix must be a fresh array that nobody else changes: large
        ones are kept as they are. Everything that can fail is done before the first
        change.
        """
        ids, dense = rows.ids, rows.dense
        postings = Postings.keys_of(rows.metadata)  # before the lock: nothing fails under it
        norm = (largest_norm(dense) if self._dense.dtype == np.float16 and len(ids)
                else 0.0)
        with self._lock:
            start = len(self._ids)
            replaced = [self._row[i] for i in ids if i in self._row]
            self._dense.extend(dense)
            self._sp_indptr.extend(self._sp_indptr.view()[-1] + np.cumsum(rows.sparse_counts))
            self._sp_indices.extend(rows.sparse_indices)
            self._sp_values.extend(rows.sparse_values)
            if rows.colbert is not None:
                packed, lengths = rows.colbert
                self._cb_vectors.extend(packed, owned=True)  # built by us: no copy
                self._cb_offsets.extend(self._cb_offsets.view()[-1] + np.cumsum(lengths))
            alive = np.concatenate([self._alive, np.ones(len(ids), dtype=np.bool_)])
            alive[replaced] = False
            for offset, doc_id in enumerate(ids):
                self._row[doc_id] = start + offset
            self._postings.add(rows.metadata, start, postings)
            self._ids.extend(ids)
            self._texts.extend(rows.texts)
            self._metadata.extend(rows.metadata)
            self._alive = alive
            self._dense_norm = max(self._dense_norm, norm)
            self._snapshot = None
            if graph:
                self._update_graph(dense)
            self._compact_if_sparse()

    def _update_graph(self, new_rows: NDArray[Any]) -> None:
        """Add new rows to the HNSW graph, or build it when the index has grown enough."""
        if self._graph is not None:
            self._graph.add(new_rows)
            return
        if self.dense_search == "hnsw" or (self.dense_search == "auto"
                                           and len(self._ids) >= HNSW_MIN_DOCUMENTS
                                           and faiss_available()):
            self._build_graph()

    def _build_graph(self, **params: int) -> None:
        """Build the HNSW graph over every stored row (``params``: ``m``, ``ef_construction``)."""
        graph = DenseHNSW(self.dense_dim, ef_search=self.ef_search, **params)
        for block in self._dense.rows().blocks:
            graph.add(block)
        self._graph = graph

    # ------------------------------------------------------------------ state and compaction
    def state(self) -> IndexState:
        """The live documents and their vectors as plain arrays (what :meth:`save` writes).

        Example:
            >>> import tempfile, bgem3
            >>> from bgem3.testing import build_tiny_checkpoint
            >>> model = bgem3.BGEM3(build_tiny_checkpoint(tempfile.mkdtemp()), device="cpu")
            >>> index = bgem3.HybridIndex(model)
            >>> _ = index.add(["a cat", "a dog"], ids=["c", "d"])
            >>> index.delete(["c"])
            >>> state = index.state()
            >>> state.ids, state.dense.shape[0], len(HybridIndex.from_state(model, state))
            (['d'], 1, 1)
        """
        snap = self.snapshot()
        rows = np.flatnonzero(snap.alive)
        csr = snap.sparse_rows[rows]
        colbert = offsets = None
        if snap.colbert is not None and snap.colbert_offsets is not None:
            starts, ends = snap.colbert_offsets[rows], snap.colbert_offsets[rows + 1]
            colbert = snap.colbert.take(row_ranges(starts, ends))
            offsets = np.concatenate(([0], np.cumsum(ends - starts))).astype(np.int64)
        return IndexState(
            ids=[snap.ids[r] for r in rows],
            texts=[snap.texts[r] for r in rows],
            metadata=[dict(snap.metadata[r]) for r in rows],
            dense=snap.dense.take(rows),
            sparse_indptr=csr.indptr.astype(np.int64),
            sparse_indices=csr.indices.astype(np.int32),
            sparse_values=csr.data.astype(np.float32),
            colbert=colbert,
            colbert_offsets=offsets,
        )

    @classmethod
    def from_state(cls, model: Encoder, state: IndexState, *, dense_search: str = "auto",
                   ef_search: int = 128, graph: DenseHNSW | None = None,
                   check_documents: bool = True) -> HybridIndex:
        """An index holding ``state`` (from :meth:`state`, or read from disk), checked first.

        Args:
            model: The model of the index.
            state: Its contents.
            dense_search: As in the constructor.
            ef_search: As in the constructor.
            graph: An HNSW graph over exactly ``state.dense`` (a saved one), used instead
                of building it again.
            check_documents: Check that the ids, texts and metadata can be saved, as
                :meth:`add` does (``False``: they come from a saved or this index).

        Raises:
            ValueError: The state is inconsistent or does not fit ``model`` (the message
                says what); nothing is built then.
        """
        store_colbert = state.colbert is not None
        index = cls(model, store_colbert=store_colbert, dense_dtype=str(state.dense.dtype),
                    dense_search=dense_search, ef_search=ef_search)
        validate_state(state, dense_dim=index.dense_dim, vocab_size=index.vocab_size,
                       colbert_dim=index.colbert_dim, documents=check_documents)
        if graph is not None and (len(graph) != len(state.ids) or graph.dim != index.dense_dim):
            raise ValueError(f"the HNSW graph holds {len(graph)} vectors of width {graph.dim}, "
                             f"the index {len(state.ids)} of width {index.dense_dim}")
        colbert = None
        if state.colbert is not None and state.colbert_offsets is not None:
            colbert = (state.colbert, np.diff(state.colbert_offsets))
        index._append(DocumentRows(list(state.ids), list(state.texts),
                                   [dict(m) for m in state.metadata], state.dense,
                                   np.diff(state.sparse_indptr), state.sparse_indices,
                                   state.sparse_values, colbert), graph=graph is None)
        if graph is not None:
            graph.ef_search = ef_search
            index._graph = graph
        return index

    def compact(self) -> int:
        """Drop the storage of deleted and replaced documents; returns the rows freed.

        Runs by itself once dead rows outnumber live ones (and number at least
        ``COMPACT_MIN_DEAD``); searches that already started keep their snapshot.
        """
        with self._lock:
            dead = len(self._ids) - len(self._row)
            if dead == 0:
                return 0
            fresh = HybridIndex.from_state(self.model, self.state(),
                                           dense_search=self.dense_search,
                                           ef_search=self.ef_search, check_documents=False)
            for name in ("_ids", "_texts", "_metadata", "_row", "_alive", "_dense",
                         "_sp_indptr", "_sp_indices", "_sp_values", "_cb_vectors",
                         "_cb_offsets", "_postings", "_graph", "_dense_norm"):
                setattr(self, name, getattr(fresh, name))
            self._snapshot = None
            return dead

    def _compact_if_sparse(self) -> None:
        dead = len(self._ids) - len(self._row)
        if dead >= COMPACT_MIN_DEAD and dead > len(self._row):
            self.compact()

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("a HybridIndex cannot be pickled or copied (it holds a loaded model and "
                        "live storage): save it with index.save(path) and open it with "
                        "HybridIndex.load(path, model), or share the object")

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Save to the directory ``path`` atomically (``.npy`` + JSON, no pickle).

        A save that fails or is killed leaves the previously saved index loadable; the
        next save removes what it left behind. Saves to one path from several threads or
        processes take turns (a file lock); a load during a save reads one complete version.

        Everything an index holds can be saved: :meth:`add` refuses what the saved
        format cannot hold.

        Raises:
            FileExistsError: ``path`` is a file or a non-empty directory of something else.
        """
        from bgem3.index._persist import write_index

        with self._lock:
            if self._graph is not None and len(self) != len(self._graph):
                self.compact()  # the saved graph numbers the live rows only
            state = self.state()
            graph = self._graph
        header = {"model": self.model.name, "model_fingerprint": self.model.fingerprint,
                  "dense_dim": self.dense_dim, "colbert_dim": self.colbert_dim,
                  "vocab_size": self.vocab_size, "store_colbert": self.store_colbert,
                  "dense_search": self.dense_search, "ef_search": self.ef_search}
        if graph is not None and len(graph) == len(state.ids):
            write_index(path, state, header, graph.to_bytes(),
                        {"m": graph.m, "ef_construction": graph.ef_construction})
        else:
            write_index(path, state, header)

    @classmethod
    def load(cls, path: str | os.PathLike[str], model: Encoder) -> HybridIndex:
        """Load an index saved by :meth:`save`, for use with ``model``.

        A saved HNSW graph is used only if it belongs to the saved dense vectors (its
        checksum in the manifest, and its vectors compared with a sample of the
        index's); otherwise it is rebuilt from them, with a ``RuntimeWarning``.

        Raises:
            FileNotFoundError: No directory at ``path``.
            IndexFormatError: Not a bgem3 index, corrupt or truncated files, an unknown
                format version, or a different model than the one that built the index.
        """
        from bgem3.errors import IndexFormatError
        from bgem3.index._persist import check_model, read_index

        saved = read_index(path, lambda root, manifest: check_model(root, manifest, model))
        manifest = saved.manifest
        try:
            ef_search = manifest.get("ef_search", 128)
            graph = refused = None
            params: dict[str, int] = {}
            if manifest.get("hnsw") is not None:
                params = {"m": manifest["hnsw"]["m"],
                          "ef_construction": manifest["hnsw"]["ef_construction"]}
                refused = saved.graph_refused
                if saved.graph is not None and refused is None:
                    graph = DenseHNSW.from_bytes(saved.graph, ef_search=ef_search, **params)
                    if len(graph) == len(saved.state.ids) and \
                            not graph.holds(saved.state.dense):
                        graph, refused = None, "its vectors are not this index's"
            index = cls.from_state(model, saved.state,
                                   dense_search=manifest.get("dense_search", "auto"),
                                   ef_search=ef_search, graph=graph, check_documents=False)
            if refused is not None:
                warnings.warn(f"{saved.directory}: the saved HNSW graph does not belong to this "
                              f"index ({refused}); it was rebuilt from the index's dense "
                              "vectors (save the index to store the new graph)",
                              RuntimeWarning, stacklevel=2)
                if index._graph is None:
                    index._build_graph(**params)
            return index
        except (ValueError, TypeError, KeyError) as exc:
            raise IndexFormatError(f"{saved.directory}: {exc}") from exc

    # ------------------------------------------------------------------ reading
    def snapshot(self) -> Snapshot:
        """A consistent read-only view of the current contents (built once per write)."""
        from scipy.sparse import csr_matrix

        with self._lock:
            if self._snapshot is None:
                n = len(self._ids)
                sparse_rows = csr_matrix(
                    (self._sp_values.view(), self._sp_indices.view(), self._sp_indptr.view()),
                    shape=(n, self.vocab_size),
                )
                self._snapshot = Snapshot(
                    n=n,
                    alive=self._alive,
                    dense=self._dense.rows(),
                    sparse=sparse_rows.tocsc(),
                    sparse_rows=sparse_rows,
                    colbert=self._cb_vectors.rows() if self.store_colbert else None,
                    colbert_offsets=self._cb_offsets.view() if self.store_colbert else None,
                    ids=self._ids[:n],
                    texts=self._texts[:n],
                    metadata=self._metadata[:n],
                    dense_norm=self._dense_norm,
                )
            return self._snapshot

    # ------------------------------------------------------------------ searching
    def _search_encoded(self, queries: EncodeOutput, options: SearchOptions
                        ) -> list[list[Hit]]:
        snap = self.snapshot()
        return [_hits(snap, pool, pool.fuse(options.fusion, options.weights, options.rrf_k),
                      options.k)
                for pool in self._pools(snap, queries, options)]

    def score_candidates(
        self,
        queries: EncodeOutput,
        k: int = DEFAULT_SEARCH.k,
        *,
        mode: Mode = DEFAULT_SEARCH.mode,
        candidates: int = DEFAULT_SEARCH.candidates,
        rerank: bool | None = DEFAULT_SEARCH.rerank,
        filter: Mapping[str, Any] | None = DEFAULT_SEARCH.filter,
    ) -> list[CandidatePool]:
        """The candidate pool of each query with its exact per-mode scores, unfused.

        This is what :meth:`search_encoded` fuses: ``pool.fuse(fusion, weights)`` ranks the
        pool as that search would. Evaluation uses it to score many fusions at once.

        Args:
            queries: ``encode_queries`` output with dense, sparse (and, to rerank, ColBERT).
            k: As in search: each list holds at least ``k`` documents.
            mode: Candidate source, as in :meth:`search_batch`.
            candidates: Documents from each of the dense and sparse lists.
            rerank: Add ColBERT scores of the pool (``None``: when the index stores them).
            filter: Metadata conditions, as in :meth:`search_batch`.

        Returns:
            One :class:`CandidatePool` per query.
        """
        options = self.search_options(k=k, mode=mode, candidates=candidates, rerank=rerank,
                                      filter=filter)
        return list(self._pools(self.snapshot(), queries, options))

    def _pools(self, snap: Snapshot, queries: EncodeOutput, options: SearchOptions
               ) -> Iterator[CandidatePool]:
        """Each query's pool; the dense matrix is read once per block of queries."""
        use_colbert = bool(options.rerank)
        dense, sparse = _check_queries(queries, self.dense_dim,
                                       self.colbert_dim if use_colbert else None)
        mask = self._postings.mask(options.filter, snap.alive)
        candidates = max(options.candidates, options.k)  # each list must fill the k hits
        block = query_block(snap.n, _QUERY_BLOCK)
        for start in range(0, len(queries), block):
            stop = min(start + block, len(queries))
            if not mask.any():
                yield from (CandidatePool.empty() for _ in range(start, stop))
                continue
            dense_tops = None
            if options.mode in ("hybrid", "dense"):
                graph = self._graph
                if graph is not None:
                    with self._lock:  # faiss must not search while a writer adds
                        dense_tops = graph.search(dense[start:stop], candidates, mask)
                else:
                    dense_tops = [rows for rows, _ in dense_top(
                        snap.dense, _scan_queries(dense[start:stop], snap), candidates,
                        mask)]
            for j in range(stop - start):
                i = start + j
                query = _Query(
                    dense=np.asarray(dense[i], dtype=np.float32),
                    sparse=_clip(sparse[i], self.vocab_size),
                    colbert=(np.asarray(queries.colbert[i], dtype=np.float32)
                             if use_colbert and queries.colbert else None))
                yield _pool(snap, mask, query, None if dense_tops is None else dense_tops[j],
                            options.mode, candidates)


def _scan_queries(queries: NDArray[np.float32], snap: Snapshot) -> NDArray[np.float32]:
    """The queries of an exact scan: scaled down where a float16 score could overflow.

    A float16 matrix is multiplied in float16; ``|q . d| <= |q| |d|`` (every partial sum
    too), so a query scaled to ``|q| * snap.dense_norm <= FP16_SAFE_SCORE`` cannot
    overflow. A positive factor per query changes no ranking, and the candidates are
    scored exactly in float32 afterwards.
    """
    if snap.dense.dtype != np.float16:
        return queries
    queries = np.asarray(queries, dtype=np.float32)
    bound = np.linalg.norm(queries, axis=1) * np.float32(snap.dense_norm)
    if not (bound > FP16_SAFE_SCORE).any():
        return queries
    scale = FP16_SAFE_SCORE / np.maximum(bound, FP16_SAFE_SCORE)  # 1 where nothing overflows
    scaled: NDArray[np.float32] = (queries * scale[:, None]).astype(np.float32)
    return scaled


@dataclass(frozen=True)
class _Query:
    dense: NDArray[np.float32]
    sparse: SparseVector
    colbert: NDArray[np.float32] | None


def _pool(snap: Snapshot, mask: NDArray[np.bool_], query: _Query,
          dense_top_rows: NDArray[np.int64] | None, mode: str, candidates: int
          ) -> CandidatePool:
    """The candidates of one query with their exact per-mode scores."""
    pools = []
    if dense_top_rows is not None:
        pools.append(dense_top_rows)
    sparse_all = None
    if mode in ("hybrid", "sparse"):
        # lexical scores of every document: only the query tokens' postings are read
        sparse_all = _sparse_scores(snap, query.sparse)
        matching = np.flatnonzero((sparse_all > 0) & mask)
        pools.append(matching[CandidatePool.best(sparse_all[matching], candidates)])
    pool = np.unique(np.concatenate(pools))
    used = [m for m in ("dense", "sparse") if m == mode or mode == "hybrid"]
    lists = dict(zip(used, pools, strict=True))
    # exact per-mode scores of the pool (fp16 dense storage widened to fp32 here)
    per_mode: dict[str, NDArray[np.float32]] = {
        "dense": pool_dense_scores(snap.dense.take(pool), query.dense),
        "sparse": (sparse_all[pool] if sparse_all is not None
                   else _sparse_scores(snap, query.sparse, rows=pool)),
    }
    if (query.colbert is not None and snap.colbert is not None
            and snap.colbert_offsets is not None and pool.size):
        starts, ends = snap.colbert_offsets[pool], snap.colbert_offsets[pool + 1]
        per_mode["colbert"] = maxsim_rows(query.colbert, snap.colbert,
                                          row_ranges(starts, ends), ends - starts)
        lists["colbert"] = pool  # ColBERT reranks the whole pool
    return CandidatePool(rows=pool, ids=[snap.ids[r] for r in pool], scores=per_mode,
                         lists=lists)


def _sparse_scores(snap: Snapshot, query: SparseVector,
                   rows: NDArray[np.int64] | None = None) -> NDArray[np.float32]:
    """Lexical matching scores of every document (or of ``rows``) for one query.

    Reads only the postings of the query's tokens: the columns of the token-major matrix.
    """
    if rows is None:
        columns = snap.sparse[:, query.indices]
    else:
        columns = snap.sparse_rows[rows][:, query.indices]
    scores: NDArray[np.float32] = (columns @ query.values.astype(np.float32)).astype(
        np.float32, copy=False)
    return scores


def _clip(vector: SparseVector, vocab_size: int) -> SparseVector:
    """The query's weights on token ids this index knows (others cannot match)."""
    keep = vector.indices < vocab_size
    if keep.all():
        return vector
    return SparseVector(vector.indices[keep], vector.values[keep])


def _hits(snap: Snapshot, pool: CandidatePool, fused: NDArray[np.float64], k: int
          ) -> list[Hit]:
    """The ``k`` best of a pool as hits, best first."""
    hits = []
    for j in CandidatePool.best(fused, k):
        row = int(pool.rows[j])
        hits.append(Hit(
            id=snap.ids[row],
            score=float(fused[j]),
            scores={name: float(values[j]) for name, values in pool.scores.items()},
            text=snap.texts[row],
            metadata=dict(snap.metadata[row]),
        ))
    return hits


def check_search_args(k: int, mode: str, fusion: str, candidates: int,
                      weights: Sequence[float], fusions: Sequence[str],
                      rrf_k: int = DEFAULT_SEARCH.rrf_k) -> None:
    """Validate search arguments; raise ``ValueError`` if wrong.

    Kept for code written against earlier versions: :class:`SearchOptions` checks the
    same (``SearchOptions(k=..., mode=...)`` raises).
    """
    SearchOptions(k=k, mode=mode, fusion=fusion if fusion in ("weighted", "rrf", "dbsf")  # type: ignore[arg-type]
                  else "weighted", weights=tuple(weights), candidates=candidates,  # type: ignore[arg-type]
                  rrf_k=rrf_k)
    if fusion not in fusions:
        raise ValueError(f"fusion must be one of {', '.join(map(repr, fusions))}, got {fusion!r}")


def _check_queries(queries: EncodeOutput, dense_dim: int, colbert_dim: int | None
                   ) -> tuple[NDArray[np.float32], list[SparseVector]]:
    """Encoded queries must fit the index: the outputs it needs, in the right shapes."""
    if not isinstance(queries, EncodeOutput):
        raise TypeError(f"queries must be an EncodeOutput (encode_queries), got "
                        f"{type(queries).__name__}")
    if queries.dense is None or queries.sparse is None:
        raise ValueError("encoded queries need dense and sparse outputs")
    n = len(queries.dense)
    if np.ndim(queries.dense) != 2 or np.shape(queries.dense)[1] != dense_dim:
        raise ValueError(f"query dense vectors must have shape (m, {dense_dim}), got "
                         f"{np.shape(queries.dense)}")
    if len(queries.sparse) != n or not all(isinstance(v, SparseVector) for v in queries.sparse):
        raise ValueError(f"expected {n} query SparseVectors, one per dense vector")
    if colbert_dim is not None:
        if queries.colbert is None:
            raise ValueError("reranking needs the queries' ColBERT vectors")
        if len(queries.colbert) != n or any(
                np.ndim(a) != 2 or np.shape(a)[1] != colbert_dim for a in queries.colbert):
            raise ValueError(f"expected {n} query ColBERT arrays of shape (t, {colbert_dim})")
    return queries.dense, queries.sparse
