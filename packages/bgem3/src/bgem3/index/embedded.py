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
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from bgem3._types import EncodeOutput, Hit, SparseVector
from bgem3.index._ann import DenseHNSW, _faiss
from bgem3.index._store import BlockArray, GrowingArray, Rows, Snapshot, row_ranges
from bgem3.scoring import fuse_scores, rrf_fuse, segment_maxsim, weighted_fuse

__all__ = [
    "CandidatePool",
    "HybridIndex",
    "IndexState",
    "check_filter",
    "check_search_args",
    "validate_embeddings",
    "validate_state",
]

Mode = Literal["hybrid", "dense", "sparse"]
Fusion = Literal["weighted", "rrf"]
RRF_K = 60
DEFAULT_WEIGHTS = (0.4, 0.2, 0.4)
COMPACT_MIN_DEAD = 1024
"""Dead rows (deleted or replaced documents) before an index compacts itself."""
HNSW_MIN_DOCUMENTS = 200_000
"""Size at which ``dense_search="auto"`` switches from the exact scan to the HNSW graph."""
_FP16_MAX = 65504.0


@dataclass(frozen=True)
class IndexState:
    """The contents of an index as plain arrays: its live documents, in order.

    What :meth:`HybridIndex.state` returns, :meth:`HybridIndex.from_state` takes and the
    saved format holds.

    Attributes:
        ids: Document ids (unique, non-empty strings).
        texts: Texts (``None`` for documents added without one).
        metadata: One dict per document.
        dense: ``[n, d]`` dense vectors (float32 or float16).
        sparse_indptr: ``int64 [n + 1]`` CSR row pointers of the lexical weights.
        sparse_indices: ``int32`` token ids.
        sparse_values: ``float32`` weights.
        colbert: ``float16 [t, c]`` packed ColBERT vectors, or ``None`` without them.
        colbert_offsets: ``int64 [n + 1]`` document ``i`` owns ``colbert[o[i]:o[i + 1]]``.
    """

    ids: list[str]
    texts: list[str | None]
    metadata: list[dict[str, Any]]
    dense: NDArray[Any]
    sparse_indptr: NDArray[np.int64]
    sparse_indices: NDArray[np.int32]
    sparse_values: NDArray[np.float32]
    colbert: NDArray[np.float16] | None = None
    colbert_offsets: NDArray[np.int64] | None = None


def validate_state(state: IndexState, *, dense_dim: int, vocab_size: int,
                   colbert_dim: int | None) -> None:
    """Check everything ``add`` checks, for a whole state, in one vectorized pass.

    Raises:
        ValueError: The first inconsistency found, described.
    """
    n = len(state.ids)
    if not all(isinstance(i, str) and i for i in state.ids):
        raise ValueError("document ids must be non-empty strings")
    if len(set(state.ids)) != n:
        raise ValueError("document ids are not unique")
    if len(state.texts) != n or len(state.metadata) != n:
        raise ValueError(f"{n} ids but {len(state.texts)} texts and {len(state.metadata)} "
                         "metadata entries")
    if not all(t is None or isinstance(t, str) for t in state.texts):
        raise ValueError("texts must be strings or null")
    if not all(isinstance(m, dict) for m in state.metadata):
        raise ValueError("metadata entries must be objects")
    dense = state.dense
    if dense.shape != (n, dense_dim) or dense.dtype not in (np.float32, np.float16):
        raise ValueError(f"dense vectors must be float32/float16 [{n}, {dense_dim}], got "
                         f"{dense.dtype} {list(dense.shape)}")
    finite = (_all_finite_fp16(dense) if dense.dtype == np.float16
              else bool(np.isfinite(dense).all()))
    if not finite:
        raise ValueError("dense vectors contain NaN or infinite values")
    _check_pointers(state.sparse_indptr, n, state.sparse_indices.shape[0], "sparse", 0)
    if state.sparse_values.shape != state.sparse_indices.shape:
        raise ValueError("sparse indices and values differ in length")
    ids = state.sparse_indices
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ValueError(f"sparse token ids outside [0, {vocab_size})")
    if not np.isfinite(state.sparse_values).all():
        raise ValueError("sparse weights contain NaN or infinite values")
    if (state.colbert is None) != (colbert_dim is None) or \
            (state.colbert is None) != (state.colbert_offsets is None):
        raise ValueError("ColBERT vectors and offsets must both be present exactly when the "
                         "index stores ColBERT vectors")
    if state.colbert is not None and state.colbert_offsets is not None:
        if state.colbert.ndim != 2 or state.colbert.shape[1] != colbert_dim \
                or state.colbert.dtype != np.float16:
            raise ValueError(f"ColBERT vectors must be float16 [t, {colbert_dim}], got "
                             f"{state.colbert.dtype} {list(state.colbert.shape)}")
        _check_pointers(state.colbert_offsets, n, state.colbert.shape[0], "ColBERT", 1)
        if not _all_finite_fp16(state.colbert):
            raise ValueError("ColBERT vectors contain NaN or infinite values")


