"""``BGEM3SparseEmbeddings``: BGE-M3 lexical weights for ``langchain_qdrant`` hybrid search."""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_qdrant import SparseEmbeddings, SparseVector

from langchain_bgem3._common import BGEM3EmbeddingBase, check_texts

__all__ = ["BGEM3SparseEmbeddings"]


class BGEM3SparseEmbeddings(BGEM3EmbeddingBase, SparseEmbeddings):
    """BGE-M3 sparse (lexical) vectors: token ids and weights, special tokens dropped.

    A ``langchain_qdrant.SparseEmbeddings``, so it plugs into
    ``QdrantVectorStore(retrieval_mode=RetrievalMode.HYBRID, sparse_embedding=...)``; for
    ``langchain_milvus.Milvus`` use :meth:`for_milvus`. Dense and sparse outputs come from
    one forward pass and are cached per model: embedding the same texts with
    :class:`~langchain_bgem3.BGEM3Embeddings` and with this class runs the model once.

    Example:
        .. code-block:: python

            from langchain_bgem3 import BGEM3Embeddings, BGEM3SparseEmbeddings
            from langchain_qdrant import QdrantVectorStore, RetrievalMode

            store = QdrantVectorStore.from_texts(
                texts, BGEM3Embeddings(), sparse_embedding=BGEM3SparseEmbeddings(),
                retrieval_mode=RetrievalMode.HYBRID, location=":memory:")
    """

    def embed_documents(self, texts: list[str]) -> list[SparseVector]:
        """Sparse vectors of documents."""
        out = self.outputs.documents(check_texts(texts), max_length=self.document_max_length,
                                     batch_size=self.batch_size,
                                     show_progress=self.show_progress)
        return [_to_qdrant(v) for v in out.sparse]  # type: ignore[union-attr]

    def embed_query(self, text: str) -> SparseVector:
        """Sparse vector of one query."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        out = self.outputs.queries([text], max_length=self.query_max_length)
        return _to_qdrant(out.sparse[0])  # type: ignore[index]

    async def aembed_documents(self, texts: list[str]) -> list[SparseVector]:
        """:meth:`embed_documents` in a worker thread (the event loop keeps running)."""
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> SparseVector:
        """:meth:`embed_query` in a worker thread."""
        return await asyncio.to_thread(self.embed_query, text)

    def for_milvus(self) -> Any:
        """The same embeddings as a ``langchain_milvus`` ``BaseSparseEmbedding``.

        Raises:
            ImportError: langchain-milvus is not installed.
        """
        from langchain_bgem3.milvus import BGEM3MilvusSparseEmbedding

        return BGEM3MilvusSparseEmbedding(self)


def _to_qdrant(vector: Any) -> SparseVector:
    return SparseVector(indices=vector.indices.tolist(), values=vector.values.tolist())
