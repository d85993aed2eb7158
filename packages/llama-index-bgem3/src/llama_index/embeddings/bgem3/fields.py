"""The model fields every LlamaIndex component of this distribution shares.

The embedding, sparse embedding and reranker components subclass these pydantic bases
(the hybrid retriever takes an index instead, and only :data:`DEFAULT_MODEL`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr

from bgem3.checkpoint import DEFAULT_MODEL
from bgem3.shared import SharedModelMixin

__all__ = ["DEFAULT_MODEL", "BGEM3EncodeFields", "BGEM3Fields"]

"""The checkpoint a component loads when given neither ``model`` nor ``model_name``."""


class BGEM3Fields(SharedModelMixin, BaseModel):
    """``model=``, or ``model_name`` / ``device`` / ``dtype``, or ``base_url`` / ``api_key``.

    ``model`` is a loaded ``bgem3.BGEM3``, a ``bgem3.remote.RemoteBGEM3`` or any
    ``bgem3.Encoder``; ``base_url`` runs a ``bgem3 serve`` server (no torch in this
    process). Components built from the same name, device and dtype (or server and key)
    share one model, and with it one cache of recent dense and sparse outputs. The key is
    never serialised nor pickled: elsewhere it comes from ``BGEM3_API_KEY``. Unknown
    keyword arguments are an error (a misspelt ``devcie=`` or LangChain's ``top_k=`` would
    otherwise be ignored).
    """

    model_config = ConfigDict(extra="forbid")

    model_name: str = Field(default=DEFAULT_MODEL,
                            description="Hugging Face hub id or local checkpoint directory.")
    model: Any = Field(default=None, exclude=True, repr=False, description=(
        "A loaded bgem3.BGEM3, RemoteBGEM3 or other Encoder (overrides model_name)."))
    device: str | None = Field(default=None, description="cpu, cuda, cuda:1, mps; None: best.")
    dtype: str | None = Field(default=None, description="float32, float16 or bfloat16.")
    base_url: str | None = Field(default=None, description=(
        "A bgem3 serve server, http://host:8000 (overrides model_name; no torch here)."))
    api_key: SecretStr | None = Field(default=None, exclude=True, repr=False, description=(
        "The server's key; None: the BGEM3_API_KEY environment variable, if set."))
    _bgem3: Any = PrivateAttr(default=None)


class BGEM3EncodeFields(BGEM3Fields):
    """:class:`BGEM3Fields` plus what the embedding components share.

    The encoding options, and the async methods of LlamaIndex's embedding bases run in a
    worker thread (the bases' defaults would block the event loop).
    """

    embed_batch_size: int = Field(
        strict=True, default=64, gt=0, description="Texts per call to the model.")
    query_max_length: int | None = Field(strict=True,
        default=None, gt=0, description="Query truncation length (None: the model's, 512).")
    document_max_length: int | None = Field(strict=True,
        default=None, gt=0, description="Document truncation length (None: the model's, 8192).")

    if TYPE_CHECKING:  # the blocking methods, as each embedding component defines them
        def _get_query_embedding(self, query: str) -> Any: ...
        def _get_text_embedding(self, text: str) -> Any: ...
        def _get_text_embeddings(self, texts: list[str]) -> list[Any]: ...

    async def _aget_query_embedding(self, query: str) -> Any:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Any:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Any]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)