def _check_pointers(pointers: NDArray[Any], n: int, total: int, what: str, least: int) -> None:
    """Row pointers: ``n + 1`` int64 values from 0 to ``total``, steps of at least ``least``."""
    if pointers.shape != (n + 1,) or pointers.dtype != np.int64:
        raise ValueError(f"{what} offsets must be int64 [{n + 1}], got {pointers.dtype} "
                         f"{list(pointers.shape)}")
    if int(pointers[0]) != 0 or int(pointers[-1]) != total:
        raise ValueError(f"{what} offsets must run from 0 to {total}")
    if n and int(np.diff(pointers).min()) < least:
        raise ValueError(f"{what} offsets must increase by at least {least} per document")


def _has_faiss() -> bool:
    try:
        _faiss()
    except ImportError:
        return False
    return True


def _faiss_or_error() -> None:
    _faiss()


def _filter_value(value: Any) -> tuple[str, Any] | None:
    """The posting key of one metadata value: tagged by type, so that ``True != 1``.

    Only strings, ints and bools are matched (as in Qdrant); ``None`` for anything else.
    """
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, str):
        return ("str", value)
    return None


def _posting_keys(value: Any) -> list[tuple[str, Any]]:
    """What a metadata value is found by: itself, or each element of a list or tuple."""
    if isinstance(value, (list, tuple)):
        keys = [_filter_value(v) for v in value]
        return [k for k in keys if k is not None]
    key = _filter_value(value)
    return [] if key is None else [key]


def check_filter(where: Mapping[str, Any] | None) -> dict[str, list[tuple[str, Any]]]:
    """Check a metadata filter; the same rules hold in both index backends.

    A filter maps keys to a value (equality) or a list of values (any of them); all keys
    must match. Values are strings, ints or bools, compared with their type (``True`` does
    not match ``1``); a document whose metadata value is a list matches when any element
    does. An empty list matches nothing.

    Returns:
        ``{key: [typed values]}``.

    Raises:
        TypeError: ``where`` is not a dict, or a key is not a string.
        ValueError: A value that cannot be matched (a float, ``None``, a dict...).

    Example:
        >>> check_filter({"lang": "en", "year": [2023, 2024]})
        {'lang': [('str', 'en')], 'year': [('int', 2023), ('int', 2024)]}
    """
    if where is None:
        return {}
    if not isinstance(where, Mapping):
        raise TypeError(f"filter must be a dict such as {{'lang': 'en', 'year': [2023, 2024]}}, "
                        f"got {type(where).__name__}")
    out: dict[str, list[tuple[str, Any]]] = {}
    for key, wanted in where.items():
        if not isinstance(key, str):
            raise TypeError(f"filter keys must be strings, got {key!r}")
        values = list(wanted) if isinstance(wanted, (list, tuple, set, frozenset)) else [wanted]
        typed = []
        for value in values:
            posting = _filter_value(value)
            if posting is None:
                raise ValueError(f"filter value {value!r} for {key!r} cannot be matched: use "
                                 "strings, ints or bools")
            typed.append(posting)
        out[key] = typed
    return out


