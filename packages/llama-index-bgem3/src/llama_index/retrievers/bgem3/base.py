"""``BGEM3HybridRetriever``: dense + sparse candidates, ColBERT rerank, fusion (LlamaIndex)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle, TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)
from llama_index.embeddings.bgem3.fields import DEFAULT_MODEL

from bgem3.index.filters import check_filter
from bgem3.index.options import DEFAULT_SEARCH, Fusion, Mode, SearchOptions
from bgem3.shared import LiveIndexMixin, check_query, new_index, resolve_model, with_scores

if TYPE_CHECKING:
    from pydantic import SecretStr

    from bgem3 import Encoder
    from bgem3.index.embedded import HybridIndex
    from bgem3.index.qdrant import QdrantHybridIndex

__all__ = ["BGEM3HybridRetriever"]

DEFAULT_TOP_K = 4
"""Nodes a retriever returns by default (the core's search returns 10)."""

class BGEM3HybridRetriever(LiveIndexMixin, BaseRetriever):
    """Hybrid BGE-M3 retrieval over ``bgem3.HybridIndex`` (embedded) or its Qdrant backend.

    Dense and sparse top candidates, their union scored by ColBERT MaxSim, then fused
    (FlagEmbedding's weighted sum, or reciprocal rank fusion); the options and their
    defaults are the core's :class:`bgem3.index.SearchOptions`, checked when the retriever
    is built. Nodes carry the per-mode
    scores in their metadata (``dense_score`` / ``sparse_score`` / ``colbert_score``, hidden
    from the LLM and the embedder); a stored metadata value under one of those keys is kept
    under the key prefixed ``previous_`` (``bgem3.shared.with_scores``).

    Args:
        index: A ``bgem3.HybridIndex`` or ``bgem3.index.QdrantHybridIndex``.
        similarity_top_k: Nodes to return.
        mode: Candidates from ``"hybrid"``, ``"dense"`` or ``"sparse"``.
        fusion: ``"weighted"`` or ``"rrf"`` (Qdrant: also ``"dbsf"``).
        weights: ``(dense, sparse, colbert)`` for weighted fusion.
        candidates: Candidates from each of dense and sparse.
        rerank: ColBERT rerank; ``None``: when the index stores ColBERT vectors.
        filters: ``MetadataFilters`` of ``==`` and ``in`` conditions, joined by AND, or by
            OR on one key (nested too); conditions on one key under AND must all hold.
        rrf_k: The constant of reciprocal rank fusion.
        **kwargs: ``BaseRetriever``'s own arguments (``callback_manager``, ``verbose``...).

    Attributes:
        options: The checked :class:`bgem3.index.SearchOptions` of every search
            (``k`` is ``similarity_top_k``, ``filter`` the translated ``filters``).

    Raises:
        ValueError: A bad option (named), or filters the core filter cannot express.

    The retriever holds a live index (in memory, or a Qdrant client), so pickling or
    deep-copying it raises ``TypeError``: share the object (searches may run in several
    threads), or save the index with ``retriever.index.save(path)`` and build a new
    retriever with ``BGEM3HybridRetriever(HybridIndex.load(path, model))``.

    Example:
        .. code-block:: python

            from llama_index.retrievers.bgem3 import BGEM3HybridRetriever

            retriever = BGEM3HybridRetriever.from_nodes(nodes, model_name="BAAI/bge-m3",
                                                        similarity_top_k=4)
            results = retriever.retrieve("How many outputs does BGE-M3 have?")
    """

    rebuild_with: ClassVar[str] = "BGEM3HybridRetriever({})"

    def __init__(
        self,
        index: HybridIndex | QdrantHybridIndex,
        similarity_top_k: int = DEFAULT_TOP_K,
        *,
        mode: Mode = DEFAULT_SEARCH.mode,
        fusion: Fusion = DEFAULT_SEARCH.fusion,
        weights: Sequence[float] = DEFAULT_SEARCH.weights,
        candidates: int = DEFAULT_SEARCH.candidates,
        rerank: bool | None = DEFAULT_SEARCH.rerank,
        filters: MetadataFilters | None = None,
        rrf_k: int = DEFAULT_SEARCH.rrf_k,
        **kwargs: Any,
    ) -> None:
        if isinstance(similarity_top_k, bool) or not isinstance(similarity_top_k, int) \
                or similarity_top_k < 1:  # the core would name it k
            raise ValueError(f"similarity_top_k must be a positive int, got {similarity_top_k!r}")
        self.index = index
        self.similarity_top_k = similarity_top_k
        self.filters = filters
        self.options: SearchOptions = DEFAULT_SEARCH.replace(
            k=similarity_top_k, mode=mode, fusion=fusion, weights=weights,
            candidates=candidates, rerank=rerank, filter=_to_where(filters), rrf_k=rrf_k)
        super().__init__(**kwargs)

    @property
    def search_options(self) -> dict[str, Any]:
        """``mode``, ``fusion``, ``weights``, ``candidates`` and ``rerank`` of ``options``."""
        return {name: getattr(self.options, name)
                for name in ("mode", "fusion", "weights", "candidates", "rerank")}

    @classmethod
    def from_nodes(
        cls,
        nodes: Sequence[BaseNode],
        model_name: str = DEFAULT_MODEL,
        similarity_top_k: int = DEFAULT_TOP_K,
        *,
        model: Encoder | None = None,
        device: str | None = None,
        dtype: str | None = None,
        base_url: str | None = None,
        api_key: str | SecretStr | None = None,
        qdrant_client: Any = None,
        collection_name: str = "bgem3",
        **kwargs: Any,
    ) -> BGEM3HybridRetriever:
        """Index ``nodes`` (their ids, text and metadata) and return a retriever over them.

        Args:
            nodes: The nodes.
            model_name: Hub id or path (ignored when ``model`` or ``base_url`` is given).
            similarity_top_k: Nodes to return.
            model: A loaded ``bgem3.BGEM3``, ``bgem3.remote.RemoteBGEM3`` or other
                ``bgem3.Encoder`` to use.
            device: Device for a model loaded here.
            dtype: Dtype for a model loaded here.
            base_url: A ``bgem3 serve`` server to encode with (no torch in this process).
            api_key: The server's key (``None``: ``BGEM3_API_KEY``, if set).
            qdrant_client: A ``QdrantClient``: index into Qdrant instead of in memory.
            collection_name: The Qdrant collection.
            **kwargs: The retriever's other arguments (``mode``, ``fusion``...).
        """
        encoder = resolve_model(model, model_name, device=device, dtype=dtype,
                                base_url=base_url, api_key=api_key)
        index = new_index(encoder, qdrant_client, collection_name)
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
        hits = self.index.search(query, **self.options.as_kwargs())
        results = []
        for hit in hits:
            scores = {f"{mode}_score": score for mode, score in hit.scores.items()}
            node = TextNode(id_=hit.id, text=hit.text or "",
                            metadata=with_scores(hit.metadata, scores),
                            excluded_llm_metadata_keys=list(scores),
                            excluded_embed_metadata_keys=list(scores))
            results.append(NodeWithScore(node=node, score=hit.score))
        return results

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)


