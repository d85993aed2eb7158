"""The model fields every class of this package shares."""

from __future__ import annotations

from typing import Any

from bgem3.checkpoint import DEFAULT_MODEL
from bgem3.shared import API_KEY_ENV, SharedModelMixin, model_reference
from langchain_core.load.serializable import Serializable
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr

__all__ = ["DEFAULT_MODEL", "BGEM3EmbeddingBase", "BGEM3Model", "check_texts"]


class BGEM3Model(SharedModelMixin, Serializable):
    """``model=``, or ``model_name`` / ``device`` / ``dtype``, or ``base_url`` / ``api_key``.

    ``model`` is a loaded ``bgem3.BGEM3``, a ``bgem3.remote.RemoteBGEM3`` or any
    ``bgem3.Encoder``; ``base_url`` runs a ``bgem3 serve`` server (no torch in this
    process). Classes built from the same name, device and dtype (or server and key)
    share one model, and with it one cache of recent dense and sparse outputs. Their
    state is plain settings, so they serialise the LangChain way (``dumpd`` / ``load``,
    the model by reference, the key as the secret ``BGEM3_API_KEY``) and pickle by
    reference (never with the key).
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True,
                              protected_namespaces=(), use_attribute_docstrings=True)

    model_name: str = DEFAULT_MODEL
    """Hugging Face hub id or local checkpoint directory."""
    model: Any = Field(default=None, exclude=True, repr=False)
    """A loaded bgem3.BGEM3, RemoteBGEM3 or other Encoder (overrides model_name)."""
    device: str | None = None
    """The device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``); ``None`` picks the best."""
    dtype: str | None = None
    """float32, float16 or bfloat16."""
    base_url: str | None = None
    """A ``bgem3 serve`` server, ``http://host:8000`` (overrides model_name; no torch here)."""
    api_key: SecretStr | None = None
    """The server's key (``None`` reads the ``BGEM3_API_KEY`` environment variable, if set)."""
    _bgem3: Any = PrivateAttr(default=None)

    @classmethod
    def is_lc_serializable(cls) -> bool:
        """Settings only: ``langchain_core.load.dumpd`` writes them, ``load`` rebuilds."""
        return True

    @property
    def lc_secrets(self) -> dict[str, str]:
        """``api_key`` is written as a reference to ``BGEM3_API_KEY``, never in clear."""
        return {"api_key": API_KEY_ENV}

    @property
    def lc_attributes(self) -> dict[str, Any]:
        """The model by reference, as in a pickle (``bgem3.shared.model_reference``)."""
        return model_reference(self._bgem3)._asdict()


class BGEM3EmbeddingBase(BGEM3Model):
    """:class:`BGEM3Model` plus the encoding options: the base of the two embedding classes."""

    batch_size: int = Field(default=256, strict=True, gt=0)
    """Texts per forward batch at most."""
    show_progress: bool | None = Field(default=None, strict=True)
    """Whether to show a progress bar (``None`` shows one only for long inputs)."""
    query_max_length: int | None = Field(default=None, strict=True, gt=0)
    """Query truncation length (``None`` keeps the model's, 512)."""
    document_max_length: int | None = Field(default=None, strict=True, gt=0)
    """Document truncation length (``None`` keeps the model's, 8192)."""


def check_texts(texts: Any, what: str = "texts") -> list[str]:
    """A list of strings, or a ``TypeError`` naming what was wrong."""
    if isinstance(texts, (str, bytes)) or not isinstance(texts, (list, tuple)):
        raise TypeError(f"{what} must be a list of strings, got {type(texts).__name__}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{what}[{i}] must be a str, got {type(text).__name__}")
    return list(texts)