class HybridIndex:
    """An embedded hybrid index over BGE-M3's three representations.

    Args:
        model: The :class:`~bgem3.BGEM3` that encodes added texts and queries.
        store_colbert: Keep ColBERT vectors (fp16, packed) for reranking.
        dense_dtype: ``"float32"`` (default) or ``"float16"`` storage for dense vectors.
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
        model: Any,
        *,
        store_colbert: bool = True,
        dense_dtype: str = "float32",
        dense_search: str = "auto",
        ef_search: int = 128,
    ) -> None:
        if dense_search not in ("auto", "exact", "hnsw"):
            raise ValueError(f"dense_search must be 'auto', 'exact' or 'hnsw', got "
                             f"{dense_search!r}")
        if isinstance(ef_search, bool) or not isinstance(ef_search, int) or ef_search < 1:
            raise ValueError(f"ef_search must be a positive int, got {ef_search!r}")
        if isinstance(model, (str, os.PathLike)):
            raise TypeError(f"HybridIndex needs a loaded model (bgem3.BGEM3), got the path "
                            f"{os.fspath(model)!r}; to open a saved index use "
                            "HybridIndex.load(path, model)")
        if not all(hasattr(model, a) for a in ("encode_documents", "dense_dim", "has_heads")):
            raise TypeError(f"HybridIndex needs a bgem3.BGEM3 model, got {type(model).__name__}")
        if dense_dtype not in ("float32", "float16"):
            raise ValueError(f"dense_dtype must be 'float32' or 'float16', got {dense_dtype!r}")
        if not model.has_heads:
            raise ValueError("HybridIndex needs a model with its sparse and ColBERT heads; "
                             f"{model.name!r} was loaded with dense_only=True")
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
        self._meta_postings: dict[str, dict[tuple[str, Any], list[int]]] = {}
        self._snapshot: Snapshot | None = None
        self.dense_search = dense_search
        self.ef_search = ef_search
        self._graph: DenseHNSW | None = None
        if dense_search == "hnsw":
            _faiss_or_error()

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
        ids = _as_ids(ids)
        with self._lock:
            unknown = [i for i in ids if i not in self._row]
            if unknown:
                raise KeyError(f"unknown ids: {unknown[:10]}")
            rows = [self._row[i] for i in ids]
            return [Hit(self._ids[r], float("nan"), {}, self._texts[r], dict(self._metadata[r]))
                    for r in rows]

    # ------------------------------------------------------------------ writing
    def add(
        self,
        texts: Sequence[str] | None,
        ids: Sequence[str] | None = None,
        metadata: Sequence[Mapping[str, Any]] | None = None,
        *,
        embeddings: EncodeOutput | None = None,
        batch_size: int = 256,
        show_progress: bool | None = None,
    ) -> list[str]:
        """Add documents, replacing those whose ids exist already (upsert).

        Texts are encoded in batches (one forward pass for all three outputs) unless
        ``embeddings`` are given (then ``texts`` may be ``None``). The index changes only
        if the whole call succeeds.

        Args:
            texts: Document texts.
            ids: One unique id per document; ``None`` generates random ids.
            metadata: One dict per document (used by search filters).
            embeddings: Precomputed outputs of ``encode_documents`` for these documents,
                with ``dense``, ``sparse`` and (if the index stores them) ``colbert``.
            batch_size: Encoding batch size.
            show_progress: Progress bar while encoding (``None``: for large inputs).

        Returns:
            The ids, in order.

        Raises:
            TypeError: Texts, ids or metadata of the wrong type.
            ValueError: Mismatched lengths, duplicate ids, or embeddings of the wrong
                shape or with NaN values.
        """
        texts = _as_texts(texts)
        n = _count(texts, embeddings)
        doc_ids = [uuid.uuid4().hex for _ in range(n)] if ids is None else _as_ids(ids)
        if len(doc_ids) != n:
            raise ValueError(f"got {n} documents but {len(doc_ids)} ids")
        if len(set(doc_ids)) != n:
            seen: set[str] = set()
            duplicates = sorted({i for i in doc_ids if i in seen or seen.add(i)})  # type: ignore[func-returns-value]
            raise ValueError(f"duplicate ids in one add: {duplicates[:10]}")
        metas = _as_metadata(metadata, n)
        if embeddings is None:
            if texts is None:
                raise TypeError("texts are required unless embeddings are given")
            embeddings = self.model.encode_documents(
                texts, dense=True, sparse=True, colbert=self.store_colbert,
                batch_size=batch_size, show_progress=show_progress,
            )
        dense, sparse, colbert = validate_embeddings(
            embeddings, n, dense_dim=self.dense_dim, vocab_size=self.vocab_size,
            colbert_dim=self.colbert_dim if self.store_colbert else None)
        if self._dense.dtype == np.float16 and n and float(np.abs(dense).max()) > _FP16_MAX:
            raise ValueError("dense vectors exceed the float16 range of this index "
                             "(dense_dtype='float16'): normalise them or use float32")
        text_list: list[str | None] = [None] * n if texts is None else list(texts)
        counts = np.fromiter((len(v) for v in sparse), dtype=np.int64, count=n)
        indices = (np.concatenate([v.indices for v in sparse]).astype(np.int32) if n
                   else np.zeros(0, np.int32))
        values = (np.concatenate([v.values for v in sparse]).astype(np.float32) if n
                  else np.zeros(0, np.float32))
        self._append(doc_ids, text_list, metas, dense, counts, indices, values, colbert)
        return doc_ids

    def add_parquet(self, path: str | os.PathLike[str], *, text_column: str | None = "text",
                    metadata_columns: Sequence[str] = (), batch_rows: int = 8192) -> int:
        """Add the vectors of Parquet files written by ``bgem3.arrow`` / ``bgem3.ray``.

        Streams one batch of ``batch_rows`` rows at a time (never the whole file), checks
        every file's metadata first (another model's vectors are refused before anything
        is added), then adds each batch as :meth:`add` does (upsert by id). A batch with
        bad content raises with the file named; the batches before it stay added.

        Args:
            path: A ``.parquet`` file or a directory of them (read in name order).
            text_column: The column with the texts to store (absent: no texts).
            metadata_columns: Columns to store as each document's metadata.
            batch_rows: Rows per batch.

        Returns:
            The number of rows added.

        Example:
            >>> import tempfile, pathlib, bgem3, bgem3.arrow, pyarrow.parquet as pq
            >>> from bgem3.testing import build_tiny_checkpoint
            >>> model = bgem3.BGEM3(build_tiny_checkpoint(tempfile.mkdtemp()), device="cpu")
            >>> texts = ["a cat", "a dog"]
            >>> out = model.encode_documents(texts, dense=True, sparse=True, colbert=True)
            >>> file = pathlib.Path(tempfile.mkdtemp()) / "v.parquet"
            >>> table = bgem3.arrow.to_arrow(out, ["c", "d"], texts=texts, model=model)
            >>> pq.write_table(table, file)
            >>> bgem3.HybridIndex(model).add_parquet(file)
            2
        """
        from bgem3.arrow import parquet_batches

        added = 0
        for ids, texts, metadata, output in parquet_batches(
                path, self.model, colbert=self.store_colbert, text_column=text_column,
                metadata_columns=metadata_columns, batch_rows=batch_rows):
            self.add(texts, ids=ids, metadata=metadata, embeddings=output)
            added += len(ids)
        return added

    def delete(self, ids: Sequence[str]) -> None:
        """Delete documents by id.

        Raises:
            KeyError: If any id is unknown; then nothing is deleted.
        """
        ids = list(dict.fromkeys(_as_ids(ids)))  # an id given twice is deleted once
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

    def _append(self, ids: list[str], texts: list[str | None], metas: list[dict[str, Any]],
                dense: NDArray[Any], counts: NDArray[np.int64], indices: NDArray[np.int32],
                values: NDArray[np.float32],
                colbert: tuple[NDArray[np.float16], NDArray[np.int64]] | None,
                *, graph: bool = True) -> None:
        """Append validated rows.

        ``counts`` / ``indices`` / ``values`` are the documents' lexical weights in CSR form;
        ``colbert`` is ``(packed vectors, rows per document)``. The packed ColBERT matrix
        must be a fresh array that nobody else changes: large ones are kept as they are.
        Everything that can fail is done before the first change.
        """
        postings = [[(key, k) for key, value in meta.items() for k in _posting_keys(value)]
                    for meta in metas]
        with self._lock:
            start = len(self._ids)
            replaced = [self._row[i] for i in ids if i in self._row]
            self._dense.extend(dense)
            self._sp_indptr.extend(self._sp_indptr.view()[-1] + np.cumsum(counts))
            self._sp_indices.extend(indices)
            self._sp_values.extend(values)
            if colbert is not None:
                packed, lengths = colbert
                self._cb_vectors.extend(packed, owned=True)  # built by us: no copy
                self._cb_offsets.extend(self._cb_offsets.view()[-1] + np.cumsum(lengths))
            alive = np.concatenate([self._alive, np.ones(len(ids), dtype=np.bool_)])
            alive[replaced] = False
            for offset, (doc_id, keys) in enumerate(zip(ids, postings, strict=True)):
                self._row[doc_id] = start + offset
                for key, posting in keys:
                    self._meta_postings.setdefault(key, {}).setdefault(posting, []).append(
                        start + offset)
            self._ids.extend(ids)
            self._texts.extend(texts)
            self._metadata.extend(metas)
            self._alive = alive
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
                                           and _has_faiss()):
            graph = DenseHNSW(self.dense_dim, ef_search=self.ef_search)
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
    def from_state(cls, model: Any, state: IndexState, *, dense_search: str = "auto",
                   ef_search: int = 128, graph: DenseHNSW | None = None) -> HybridIndex:
        """An index holding ``state`` (from :meth:`state`, or read from disk), checked first.

        Args:
            model: The model of the index.
            state: Its contents.
            dense_search: As in the constructor.
            ef_search: As in the constructor.
            graph: An HNSW graph over exactly ``state.dense`` (a saved one), used instead
                of building it again.

        Raises:
            ValueError: The state is inconsistent or does not fit ``model`` (the message
                says what); nothing is built then.
        """
        store_colbert = state.colbert is not None
        index = cls(model, store_colbert=store_colbert, dense_dtype=str(state.dense.dtype),
                    dense_search=dense_search, ef_search=ef_search)
        validate_state(state, dense_dim=index.dense_dim, vocab_size=index.vocab_size,
                       colbert_dim=index.colbert_dim)
        if graph is not None and (len(graph) != len(state.ids) or graph.dim != index.dense_dim):
            raise ValueError(f"the HNSW graph holds {len(graph)} vectors of width {graph.dim}, "
                             f"the index {len(state.ids)} of width {index.dense_dim}")
        colbert = None
        if state.colbert is not None and state.colbert_offsets is not None:
            colbert = (state.colbert, np.diff(state.colbert_offsets))
        index._append(list(state.ids), list(state.texts), [dict(m) for m in state.metadata],
                      state.dense, np.diff(state.sparse_indptr), state.sparse_indices,
                      state.sparse_values, colbert, graph=graph is None)
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
                                           ef_search=self.ef_search)
            for name in ("_ids", "_texts", "_metadata", "_row", "_alive", "_dense",
                         "_sp_indptr", "_sp_indices", "_sp_values", "_cb_vectors",
                         "_cb_offsets", "_meta_postings", "_graph"):
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

        Raises:
            FileExistsError: ``path`` is a file or a non-empty directory of something else.
            TypeError: Metadata that JSON cannot represent.
        """
        from bgem3.index._persist import save_index

        save_index(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], model: Any) -> HybridIndex:
        """Load an index saved by :meth:`save`, for use with ``model``.

        Raises:
            FileNotFoundError: No directory at ``path``.
            IndexFormatError: Not a bgem3 index, corrupt or truncated files, an unknown
                format version, or a different model than the one that built the index.
        """
        from bgem3.index._persist import load_index

        return load_index(path, model)

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
                )
            return self._snapshot

    def _filter_mask(self, snap: Snapshot, where: Mapping[str, Any] | None) -> NDArray[np.bool_]:
        mask: NDArray[np.bool_] = snap.alive.copy()
        for key, wanted in check_filter(where).items():
            postings = self._meta_postings.get(key, {})
            keep = np.zeros(snap.n, dtype=np.bool_)
            for posting in wanted:
                rows = np.asarray(postings.get(posting, ()), dtype=np.int64)
                keep[rows[rows < snap.n]] = True
            mask &= keep
        return mask

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        mode: Mode = "hybrid",
        fusion: Fusion = "weighted",
        weights: Sequence[float] = DEFAULT_WEIGHTS,
        candidates: int = 100,
        rerank: bool | None = None,
        filter: Mapping[str, Any] | None = None,
        rrf_k: int = RRF_K,
    ) -> list[Hit]:
        """Search with one query; see :meth:`search_batch` for the arguments."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        return self.search_batch([query], k, mode=mode, fusion=fusion, weights=weights,
                                 candidates=candidates, rerank=rerank, filter=filter,
                                 rrf_k=rrf_k)[0]

    def search_batch(
        self,
        queries: Sequence[str],
        k: int = 10,
        *,
        mode: Mode = "hybrid",
        fusion: Fusion = "weighted",
        weights: Sequence[float] = DEFAULT_WEIGHTS,
        candidates: int = 100,
        rerank: bool | None = None,
        filter: Mapping[str, Any] | None = None,
        rrf_k: int = RRF_K,
    ) -> list[list[Hit]]:
        """Search with many queries (encoded in one batch).

        Args:
            queries: Query texts.
            k: Hits per query (fewer if fewer documents match).
            mode: Candidate source: ``"hybrid"`` (dense and sparse top lists),
                ``"dense"`` or ``"sparse"``.
            fusion: ``"weighted"``: FlagEmbedding's weighted average of the per-mode
                scores, ``sum(w_m * s_m) / sum(w_m)`` over the modes in use; ``"rrf"``:
                reciprocal rank fusion ``sum(1 / (rrf_k + rank_m))``, where each mode ranks
                its own candidate list (ColBERT ranks the whole pool).
            weights: ``(w_dense, w_sparse, w_colbert)``; the BGE-M3 README's
                ``(0.4, 0.2, 0.4)`` by default.
            candidates: Documents taken from each of the dense and sparse lists (at
                least ``k``).
            rerank: Score candidates with ColBERT; ``None`` means yes when the index
                stores ColBERT vectors.
            filter: Metadata conditions, all of which must hold, applied before top-k:
                ``{"lang": "en"}`` (equality) or ``{"year": [2023, 2024]}`` (in).
            rrf_k: The constant of reciprocal rank fusion (60, as in the RRF paper).

        Returns:
            One list of :class:`~bgem3.Hit` per query, best first.

        Raises:
            ValueError: ``k`` or ``candidates`` below 1, an unknown mode or fusion, or
                reranking requested from an index without ColBERT vectors.
        """
        if isinstance(queries, str):
            raise TypeError("queries must be a list of strings; use search() for one query")
        texts = list(queries)
        use_colbert = self._check_search(k, mode, fusion, candidates, rerank, weights, rrf_k)
        encoded = self.model.encode_queries(texts, dense=True, sparse=True, colbert=use_colbert)
        return self.search_encoded(encoded, k, mode=mode, fusion=fusion, weights=weights,
                                   candidates=candidates, rerank=use_colbert, filter=filter,
                                   rrf_k=rrf_k)

    def _check_search(self, k: int, mode: str, fusion: str, candidates: int,
                      rerank: bool | None, weights: Sequence[float], rrf_k: int = RRF_K) -> bool:
        check_search_args(k, mode, fusion, candidates, weights, ("weighted", "rrf"), rrf_k)
        if rerank and not self.store_colbert:
            raise ValueError("rerank=True needs an index built with store_colbert=True")
        return self.store_colbert if rerank is None else rerank

    def search_encoded(
        self,
        queries: EncodeOutput,
        k: int = 10,
        *,
        mode: Mode = "hybrid",
        fusion: Fusion = "weighted",
        weights: Sequence[float] = DEFAULT_WEIGHTS,
        candidates: int = 100,
        rerank: bool | None = None,
        filter: Mapping[str, Any] | None = None,
        rrf_k: int = RRF_K,
    ) -> list[list[Hit]]:
        """Search with queries encoded already (``encode_queries`` output).

        Takes the arguments of :meth:`search_batch`; use it to embed once and search often.
        """
        use_colbert = self._check_search(k, mode, fusion, candidates, rerank, weights, rrf_k)
        snap = self.snapshot()
        return [_hits(snap, pool, pool.fuse(fusion, weights, rrf_k), k)
                for pool in self._pools(snap, queries, k, mode, candidates, use_colbert, filter)]

    def score_candidates(
        self,
        queries: EncodeOutput,
        k: int = 10,
        *,
        mode: Mode = "hybrid",
        candidates: int = 100,
        rerank: bool | None = None,
        filter: Mapping[str, Any] | None = None,
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
        use_colbert = self._check_search(k, mode, "weighted", candidates, rerank, DEFAULT_WEIGHTS)
        return list(self._pools(self.snapshot(), queries, k, mode, candidates, use_colbert,
                                filter))

    def _pools(self, snap: Snapshot, queries: EncodeOutput, k: int, mode: str,
               candidates: int, use_colbert: bool, filter: Mapping[str, Any] | None
               ) -> Iterator[CandidatePool]:
        """Each query's pool; the dense matrix is read once per block of queries."""
        dense, sparse = _check_queries(queries, self.dense_dim,
                                       self.colbert_dim if use_colbert else None)
        mask = self._filter_mask(snap, filter)
        empty = CandidatePool(np.zeros(0, np.int64), [], {}, {})
        candidates = max(candidates, k)  # each list must be able to fill the k hits
        for start in range(0, len(queries), _QUERY_BLOCK):
            stop = min(start + _QUERY_BLOCK, len(queries))
            if not mask.any():
                yield from (empty for _ in range(start, stop))
                continue
            dense_tops = None
            if mode in ("hybrid", "dense"):
                graph = self._graph
                if graph is not None:
                    with self._lock:  # faiss must not search while a writer adds
                        dense_tops = graph.search(dense[start:stop], candidates, mask)
                else:
                    dense_tops = _dense_candidates(snap.dense, dense[start:stop], mask,
                                                   candidates)
            for j in range(stop - start):
                i = start + j
                query = _Query(
                    dense=np.asarray(dense[i], dtype=np.float32),
                    sparse=_clip(sparse[i], self.vocab_size),
                    colbert=(np.asarray(queries.colbert[i], dtype=np.float32)
                             if use_colbert and queries.colbert else None))
                yield self._pool(snap, mask, query,
                                 None if dense_tops is None else dense_tops[j], mode, candidates)

    def _pool(
        self,
        snap: Snapshot,
        mask: NDArray[np.bool_],
        query: _Query,
        dense_top: NDArray[np.int64] | None,
        mode: str,
        candidates: int,
    ) -> CandidatePool:
        """The candidates of one query with their exact per-mode scores."""
        pools = []
        if dense_top is not None:
            pools.append(dense_top)
        sparse_all = None
        if mode in ("hybrid", "sparse"):
            # lexical scores of every document: only the query tokens' postings are read
            sparse_all = _sparse_scores(snap, query.sparse)
            matching = np.flatnonzero((sparse_all > 0) & mask)
            pools.append(matching[_top(sparse_all[matching], candidates)])
        pool = np.unique(np.concatenate(pools))
        used = [m for m in ("dense", "sparse") if m == mode or mode == "hybrid"]
        lists = dict(zip(used, pools, strict=True))
        # exact per-mode scores of the pool (fp16 dense storage widened to fp32 here)
        per_mode: dict[str, NDArray[np.float32]] = {
            "dense": _pool_dense_scores(snap.dense.take(pool), query.dense),
            "sparse": (sparse_all[pool] if sparse_all is not None
                       else _sparse_scores(snap, query.sparse, rows=pool)),
        }
        if (query.colbert is not None and snap.colbert is not None
                and snap.colbert_offsets is not None and pool.size):
            starts, ends = snap.colbert_offsets[pool], snap.colbert_offsets[pool + 1]
            per_mode["colbert"] = _colbert_scores(query.colbert, snap.colbert,
                                                  row_ranges(starts, ends), ends - starts)
            lists["colbert"] = pool  # ColBERT reranks the whole pool
        return CandidatePool(rows=pool, ids=[snap.ids[r] for r in pool], scores=per_mode,
                             lists=lists)


