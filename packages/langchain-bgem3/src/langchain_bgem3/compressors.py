"""``BGEM3ColbertReranker``: rerank any retriever's documents by BGE-M3 ColBERT MaxSim."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
from bgem3.shared import check_query, rerank_scores, with_scores
from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import Field, field_validator

from langchain_bgem3._common import BGEM3Model

__all__ = ["BGEM3ColbertReranker"]


class BGEM3ColbertReranker(BGEM3Model, BaseDocumentCompressor):
    """Rerank documents by BGE-M3's ColBERT score (or the dense+sparse+ColBERT combination).

    All documents are encoded in one call, with the real ColBERT projection head. The
    returned documents are copies, best first, with ``metadata["relevance_score"]`` (and
    the per-mode scores as ``dense_score`` / ``sparse_score`` / ``colbert_score``); a value
    a document already has under one of those keys (a retriever's score, or the user's own)
    is kept under the key prefixed ``previous_`` (``bgem3.shared.with_scores``). The input
    documents are never changed.

    Example:
        .. code-block:: python

            from langchain_classic.retrievers import ContextualCompressionRetriever
            from langchain_bgem3 import BGEM3ColbertReranker

            retriever = ContextualCompressionRetriever(
                base_compressor=BGEM3ColbertReranker(top_n=3), base_retriever=base)
    """

    top_n: int = Field(strict=True, default=3, description="Documents to return.")
    weights: tuple[float, float, float] | None = Field(
        default=None, description="None: ColBERT alone; (dense, sparse, colbert): weighted.")
    batch_size: int = Field(
        strict=True, default=256, gt=0, description="Texts per forward batch at most.")

    @field_validator("top_n")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"top_n must be a positive int, got {value}")
        return value

    def compress_documents(self, documents: Sequence[Document], query: str,
                           callbacks: Callbacks | None = None) -> Sequence[Document]:
        """The ``top_n`` documents most relevant to ``query``, best first (copies)."""
        check_query(query)
        docs = list(documents)
        if not docs:
            return []
        for i, doc in enumerate(docs):
            if not isinstance(getattr(doc, "page_content", None), str):
                raise TypeError(f"documents[{i}] is not a Document with text page_content")
        fused, per_mode = rerank_scores(self.bgem3, query, [d.page_content for d in docs],
                                        weights=self.weights, batch_size=self.batch_size)
        out = []
        for i in np.argsort(-fused, kind="stable")[: self.top_n].tolist():
            scores = {"relevance_score": float(fused[i]),
                      **{f"{mode}_score": float(s[i]) for mode, s in per_mode.items()}}
            out.append(docs[i].model_copy(
                update={"metadata": with_scores(docs[i].metadata, scores)}))
        return out

    async def acompress_documents(self, documents: Sequence[Document], query: str,
                                  callbacks: Callbacks | None = None) -> Sequence[Document]:
        """:meth:`compress_documents` in a worker thread."""
        return await asyncio.to_thread(self.compress_documents, documents, query, callbacks)
