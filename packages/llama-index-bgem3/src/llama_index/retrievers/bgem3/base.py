"""``BGEM3HybridRetriever``: dense + sparse candidates, ColBERT rerank, fusion (LlamaIndex)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle, TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)
from llama_index.embeddings.bgem3._model import DEFAULT_MODEL

from bgem3.shared import check_query, new_index, resolve_model

__all__ = ["BGEM3HybridRetriever"]

_SCORE_KEYS = ["relevance_score", "dense_score", "sparse_score", "colbert_score"]


class BGEM3HybridRetriever(BaseRetriever):
    """Hybrid BGE-M3 retrieval over ``bgem3.HybridIndex`` (embedded) or its Qdrant backend.

    Dense and sparse top candidates, their union scored by ColBERT MaxSim, then fused
    (FlagEmbedding's weighted sum, or reciprocal rank fusion). Nodes carry the per-mode
    scores in their metadata (``dense_score`` / ``sparse_score`` / ``colbert_score``, hidden
    from the LLM and the embedder).

    Args:
        index: A ``bgem3.HybridIndex`` or ``bgem3.index.QdrantHybridIndex``.
        similarity_top_k: Nodes to return.
        mode: Candidates from ``"hybrid"``, ``"dense"`` or ``"sparse"``.
        fusion: ``"weighted"`` or ``"rrf"`` (Qdrant: also ``"dbsf"``).
        weights: ``(dense, sparse, colbert)`` for weighted fusion.
        candidates: Candidates from each of dense and sparse.
        rerank: ColBERT rerank; ``None``: when the index stores ColBERT vectors.
        filters: ``MetadataFilters`` with ``==`` and ``in`` conditions joined by AND.

    Example:
        .. code-block:: python

            from llama_index.retrievers.bgem3 import BGEM3HybridRetriever

            retriever = BGEM3HybridRetriever.from_nodes(nodes, model_name="BAAI/bge-m3",
                                                        similarity_top_k=4)
            results = retriever.retrieve("How many outputs does BGE-M3 have?")
    """

    def __init__(
        self,
        index: Any,
        similarity_top_k: int = 4,
        *,
        mode: str = "hybrid",
        fusion: str = "weighted",
        weights: Sequence[float] = (0.4, 0.2, 0.4),
        candidates: int = 100,
        rerank: bool | None = None,
        filters: MetadataFilters | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(similarity_top_k, bool) or not isinstance(similarity_top_k, int) \
                or similarity_top_k < 1:
            raise ValueError(f"similarity_top_k must be a positive int, got {similarity_top_k!r}")
        self.index = index
        self.similarity_top_k = similarity_top_k
        self.search_options = {"mode": mode, "fusion": fusion, "weights": tuple(weights),
                               "candidates": candidates, "rerank": rerank}
        self.filters = filters
        self._where = _to_where(filters)
        super().__init__(**kwargs)

    @classmethod
    def from_nodes(
        cls,
        nodes: Sequence[BaseNode],
        model_name: str = DEFAULT_MODEL,
        similarity_top_k: int = 4,
        *,
        model: Any = None,
        device: str | None = None,
        dtype: str | None = None,
        qdrant_client: Any = None,
        collection_name: str = "bgem3",
        **kwargs: Any,
    ) -> BGEM3HybridRetriever:
        """Index ``nodes`` (their ids, text and metadata) and return a retriever over them."""
        bgem3_model = resolve_model(model, model_name, device=device, dtype=dtype)
        index = new_index(bgem3_model, qdrant_client, collection_name)
        retriever = cls(index, similarity_top_k, **kwargs)
        retriever.add_nodes(nodes)
        return retriever

    def add_nodes(self, nodes: Sequence[BaseNode]) -> list[str]:
        """Add (or replace, by node id) nodes; returns their ids."""
        nodes = list(nodes)
        texts = []
        for i, node in enumerate(nodes):
            text = node.get_content(metadata_mode=MetadataMode.NONE)
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"nodes[{i}] has no text")
            texts.append(text)
        ids: list[str] = self.index.add(texts, ids=[n.node_id for n in nodes],
                                        metadata=[dict(n.metadata) for n in nodes])
        return ids

    def delete(self, ids: Sequence[str]) -> None:
        """Delete nodes by id (unknown ids: ``KeyError``, nothing deleted)."""
        self.index.delete(ids)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        query = check_query(query_bundle.query_str)
        hits = self.index.search(query, self.similarity_top_k, filter=self._where,
                                 **self.search_options)
        results = []
        for hit in hits:
            scores = {f"{mode}_score": score for mode, score in hit.scores.items()}
            node = TextNode(id_=hit.id, text=hit.text or "",
                            metadata={**hit.metadata, **scores},
                            excluded_llm_metadata_keys=_SCORE_KEYS,
                            excluded_embed_metadata_keys=_SCORE_KEYS)
            results.append(NodeWithScore(node=node, score=hit.score))
        return results

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)


def _to_where(filters: MetadataFilters | None) -> dict[str, Any] | None:
    """``MetadataFilters`` (``==`` / ``in``, AND) as the core index's filter dict."""
    if filters is None or not filters.filters:
        return None
    if filters.condition not in (None, FilterCondition.AND):
        raise ValueError(f"only AND filters are supported, got {filters.condition}")
    where: dict[str, Any] = {}
    for f in filters.filters:
        if not isinstance(f, MetadataFilter):
            raise ValueError("nested MetadataFilters are not supported")
        if f.operator == FilterOperator.EQ:
            where[f.key] = f.value
        elif f.operator == FilterOperator.IN and isinstance(f.value, list):
            where[f.key] = list(f.value)
        else:
            raise ValueError(f"filter operator {f.operator.value!r} on {f.key!r} is not "
                             "supported: use == or in")
    return where