@dataclass(frozen=True)
class CandidatePool:
    """The documents one search scores, with the exact scores that search fuses.

    Attributes:
        rows: Storage rows of the pool, ascending (the union of the candidate lists).
        ids: Their document ids.
        scores: ``float32`` per-mode scores of the pool: ``"dense"`` and ``"sparse"``
            always, ``"colbert"`` when the search reranks.
        lists: The rows each mode in use contributed (its own ranking for RRF); ColBERT,
            when used, ranks the whole pool.
    """

    rows: NDArray[np.int64]
    ids: list[str]
    scores: dict[str, NDArray[np.float32]]
    lists: dict[str, NDArray[np.int64]]

    def fuse(self, fusion: str, weights: Sequence[float], rrf_k: float = RRF_K
             ) -> NDArray[np.float64]:
        """Fused scores of the pool, as :meth:`HybridIndex.search` ranks them."""
        if self.rows.size == 0:
            return np.zeros(0)
        names = [m for m in ("dense", "sparse", "colbert") if m in self.lists]
        values = [self.scores[m] for m in names]
        if fusion == "rrf":
            members = [np.isin(self.rows, self.lists[m]) for m in names]
            return rrf_fuse(values, members, rrf_k)
        w = dict(zip(("dense", "sparse", "colbert"), weights, strict=True))
        return weighted_fuse(values, [w[m] for m in names])


