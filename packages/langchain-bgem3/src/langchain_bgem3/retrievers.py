"""``BGEM3HybridRetriever``: dense + sparse candidates, ColBERT rerank and fusion, for LangChain."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from bgem3.index.options import DEFAULT_SEARCH, SearchOptions
from bgem3.shared import LiveIndexMixin, check_query, new_index, resolve_model, with_scores
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, SecretStr, model_validator

from langchain_bgem3._common import DEFAULT_MODEL, check_texts

if TYPE_CHECKING:
    from bgem3 import Encoder
    from bgem3.index import SearchIndex
    from langchain_core.callbacks import (
        AsyncCallbackManagerForRetrieverRun,
        CallbackManagerForRetrieverRun,
    )

__all__ = ["BGEM3HybridRetriever"]

DEFAULT_K = 4
"""Documents a retriever returns by default, LangChain's convention (the core's is 10)."""

class BGEM3HybridRetriever(LiveIndexMixin, BaseRetriever):
    """Hybrid BGE-M3 retrieval over ``bgem3.HybridIndex`` (embedded) or its Qdrant backend.

    Dense and sparse top candidates, their union scored by ColBERT MaxSim, then fused
    (FlagEmbedding's weighted sum, or reciprocal rank fusion). Each document carries the
    fused ``relevance_score`` and ``dense_score`` / ``sparse_score`` / ``colbert_score`` in
    its metadata; a stored metadata value under one of those keys is kept under the key
    prefixed ``previous_`` (``bgem3.shared.with_scores``). Every search option can also be
    passed per call: ``retriever.invoke("query", k=2, filter={"lang": "en"})``. The options
    and their defaults are the core's :class:`bgem3.index.SearchOptions` (except ``k``:
    LangChain's 4), checked when the retriever is built and on every call.

    The retriever holds a live index (in memory, or a Qdrant client), so it is neither
    serialisable (``dumpd`` gives ``not_implemented``) nor picklable or deep-copyable
    (``TypeError``): share the object (searches may run in several threads), or save the
    index with ``retriever.index.save(path)`` and build a new retriever with
    ``BGEM3HybridRetriever(index=HybridIndex.load(path, model))``.

    Example:
        .. code-block:: python

            from langchain_bgem3 import BGEM3HybridRetriever

            retriever = BGEM3HybridRetriever.from_texts(
                ["BGE-M3 has three outputs.", "Paris is in France."],
                model_name="BAAI/bge-m3", k=1)
            docs = retriever.invoke("How many outputs?")
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")
    rebuild_with: ClassVar[str] = "BGEM3HybridRetriever(index={})"

    index: Any = Field(exclude=True, description="A bgem3 HybridIndex or QdrantHybridIndex.")
    k: int = Field(strict=True, default=DEFAULT_K, description="Documents to return.")
    mode: str = Field(default=DEFAULT_SEARCH.mode,
                      description="Candidates: hybrid, dense or sparse.")
    fusion: str = Field(default=DEFAULT_SEARCH.fusion,
                        description="weighted or rrf (Qdrant: also dbsf).")
    weights: tuple[float, float, float] = Field(
        default=DEFAULT_SEARCH.weights,
        description="(dense, sparse, colbert) for weighted fusion.")
    candidates: int = Field(strict=True, default=DEFAULT_SEARCH.candidates,
                            description="Candidates from each of dense and sparse.")
    rerank: bool | None = Field(
        strict=True, default=DEFAULT_SEARCH.rerank, description="ColBERT rerank; None: if stored.")
    filter: dict[str, Any] | None = Field(
        default=None, description='Metadata filter: {"lang": "en", "year": [2023, 2024]}.')
    rrf_k: int = Field(strict=True, default=DEFAULT_SEARCH.rrf_k,
                       description="The constant of reciprocal rank fusion.")

    @model_validator(mode="after")
    def _check_options(self) -> BGEM3HybridRetriever:
        self.search_options()  # raises on a bad option, naming it
        return self

    @classmethod
    def from_texts(cls, texts: Iterable[str], model_name: str = DEFAULT_MODEL,
                   k: int = DEFAULT_K, metadatas: Sequence[Mapping[str, Any]] | None = None,
                   *, ids: Sequence[str] | None = None, model: Encoder | None = None,
                   device: str | None = None, dtype: str | None = None,
                   base_url: str | None = None, api_key: str | SecretStr | None = None,
                   qdrant_client: Any = None, collection_name: str = "bgem3",
                   **kwargs: Any) -> BGEM3HybridRetriever:
        """Index ``texts`` and return a retriever over them.

        Args:
            texts: Document texts.
            model_name: Hub id or path (ignored when ``model`` or ``base_url`` is given).
            k: Documents to return.
            metadatas: One metadata dict per text.
            ids: One id per text (``None``: generated).
            model: A loaded ``bgem3.BGEM3``, ``bgem3.remote.RemoteBGEM3`` or other
                ``bgem3.Encoder`` to use.
            device: Device for a model loaded here.
            dtype: Dtype for a model loaded here.
            base_url: A ``bgem3 serve`` server to encode with (no torch in this process).
            api_key: The server's key (``None``: ``BGEM3_API_KEY``, if set).
            qdrant_client: A ``QdrantClient``: index into Qdrant instead of in memory.
            collection_name: The Qdrant collection.
            **kwargs: Other fields of the retriever (``mode``, ``fusion``, ``weights``...).
        """
        encoder = resolve_model(model, model_name, device=device, dtype=dtype,
                                base_url=base_url, api_key=api_key)
        index = new_index(encoder, qdrant_client, collection_name)
        retriever = cls(index=index, k=k, **kwargs)
        retriever.add_texts(texts, metadatas, ids=ids)
        return retriever

    @classmethod
    def from_documents(cls, documents: Iterable[Document], model_name: str = DEFAULT_MODEL,
                       k: int = DEFAULT_K, **kwargs: Any) -> BGEM3HybridRetriever:
        """Like :meth:`from_texts`, from ``Document`` objects.

        Their ids are kept; a document without one gets a new random id.
        """
        docs = _check_documents(documents)
        return cls.from_texts([d.page_content for d in docs], model_name, k,
                              [d.metadata for d in docs], ids=_document_ids(docs), **kwargs)

    def add_texts(self, texts: Iterable[str], metadatas: Sequence[Mapping[str, Any]] | None = None,
                  *, ids: Sequence[str] | None = None) -> list[str]:
        """Add (or replace, by id) texts; returns their ids."""
        texts = check_texts(list(texts) if not isinstance(texts, str) else texts)
        result: list[str] = self.index.add(texts, ids=ids, metadata=metadatas)
        return result

    def add_documents(self, documents: Iterable[Document]) -> list[str]:
        """Add (or replace, by ``Document.id``) documents; returns their ids.

        A document without an id gets a new random one; the others keep theirs.
        """
        docs = _check_documents(documents)
        return self.add_texts([d.page_content for d in docs], [d.metadata for d in docs],
                              ids=_document_ids(docs))

    def delete(self, ids: Sequence[str]) -> None:
        """Delete documents by id (unknown ids: ``KeyError``, nothing deleted)."""
        self.index.delete(ids)

    def search_options(self, **overrides: Any) -> SearchOptions:
        """The retriever's options with ``overrides`` (the keywords of ``invoke``), checked.

        Raises:
            TypeError: An unknown option (``top_k=``...).
            ValueError: A bad value, named (``k must be a positive int, got 0``).
        """
        names = SearchOptions.names()
        unknown = set(overrides) - set(names)
        if unknown:
            raise TypeError(f"unknown search arguments: {sorted(unknown)}; "
                            f"expected some of {list(names)}")
        return SearchOptions(**{name: overrides.get(name, getattr(self, name))
                                for name in names})

    def _search(self, query: str, overrides: Mapping[str, Any]) -> list[Document]:
        options = self.search_options(**overrides)
        check_query(query)
        index: SearchIndex = self.index
        hits = index.search(query, **options.as_kwargs())
        return [Document(page_content=hit.text or "", id=hit.id, metadata=with_scores(
            hit.metadata, {"relevance_score": hit.score,
                           **{f"{mode}_score": s for mode, s in hit.scores.items()}}))
                for hit in hits]

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                **kwargs: Any) -> list[Document]:
        return self._search(query, kwargs)

    async def _aget_relevant_documents(self, query: str, *,
                                       run_manager: AsyncCallbackManagerForRetrieverRun,
                                       **kwargs: Any) -> list[Document]:
        return await asyncio.to_thread(self._search, query, kwargs)


def _check_documents(documents: Iterable[Document]) -> list[Document]:
    docs = list(documents)
    for i, doc in enumerate(docs):
        if not isinstance(getattr(doc, "page_content", None), str) or not doc.page_content:
            raise ValueError(f"documents[{i}] has no text (page_content)")
    return docs


def _document_ids(docs: Sequence[Document]) -> list[str]:
    """Each document's id, or a new random one (as the index makes) where it has none."""
    return [d.id or uuid.uuid4().hex for d in docs]
