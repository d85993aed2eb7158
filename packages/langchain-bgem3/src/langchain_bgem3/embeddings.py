"""``BGEM3Embeddings``: BGE-M3 dense vectors as a LangChain ``Embeddings``."""

from __future__ import annotations

import asyncio

from langchain_core.embeddings import Embeddings

from langchain_bgem3._common import BGEM3EmbeddingBase, check_texts

__all__ = ["BGEM3Embeddings"]


class BGEM3Embeddings(BGEM3EmbeddingBase, Embeddings):
    """BGE-M3 dense embeddings (normalised ``[CLS]`` vectors) for LangChain.

    Dense and sparse outputs come from one forward pass and recent ones are cached per
    model, so a store that also asks :class:`~langchain_bgem3.BGEM3SparseEmbeddings` for the
    same texts does not run the model again.

    Example:
        .. code-block:: python

            from langchain_bgem3 import BGEM3Embeddings

            emb = BGEM3Embeddings(model_name="BAAI/bge-m3", device="cpu")
            vectors = emb.embed_documents(["BGE-M3 has three outputs."])
            query = emb.embed_query("How many outputs?")

            # the same through a `bgem3 serve` server, without torch in this process
            emb = BGEM3Embeddings(base_url="http://127.0.0.1:8000", api_key="...")
    """

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Dense vectors of documents, as Python floats."""
        out = self.outputs.documents(check_texts(texts), max_length=self.document_max_length,
                                     batch_size=self.batch_size,
                                     show_progress=self.show_progress)
        return out.dense.tolist()  # type: ignore[union-attr,no-any-return]

    def embed_query(self, text: str) -> list[float]:
        """Dense vector of one query, as Python floats."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        out = self.outputs.queries([text], max_length=self.query_max_length)
        return out.dense[0].tolist()  # type: ignore[index,no-any-return]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """:meth:`embed_documents` in a worker thread (the event loop keeps running)."""
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        """:meth:`embed_query` in a worker thread."""
        return await asyncio.to_thread(self.embed_query, text)