@dataclass(frozen=True)
class _Query:
    dense: NDArray[np.float32]
    sparse: SparseVector
    colbert: NDArray[np.float32] | None


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


_QUERY_BLOCK = 64


def _all_finite_fp16(values: NDArray[np.float16], rows: int = 1024) -> bool:
    """Whether no value is inf or NaN (the fp16 values whose exponent bits are all ones).

    Checked in cache-sized chunks: 8x faster than ``np.isfinite`` on a large fp16 array.
    """
    bits = values.view(np.uint16)
    return not any(((bits[i : i + rows] & 0x7C00) == 0x7C00).any()
                   for i in range(0, bits.shape[0], rows))


def _clip(vector: SparseVector, vocab_size: int) -> SparseVector:
    keep = vector.indices < vocab_size
    return vector if keep.all() else SparseVector._unchecked(vector.indices[keep],
                                                             vector.values[keep])


def _dense_scores(dense: Rows, queries: NDArray[np.float32],
                  chunk: int = 65536) -> NDArray[np.float32]:
    """``queries @ dense.T`` as ``float32 [m, n]``, reading ``dense`` once, in row chunks.

    All matrix products of the index run in torch: alternating between numpy's BLAS
    threads and torch's makes both wait for each other (a hybrid query took 1.7x longer).
    fp16 storage is multiplied in fp16, as these scores only pick candidates (the pool is
    re-scored exactly): widening every chunk first costs 3x more than the product.
    """
    import torch

    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    if dense.dtype == np.float16:
        q = q.half()
    out = np.empty((q.shape[0], len(dense)), dtype=np.float32)
    scores = torch.from_numpy(out)
    start = 0
    for block in dense.blocks:
        for i in range(0, len(block), chunk):
            part = torch.from_numpy(block[i : i + chunk])
            if q.dtype == torch.float32:
                torch.mm(q, part.T, out=scores[:, start : start + part.shape[0]])
            else:
                scores[:, start : start + part.shape[0]] = q @ part.T
            start += part.shape[0]
    return out