def _to_where(filters: MetadataFilters | None) -> dict[str, Any] | None:
    """``MetadataFilters`` in the core filter language, or a ``ValueError``.

    The core filter ANDs its keys, each with one value (equality) or a list (any of them;
    an empty list matches nothing). ``==`` and ``in`` conditions map onto it; several under
    AND on one key keep the values all of them allow (``lang == "en" AND lang == "fr"``
    matches nothing), under OR on one key the values any of them allows. An OR across
    keys, ``NOT`` and other operators cannot be expressed and raise. The index matches a
    list-valued metadata field by element, so for such a field an AND on one key asks for
    one element that every condition allows, not for each condition to hold alone. Each
    value is checked by the core (:func:`bgem3.index.filters.check_filter`) as it is read.
    """
    if filters is None or not filters.filters:
        return None
    where = {key: values[0] if len(values) == 1 else values
             for key, values in _allowed(filters).items()}
    check_filter(where)
    return where


def _allowed(item: MetadataFilters | MetadataFilter) -> dict[str, list[Any]]:
    """The values each constrained key may take (a key not listed is not constrained)."""
    if isinstance(item, MetadataFilter):
        if item.operator == FilterOperator.EQ and not isinstance(item.value, list):
            check_filter({item.key: item.value})
            return {item.key: [item.value]}
        if item.operator == FilterOperator.IN and isinstance(item.value, list):
            check_filter({item.key: item.value})
            return {item.key: _union([item.value])}
        raise ValueError(f"filter operator {item.operator.value!r} on {item.key!r} with value "
                         f"{item.value!r} is not supported: use == (one value) or in (a list)")
    parts = [_allowed(f) for f in item.filters]
    if item.condition in (None, FilterCondition.AND):
        out: dict[str, list[Any]] = {}
        for part in parts:
            for key, values in part.items():
                out[key] = [v for v in out[key] if _has(values, v)] if key in out else values
        return out
    if item.condition != FilterCondition.OR:
        raise ValueError(f"filter condition {item.condition.value!r} is not supported: "
                         "use and / or")
    if not parts or {} in parts:  # one branch with no condition matches everything
        return {}
    possible = [p for p in parts if all(p.values())]  # a branch that matches nothing adds nothing
    if not possible:
        return parts[0]
    keys = {key for part in possible for key in part}
    if len(keys) > 1 or any(len(part) != 1 for part in possible):
        raise ValueError(f"an OR across different keys ({sorted(keys)}) cannot be expressed "
                         "as a bgem3 filter: OR works within one key (lang == 'en' OR "
                         "lang == 'fr')")
    (key,) = keys
    return {key: _union([part[key] for part in possible])}


def _has(values: list[Any], value: Any) -> bool:
    # typed, as the core compares: True is not 1
    return any(type(v) is type(value) and v == value for v in values)


def _union(lists: list[list[Any]]) -> list[Any]:
    out: list[Any] = []
    for value in (v for values in lists for v in values):
        if not _has(out, value):
            out.append(value)
    return out
