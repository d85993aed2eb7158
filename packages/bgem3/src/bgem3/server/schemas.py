"""Request bodies of the server's routes (pydantic), as the clients send them.

The OpenAI and text-embeddings-inference shapes are those of their own servers; fields
those clients send and we cannot honour (``normalize=false``, a ``dimensions`` other than
the model's, prompts) are refused with a message, never silently ignored.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

__all__ = [
    "EmbedRequest",
    "M3EncodeRequest",
    "OpenAIEmbeddingRequest",
    "RerankRequest",
    "SparseRequest",
    "TokenizeRequest",
]

Texts = StrictStr | list[StrictStr]
Flag = StrictBool


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpenAIEmbeddingRequest(BaseModel):
    """``POST /v1/embeddings``: OpenAI's request (other fields OpenAI takes are allowed)."""

    model_config = ConfigDict(extra="allow")

    input: Texts | list[int] | list[list[int]] = Field(
        description="A text or a list of texts (token-id arrays are refused: they are "
                    "another tokenizer's ids).")
    model: str | None = Field(default=None, description="Any name: this server has one model.")
    encoding_format: Literal["float", "base64"] = Field(
        default="float", description="base64: little-endian float32, as OpenAI's.")
    dimensions: int | None = Field(default=None, description="Only the model's own width.")
    user: str | None = None


class EmbedRequest(_Strict):
    """``POST /embed`` (and ``POST /``): text-embeddings-inference's request."""

    inputs: Texts
    normalize: Flag = Field(default=True, description="BGE-M3's dense vectors are normalised.")
    truncate: Flag = Field(default=True, description="false: a text over the limit is a 422.")
    truncation_direction: Literal["right", "Right"] = "right"
    prompt_name: None = Field(default=None, description="No prompts are configured.")
    dimensions: int | None = None


class SparseRequest(_Strict):
    """``POST /embed_sparse``: text-embeddings-inference's request."""

    inputs: Texts
    truncate: Flag = True
    truncation_direction: Literal["right", "Right"] = "right"
    prompt_name: None = None


class M3EncodeRequest(_Strict):
    """``POST /v1/m3/encode``: any of BGE-M3's three outputs in one call."""

    input: Texts
    kind: Literal["query", "document"] = "document"
    dense: Flag = True
    sparse: Flag = False
    colbert: Flag = False
    max_length: int | None = Field(default=None, ge=2)
    colbert_format: Literal["base64", "float"] = Field(
        default="base64", description="base64: little-endian float16, row-major.")
    sparse_tokens: Flag = Field(default=False, description="Add each id's token string.")


class RerankRequest(_Strict):
    """``POST /rerank``: text-embeddings-inference's request plus BGE-M3's fusion."""

    query: StrictStr
    texts: list[StrictStr]
    weights: tuple[float, float, float] = Field(
        default=(1.0, 1.0, 1.0),
        description="(dense, sparse, colbert), as compute_score's (FlagEmbedding's default).")
    mode: Literal["dense", "sparse", "colbert", "sparse+dense", "colbert+sparse+dense"] = Field(
        default="colbert+sparse+dense", description="The score results are ranked by.")
    truncate: Flag = True
    raw_scores: Flag = False
    return_text: Flag = False
    truncation_direction: Literal["right", "Right"] = "right"


class TokenizeRequest(_Strict):
    """``POST /tokenize``: text-embeddings-inference's request."""

    inputs: Texts
    add_special_tokens: Flag = True
    prompt_name: None = None