def _pool_dense_scores(vectors: NDArray[Any], query: NDArray[np.float32]) -> NDArray[np.float32]:
    """Exact fp32 dense scores of a few stored vectors (torch: see :func:`_dense_scores`)."""
    import torch

    scores = torch.from_numpy(vectors).float() @ torch.from_numpy(query)
    return scores.numpy()


def _colbert_scores(query: NDArray[np.float32], colbert: Rows, rows: NDArray[np.int64],
                    lengths: NDArray[np.int64]) -> NDArray[np.float32]:
    """MaxSim of one query against the documents whose packed vectors are ``rows``.

    The fp16 vectors are widened and multiplied by torch: 3x faster than numpy here.
    """
    import torch

    vectors = torch.from_numpy(colbert.take(rows)).float()
    q = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32))
    return segment_maxsim((q @ vectors.T).numpy(), lengths)


def _dense_candidates(dense: Rows, queries: NDArray[np.float32], mask: NDArray[np.bool_],
                      candidates: int) -> list[NDArray[np.int64]]:
    """Each query's top ``candidates`` rows by dense score among the ``mask`` rows."""
    import torch

    scores = _dense_scores(dense, queries)
    if not mask.all():
        scores[:, ~mask] = -np.inf
    # torch.topk: 4x faster than numpy's argpartition over a million scores
    values, rows = torch.topk(torch.from_numpy(scores), min(candidates, scores.shape[1]), dim=1)
    keep = torch.isfinite(values).numpy()
    return [r[f] for r, f in zip(rows.numpy(), keep, strict=True)]


