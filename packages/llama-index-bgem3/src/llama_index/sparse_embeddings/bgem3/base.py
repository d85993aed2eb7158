"""``BGEM3SparseEmbedding``: BGE-M3 lexical weights for LlamaIndex, and Qdrant's sparse fns."""

from __future__ import annotations

from collections.abc import Callable

from llama_index.core.base.embeddings.base_sparse import BaseSparseEmbedding, SparseEmbedding
from llama_index.embeddings.bgem3.fields import BGEM3EncodeFields

__all__ = ["BGEM3SparseEmbedding"]

BatchSparse = tuple[list[list[int]], list[list[float]]]


class BGEM3SparseEmbedding(BGEM3EncodeFields, BaseSparseEmbedding):
    """BGE-M3 sparse (lexical) vectors as ``{token_id: weight}``, special tokens dropped.

    :attr:`sparse_doc_fn` and :attr:`sparse_query_fn` are ready for
    ``QdrantVectorStore(enable_hybrid=True, sparse_doc_fn=..., sparse_query_fn=...)``, so the
    store never tries to download a FastEmbed model.

    Example:
        .. code-block:: python

            from llama_index.sparse_embeddings.bgem3 import BGEM3SparseEmbedding
            from llama_index.vector_stores.qdrant import QdrantVectorStore

            sparse = BGEM3SparseEmbedding(model_name="BAAI/bge-m3")
            store = QdrantVectorStore("docs", client=client, enable_hybrid=True,
                                      sparse_doc_fn=sparse.sparse_doc_fn,
                                      sparse_query_fn=sparse.sparse_query_fn)
    """

    @classmethod
    def class_name(cls) -> str:
        """The name LlamaIndex serialises this class under."""
        return "BGEM3SparseEmbedding"

    def _get_query_embedding(self, query: str) -> SparseEmbedding:
        return self._queries([query])[0]

    def _get_text_embedding(self, text: str) -> SparseEmbedding:
        return self._get_text_embeddings([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[SparseEmbedding]:
        out = self.outputs.documents(texts, max_length=self.document_max_length)
        return [v.to_dict() for v in out.sparse]  # type: ignore[union-attr]

    def _queries(self, texts: list[str]) -> list[SparseEmbedding]:
        out = self.outputs.queries(texts, max_length=self.query_max_length)
        return [v.to_dict() for v in out.sparse]  # type: ignore[union-attr]

    @property
    def sparse_doc_fn(self) -> Callable[[list[str]], BatchSparse]:
        """Documents to Qdrant's batch format ``(indices per text, values per text)``."""
        return lambda texts: _batch(self._get_text_embeddings(list(texts)))

    @property
    def sparse_query_fn(self) -> Callable[[list[str]], BatchSparse]:
        """Queries to Qdrant's batch format ``(indices per text, values per text)``."""
        return lambda texts: _batch(self._queries(list(texts)))


def _batch(vectors: list[SparseEmbedding]) -> BatchSparse:
    return [list(v) for v in vectors], [list(v.values()) for v in vectors]
