"""``QdrantHybridIndex``: the embedded index's API on a Qdrant collection.

One collection holds, per document, a named dense vector (cosine), a sparse vector
(dot product) and, optionally, a ColBERT multivector (``MAX_SIM``). A search is one
``query_points`` call: dense and sparse prefetches, then either a ColBERT rerank of their
union or a server-side fusion (RRF or DBSF). Works with ``QdrantClient(":memory:")`` or
``path=`` (embedded) and with a server (``QdrantClient(url=...)``).

Install with ``pip install "bgem3[qdrant]"``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from bgem3._inputs import as_ids
from bgem3._types import EncodeOutput, Encoder, Hit, SparseVector
from bgem3.index.base import ParquetLoad, SearchIndex, check_encoder
from bgem3.index.filters import check_filter
from bgem3.index.options import Fusion, SearchOptions
from bgem3.index.pool import CandidatePool
from bgem3.index.state import validate_embeddings
from bgem3.scoring import lexical_matching_score

__all__ = ["QdrantHybridIndex"]

# Qdrant point ids must be ints or UUIDs: document ids map to UUID5s in this namespace.
_NAMESPACE = uuid.UUID("8c4f3b4e-2d7a-5f0e-9b1c-6a2e0d3f4b51")
DENSE, SPARSE, COLBERT = "dense", "sparse", "colbert"
QdrantFusion = Fusion
"""Kept for code that imported it; the fusions are declared in ``bgem3.index.options``."""


def _import_qdrant() -> Any:
    try:
        import qdrant_client
    except ImportError as exc:
        raise ImportError(
            'the Qdrant backend needs qdrant-client: pip install "bgem3[qdrant]"'
        ) from exc
    return qdrant_client


def _point_id(doc_id: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, doc_id))


class QdrantHybridIndex(SearchIndex):
    """Hybrid search on Qdrant with the same methods as :class:`~bgem3.HybridIndex`.

    Args:
        model: The :class:`~bgem3.BGEM3` that encodes texts and queries.
        client: A ``qdrant_client.QdrantClient``; ``None`` makes an in-memory one.
        collection: Collection name; created if missing, checked if present.
        store_colbert: Store ColBERT multivectors and rerank with them.

    Example (tested in ``tests/core/test_qdrant.py``)::

        from qdrant_client import QdrantClient
        index = QdrantHybridIndex(model, QdrantClient(path="./qdrant-data"))
        index.add(texts, metadata=metadata)
        hits = index.search("query", k=5, filter={"lang": "en"})
    """

    fusions: ClassVar[tuple[str, ...]] = ("weighted", "rrf", "dbsf")

    def __init__(
        self,
        model: Encoder,
        client: Any = None,
        collection: str = "bgem3",
        *,
        store_colbert: bool = True,
    ) -> None:
        qdrant = _import_qdrant()
        from qdrant_client import models

        self._models = models
        self.model = check_encoder(model, "QdrantHybridIndex")
        self.client = client if client is not None else qdrant.QdrantClient(":memory:")
        self.collection = collection
        self.store_colbert = store_colbert
        if self.client.collection_exists(collection):
            self._check_collection()
        else:
            vectors = {DENSE: models.VectorParams(size=model.dense_dim,
                                                  distance=models.Distance.COSINE)}
            if store_colbert and model.colbert_dim is not None:  # a model with heads has it
                vectors[COLBERT] = models.VectorParams(
                    size=model.colbert_dim, distance=models.Distance.DOT,
                    multivector_config=models.MultiVectorConfig(
                        comparator=models.MultiVectorComparator.MAX_SIM),
                )
            self.client.create_collection(
                collection, vectors_config=vectors,
                sparse_vectors_config={SPARSE: models.SparseVectorParams()},
            )

    def _check_collection(self) -> None:
        info = self.client.get_collection(self.collection)
        vectors = info.config.params.vectors
        if not isinstance(vectors, dict) or DENSE not in vectors:
            raise ValueError(f"collection {self.collection!r} was not made by bgem3")
        if vectors[DENSE].size != self.model.dense_dim:
            raise ValueError(
                f"collection {self.collection!r} holds {vectors[DENSE].size}-d dense vectors, "
                f"the model makes {self.model.dense_dim}-d ones"
            )
        if self.store_colbert and COLBERT not in vectors:
            raise ValueError(f"collection {self.collection!r} has no ColBERT vectors; "
                             "pass store_colbert=False")

    # ------------------------------------------------------------------ writing
    def __len__(self) -> int:
        return int(self.client.count(self.collection, exact=True).count)

    def _store(self, texts: list[str] | None, doc_ids: list[str],
               metas: list[dict[str, Any]], embeddings: EncodeOutput, batch_size: int) -> None:
        points = self._points(texts, doc_ids, metas, embeddings)
        for start in range(0, len(doc_ids), batch_size):
            self.client.upsert(self.collection, points=points[start : start + batch_size])

    def _points(self, texts: Sequence[str] | None, doc_ids: list[str],
                metas: list[dict[str, Any]], embeddings: EncodeOutput) -> list[Any]:
        """Validated outputs as Qdrant points (payload: id, text, metadata)."""
        n = len(doc_ids)
        dense, sparse, _ = validate_embeddings(
            embeddings, n, dense_dim=self.model.dense_dim, vocab_size=self.model.vocab_size,
            colbert_dim=self.model.colbert_dim if self.store_colbert else None)
        models = self._models
        points = []
        for i in range(n):
            vector: dict[str, Any] = {
                DENSE: dense[i].tolist(),
                SPARSE: models.SparseVector(indices=sparse[i].indices.tolist(),
                                            values=sparse[i].values.tolist()),
            }
            if self.store_colbert and embeddings.colbert is not None:
                vector[COLBERT] = embeddings.colbert[i].tolist()
            payload = {"doc_id": doc_ids[i], "text": None if texts is None else texts[i],
                       "metadata": metas[i]}
            points.append(models.PointStruct(id=_point_id(doc_ids[i]), vector=vector,
                                             payload=payload))
        return points

    def add_parquet(self, path: str | os.PathLike[str], *, text_column: str | None = "text",
                    metadata_columns: Sequence[str] = (), batch_rows: int = 8192,
                    parallel: int = 4, bulk: bool = True) -> ParquetLoad:
        """Bulk-load Parquet vectors; see :meth:`bgem3.HybridIndex.add_parquet`.

        All or nothing as far as the client can make it: a first pass reads every file
        and checks every batch as :meth:`add` does (and counts the ids the collection
        holds already) without keeping them; only then does a second pass read the files
        again and upload. A bad row anywhere therefore adds nothing, at the cost of
        reading (decoding) the files twice; memory stays one batch plus the set of ids.
        Qdrant has no transactions: a server that fails during the upload can keep the
        points it took.

        Points go up with ``upload_points`` in ``parallel`` processes (a server; local mode
        uploads in-process). With ``bulk``, the load follows Qdrant's advice for bulk
        uploads: HNSW indexing is switched off (``indexing_threshold=0``) while points
        arrive, and the collection's previous threshold is restored afterwards, so the
        index is built once at the end instead of during the upload.

        Returns:
            The documents added, an ``int`` with ``replaced`` (upserts) and ``rows``.
        """
        models = self._models
        replaced = rows = 0
        for _, ids, _, output in self._parquet_documents(path, text_column, metadata_columns,
                                                         batch_rows):
            validate_embeddings(output, len(ids), dense_dim=self.model.dense_dim,
                                vocab_size=self.model.vocab_size,
                                colbert_dim=self.model.colbert_dim if self.store_colbert
                                else None)
            replaced += len(self.client.retrieve(self.collection, [_point_id(i) for i in ids],
                                                 with_payload=False, with_vectors=False))
            rows += len(ids)
        info = self.client.get_collection(self.collection)
        threshold = getattr(info.config.optimizer_config, "indexing_threshold", None)
        local = type(getattr(self.client, "_client", None)).__name__ == "QdrantLocal"
        if bulk and not local:
            self.client.update_collection(
                self.collection, optimizers_config=models.OptimizersConfigDiff(
                    indexing_threshold=0))
        try:
            for texts, ids, metadata, output in self._parquet_documents(
                    path, text_column, metadata_columns, batch_rows):
                points = self._points(texts, ids, metadata, output)
                self.client.upload_points(self.collection, points, batch_size=256,
                                          parallel=1 if local else parallel, wait=True)
        finally:
            if bulk and not local:
                self.client.update_collection(
                    self.collection, optimizers_config=models.OptimizersConfigDiff(
                        indexing_threshold=threshold if threshold is not None else 10000))
        return ParquetLoad(added=rows - replaced, replaced=replaced)

    def delete(self, ids: Sequence[str]) -> None:
        """Delete documents; unknown ids raise ``KeyError`` and nothing is deleted."""
        ids = as_ids(ids)
        found = {p.payload["doc_id"] for p in self.client.retrieve(
            self.collection, [_point_id(i) for i in ids], with_payload=True)}
        unknown = [i for i in ids if i not in found]
        if unknown:
            raise KeyError(f"unknown ids, nothing deleted: {unknown[:10]}")
        self.client.delete(self.collection, points_selector=self._models.PointIdsList(
            points=[_point_id(i) for i in ids]))

    def get(self, ids: Sequence[str]) -> list[Hit]:
        """Stored documents by id; unknown ids raise ``KeyError``."""
        ids = as_ids(ids)
        points = {p.payload["doc_id"]: p for p in self.client.retrieve(
            self.collection, [_point_id(i) for i in ids], with_payload=True)}
        unknown = [i for i in ids if i not in points]
        if unknown:
            raise KeyError(f"unknown ids: {unknown[:10]}")
        return [Hit(i, float("nan"), {}, points[i].payload["text"],
                    dict(points[i].payload["metadata"])) for i in ids]

    # ------------------------------------------------------------------ searching
    def search_options(self, options: SearchOptions | None = None, **changes: Any
                       ) -> SearchOptions:
        """Checked options; ``"dbsf"`` needs ``mode="hybrid"`` and no rerank (see base)."""
        checked = super().search_options(options, **changes)
        if checked.fusion == "dbsf" and (checked.rerank or checked.mode != "hybrid"):
            raise ValueError("fusion='dbsf' fuses the dense and sparse lists on the server: "
                             "it needs mode='hybrid' and rerank=False (or use fusion "
                             "'weighted' or 'rrf')")
        return checked

    def _search_encoded(self, queries: EncodeOutput, options: SearchOptions
                        ) -> list[list[Hit]]:
        """One ``query_batch_points`` call: a request per query.

        Each request holds dense and sparse prefetches of ``candidates`` each, then, with
        ``rerank``, the ColBERT multivector scores their union on the server. ``"weighted"``
        and ``"rrf"`` fuse the per-mode scores of the pool exactly as
        :class:`~bgem3.HybridIndex` does, so both backends rank alike; in hybrid mode
        without rerank, ``"rrf"`` and ``"dbsf"`` fuse on the server instead, which then
        returns only ``k`` points per query.
        """
        use_colbert = bool(options.rerank)
        k, mode, fusion = options.k, options.mode, options.fusion
        if queries.dense is None or queries.sparse is None:
            raise ValueError("encoded queries need dense and sparse outputs")
        if use_colbert and queries.colbert is None:
            raise ValueError("reranking needs the queries' ColBERT vectors")
        if len(queries) == 0:
            return []
        candidates = max(options.candidates, k)  # each list must be able to fill the k hits
        # the pool and its per-mode scores come back, and we fuse them, unless the server
        # fuses (RRF or DBSF over the two prefetches, no rerank)
        on_client = fusion == "weighted" or use_colbert or mode != "hybrid"
        where = self._filter(options.filter)
        if where is False:  # an empty list of allowed values matches nothing
            return [[] for _ in range(len(queries))]
        requests = [self._request(queries, i, mode, candidates, k, use_colbert, on_client, fusion,
                                  where, options.rrf_k) for i in range(len(queries))]
        responses = self.client.query_batch_points(self.collection, requests=requests)
        results = []
        for i, response in enumerate(responses):
            hits = [self._scored(point, queries, i, use_colbert) for point in response.points]
            if on_client:
                hits = _fuse_pool(hits, k, mode, fusion, options.weights, candidates,
                                  options.rrf_k)
            results.append(hits)
        return results

    def _request(self, q: EncodeOutput, i: int, mode: str, candidates: int, k: int,
                 use_colbert: bool, on_client: bool, fusion: str, where: Any,
                 rrf_k: int) -> Any:
        models = self._models
        sparse = q.sparse[i]  # type: ignore[index]
        sparse_q = models.SparseVector(indices=sparse.indices.tolist(),
                                       values=sparse.values.tolist())
        prefetch = []
        if mode in ("hybrid", "dense"):
            prefetch.append(models.Prefetch(query=q.dense[i].tolist(), using=DENSE,  # type: ignore[index]
                                            limit=candidates, filter=where))
        if mode in ("hybrid", "sparse"):
            prefetch.append(models.Prefetch(query=sparse_q, using=SPARSE, limit=candidates,
                                            filter=where))
        request: dict[str, Any]
        if use_colbert:  # the server scores the whole union by MaxSim
            request = {"query": q.colbert[i].tolist(), "using": COLBERT, "prefetch": prefetch}  # type: ignore[index]
        elif len(prefetch) == 1:  # one list: its top candidates
            request = {"query": prefetch[0].query, "using": prefetch[0].using}
        elif on_client:  # any fusion just to get the union back
            request = {"query": models.FusionQuery(fusion=models.Fusion.RRF),
                       "prefetch": prefetch}
        elif fusion == "rrf":  # Qdrant's RRF is 1 / (k' + rank) with 0-based ranks
            request = {"query": models.RrfQuery(rrf=models.Rrf(k=rrf_k + 1)),
                       "prefetch": prefetch}
        else:
            request = {"query": models.FusionQuery(fusion=models.Fusion.DBSF),
                       "prefetch": prefetch}
        limit = candidates * len(prefetch) if on_client else k
        return models.QueryRequest(filter=where, limit=limit, with_payload=True,
                                   with_vector=[DENSE, SPARSE], **request)

    def _scored(self, point: Any, q: EncodeOutput, i: int, use_colbert: bool) -> Hit:
        """A hit with the server's score and per-mode scores from the point's vectors."""
        vectors = point.vector
        scores = {DENSE: float(np.dot(q.dense[i], vectors[DENSE]))}  # type: ignore[index]
        sparse = vectors.get(SPARSE)
        doc = SparseVector(np.asarray(sparse.indices if sparse else [], np.int64),
                           np.asarray(sparse.values if sparse else [], np.float32))
        scores[SPARSE] = lexical_matching_score(q.sparse[i], doc)  # type: ignore[index]
        if use_colbert:  # Qdrant's MAX_SIM sums over query tokens; BGE-M3 averages
            scores[COLBERT] = float(point.score) / len(q.colbert[i])  # type: ignore[index]
        payload = point.payload
        return Hit(payload["doc_id"], float(point.score), scores, payload["text"],
                   dict(payload["metadata"]))

    def _filter(self, where: Mapping[str, Any] | None) -> Any:
        """The Qdrant filter of ``where``; ``False`` when it can match nothing.

        The rules of :func:`~bgem3.index.filters.check_filter`: typed equality, any-of
        lists, list payloads match by element.
        """
        checked = check_filter(where)
        if not checked:
            return None
        models = self._models
        conditions = []
        for key, wanted in checked.items():
            if not wanted:
                return False
            matches = [models.FieldCondition(key=f"metadata.{key}",
                                             match=models.MatchValue(value=value))
                       for _, value in wanted]
            conditions.append(matches[0] if len(matches) == 1 else models.Filter(should=matches))
        return models.Filter(must=conditions)


def _fuse_pool(pool: list[Hit], k: int, mode: str, fusion: str, weights: tuple[float, ...],
               candidates: int, rrf_k: int) -> list[Hit]:
    """Fuse a candidate pool's per-mode scores as the embedded index does; top ``k``.

    Each prefetch's list is the pool's top ``candidates`` by that mode's score: every
    document the prefetch returned outscores every one it did not.
    """
    if not pool:
        return []
    rows = np.arange(len(pool))
    per_mode = {name: np.array([h.scores.get(name, 0.0) for h in pool], dtype=np.float32)
                for name in (DENSE, SPARSE, COLBERT)}
    lists = {}
    if mode in ("hybrid", "dense"):
        lists[DENSE] = rows[CandidatePool.best(per_mode[DENSE], candidates)]
    if mode in ("hybrid", "sparse"):
        matching = np.flatnonzero(per_mode[SPARSE] > 0)
        lists[SPARSE] = matching[CandidatePool.best(per_mode[SPARSE][matching], candidates)]
    if COLBERT in pool[0].scores:
        lists[COLBERT] = rows
    else:
        del per_mode[COLBERT]
    candidate_pool = CandidatePool(rows=rows, ids=[h.id for h in pool], scores=per_mode,
                                   lists=lists)
    fused = candidate_pool.fuse(fusion, weights, rrf_k)
    return [Hit(pool[j].id, float(fused[j]), pool[j].scores, pool[j].text, pool[j].metadata)
            for j in CandidatePool.best(fused, k)]