def _top(scores: NDArray[np.floating], k: int) -> NDArray[np.int64]:
    """Indices of the ``k`` largest scores, best first (``argpartition``, then sort k)."""
    if scores.size <= k:
        return np.argsort(-scores, kind="stable")
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")]


def _hits(snap: Snapshot, pool: CandidatePool, fused: NDArray[np.float64], k: int
          ) -> list[Hit]:
    """The ``k`` best of a pool as hits, best first."""
    hits = []
    for j in _top(fused, k):
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
                      weights: Sequence[float], fusions: Sequence[str], rrf_k: int = RRF_K
                      ) -> None:
    """Validate the search arguments both backends share; raise ``ValueError`` if wrong."""
    if isinstance(rrf_k, bool) or not isinstance(rrf_k, int) or rrf_k < 1:
        raise ValueError(f"rrf_k must be a positive int, got {rrf_k!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
        raise ValueError(f"candidates must be a positive int, got {candidates!r}")
    if mode not in ("hybrid", "dense", "sparse"):
        raise ValueError(f"mode must be 'hybrid', 'dense' or 'sparse', got {mode!r}")
    if fusion not in fusions:
        raise ValueError(f"fusion must be one of {', '.join(map(repr, fusions))}, got {fusion!r}")
    fuse_scores(0.0, 0.0, 0.0, weights)  # validates the weights


def validate_embeddings(
    emb: EncodeOutput, n: int, *, dense_dim: int, vocab_size: int, colbert_dim: int | None
) -> tuple[NDArray[np.float32], list[SparseVector],
           tuple[NDArray[np.float16], NDArray[np.int64]] | None]:
    """Check precomputed document outputs before anything is stored (both backends use it).

    Args:
        emb: ``encode_documents`` output for ``n`` documents.
        n: Number of documents.
        dense_dim: Expected dense width.
        vocab_size: Token ids must lie below this.
        colbert_dim: Expected ColBERT width, or ``None`` when ColBERT is not stored.

    Returns:
        The dense matrix (fp32), the sparse vectors, and for ColBERT the packed fp16
        vectors with the row count of each document (or ``None``).

    Raises:
        ValueError: A missing output, a wrong shape, an id outside the vocabulary, or a
            NaN / infinite value.
    """
    if emb.dense is None or emb.sparse is None:
        raise ValueError("embeddings need dense and sparse outputs")
    dense = np.asarray(emb.dense, dtype=np.float32)
    if dense.shape != (n, dense_dim):
        raise ValueError(f"dense embeddings must have shape ({n}, {dense_dim}), "
                         f"got {dense.shape}")
    if not np.isfinite(dense).all():
        raise ValueError("dense embeddings contain NaN or infinite values")
    if len(emb.sparse) != n:
        raise ValueError(f"expected {n} sparse vectors, got {len(emb.sparse)}")
    for i, vector in enumerate(emb.sparse):
        if not isinstance(vector, SparseVector):
            raise TypeError(f"sparse vector {i} is a {type(vector).__name__}, not a "
                            "bgem3.SparseVector (FlagEmbedding's lexical_weights dicts convert "
                            "with SparseVector.from_dict)")
    if n:  # checked on the concatenation: one numpy call per check, not per document
        ids = np.concatenate([v.indices for v in emb.sparse])
        if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
            raise ValueError(f"sparse vectors hold token ids outside [0, {vocab_size})")
        if not np.isfinite(np.concatenate([v.values for v in emb.sparse])).all():
            raise ValueError("sparse vectors contain NaN or infinite values")
    colbert = None
    if colbert_dim is not None:
        if emb.colbert is None or len(emb.colbert) != n:
            raise ValueError(f"this index stores ColBERT vectors: expected {n} arrays")
        for i, a in enumerate(emb.colbert):
            if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] != colbert_dim:
                raise ValueError(f"ColBERT array {i} must have shape (t >= 1, "
                                 f"{colbert_dim}), got {a.shape}")
        lengths = np.fromiter((a.shape[0] for a in emb.colbert), np.int64, n)
        packed = (np.concatenate(emb.colbert).astype(np.float16, copy=False) if n
                  else np.zeros((0, colbert_dim), np.float16))
        if not _all_finite_fp16(packed):
            raise ValueError("ColBERT arrays contain NaN or infinite values (or values "
                             "beyond the fp16 range)")
        colbert = (packed, lengths)
    return dense, list(emb.sparse), colbert


