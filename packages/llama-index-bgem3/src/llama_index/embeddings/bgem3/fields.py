"""The model fields every LlamaIndex component of this distribution shares.

The embedding, sparse embedding and reranker components subclass these pydantic bases
(the hybrid retriever takes an index instead, and only :data:`DEFAULT_MODEL`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from bgem3.shared import OutputCache, SharedModelPickling, output_cache, resolve_model

if TYPE_CHECKING:
    from bgem3.encoder import BGEM3

__all__ = ["DEFAULT_MODEL", "BGEM3EncodeFields", "BGEM3Fields"]

DEFAULT_MODEL = "BAAI/bge-m3"
"""The checkpoint a component loads when given neither ``model`` nor ``model_name``."""


class BGEM3Fields(SharedModelPickling, BaseModel):
    """``model=`` (a loaded ``bgem3.BGEM3``) or ``model_name`` / ``device`` / ``dtype``.

    Components built from the same name, device and dtype share one loaded model, and with
    it one cache of recent dense and sparse outputs. Unknown keyword arguments are an
    error (a misspelt ``devcie=`` or LangChain's ``top_k=`` would otherwise be ignored).
    """

    model_config = ConfigDict(extra="forbid")

    model_name: str = Field(default=DEFAULT_MODEL,
                            description="Hugging Face hub id or local checkpoint directory.")
    model: Any = Field(default=None, exclude=True, repr=False,
                       description="An already loaded bgem3.BGEM3 (overrides model_name).")
    device: str | None = Field(default=None, description="cpu, cuda, cuda:1, mps; None: best.")
    dtype: str | None = Field(default=None, description="float32, float16 or bfloat16.")
    _bgem3: Any = PrivateAttr(default=None)

    def model_post_init(self, context: Any, /) -> None:
        """Load (or reuse) the model now, so that a bad name fails at construction."""
        self._bgem3 = resolve_model(self.model, self.model_name, device=self.device,
                                    dtype=self.dtype)
        if self.model is not None:
            self.model_name = self._bgem3.name

    @property
    def bgem3(self) -> BGEM3:
        """The ``bgem3.BGEM3`` this component runs."""
        model: BGEM3 = self._bgem3
        return model

    @property
    def outputs(self) -> OutputCache:
        """The shared cache of this model's recent dense and sparse outputs."""
        return output_cache(self._bgem3)


class BGEM3EncodeFields(BGEM3Fields):
    """:class:`BGEM3Fields` plus the encoding options of the embedding components."""

    embed_batch_size: int = Field(
        strict=True, default=64, gt=0, description="Texts per call to the model.")
    query_max_length: int | None = Field(strict=True,
        default=None, gt=0, description="Query truncation length (None: the model's, 512).")
    document_max_length: int | None = Field(strict=True,
        default=None, gt=0, description="Document truncation length (None: the model's, 8192).")
