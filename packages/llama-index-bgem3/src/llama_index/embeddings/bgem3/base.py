"""``BGEM3Embedding``: BGE-M3 dense vectors as a LlamaIndex ``BaseEmbedding``."""

from __future__ import annotations

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.embeddings.bgem3.fields import BGEM3EncodeFields

__all__ = ["BGEM3Embedding"]


class BGEM3Embedding(BGEM3EncodeFields, BaseEmbedding):
    """BGE-M3 dense embeddings (normalised ``[CLS]`` vectors) for LlamaIndex.

    Queries are truncated at the query length (512), documents at the document length
    (8192). Dense and sparse outputs come from one forward pass and are cached per model,
    so :class:`~llama_index.sparse_embeddings.bgem3.BGEM3SparseEmbedding` on the same
    texts does not run the model again.

    Example:
        .. code-block:: python

            from llama_index.core import Settings
            from llama_index.embeddings.bgem3 import BGEM3Embedding

            Settings.embed_model = BGEM3Embedding(model_name="BAAI/bge-m3")
            # or through a `bgem3 serve` server, without torch in this process
            Settings.embed_model = BGEM3Embedding(base_url="http://127.0.0.1:8000")
    """

    @classmethod
    def class_name(cls) -> str:
        """The name LlamaIndex serialises this class under."""
        return "BGEM3Embedding"

    def _get_query_embedding(self, query: str) -> Embedding:
        out = self.outputs.queries([query], max_length=self.query_max_length)
        return out.dense[0].tolist()  # type: ignore[index,no-any-return]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        out = self.outputs.documents(texts, max_length=self.document_max_length)
        return out.dense.tolist()  # type: ignore[union-attr,no-any-return]