def _as_texts(texts: Any) -> list[str] | None:
    """Texts as a list: a list, tuple, numpy array of strings or any iterable of them."""
    if texts is None:
        return None
    if isinstance(texts, (str, bytes, Mapping)):
        raise TypeError(f"texts must be a list of strings, got {type(texts).__name__}")
    if isinstance(texts, np.ndarray):
        texts = texts.tolist()
    if not isinstance(texts, Iterable):
        raise TypeError(f"texts must be a list of strings, got {type(texts).__name__}")
    return list(texts)


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


def _count(texts: Sequence[str] | None, embeddings: EncodeOutput | None) -> int:
    if texts is not None:
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise TypeError(f"texts must be a list of strings, got {type(texts).__name__}")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] must be a str, got {type(text).__name__}")
        if embeddings is not None and len(embeddings) != len(texts):
            raise ValueError(f"got {len(texts)} texts but embeddings for {len(embeddings)}")
        return len(texts)
    if embeddings is None:
        raise TypeError("texts are required unless embeddings are given")
    return len(embeddings)


def _as_ids(ids: Iterable[str]) -> list[str]:
    if isinstance(ids, (str, bytes, Mapping)) or not isinstance(ids, Iterable):
        raise TypeError(f"ids must be a list of strings, got {type(ids).__name__}")
    out = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
    for i, doc_id in enumerate(out):
        if not isinstance(doc_id, str) or not doc_id:
            raise TypeError(f"ids[{i}] must be a non-empty str, got {doc_id!r}")
    return out


def _as_metadata(metadata: Sequence[Mapping[str, Any]] | None, n: int) -> list[dict[str, Any]]:
    if metadata is None:
        return [{} for _ in range(n)]
    if isinstance(metadata, Mapping) or len(metadata) != n:
        raise ValueError(f"metadata must be a list of {n} dicts, one per document")
    out = []
    for i, meta in enumerate(metadata):
        if not isinstance(meta, Mapping):
            raise TypeError(f"metadata[{i}] must be a dict, got {type(meta).__name__}")
        out.append(dict(meta))
    return out
