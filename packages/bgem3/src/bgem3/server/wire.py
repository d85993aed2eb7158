"""Turning requests into texts and outputs into JSON, with the errors clients understand.

Shared by the routes and by :mod:`bgem3.remote` (which decodes what these encode): the
base64 layouts (OpenAI's little-endian float32 dense vectors, our little-endian float16
ColBERT matrices) are defined here once.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "ApiError",
    "b64_colbert",
    "b64_dense",
    "check_texts",
    "from_b64_colbert",
    "from_b64_dense",
]


class ApiError(Exception):
    """An error answered as JSON: ``status``, a message and a type clients can switch on.

    Types follow text-embeddings-inference's: ``Empty``, ``Validation``, ``Overloaded``,
    ``Unauthorized``, ``NotFound``, ``Backend``.
    """

    def __init__(self, status: int, message: str, kind: str = "Validation",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.headers = headers or {}


def check_texts(value: str | Sequence[str], limit: int, what: str = "input") -> list[str]:
    """The texts of a request: one string or a non-empty list of non-empty strings.

    Raises:
        ApiError: ``400`` for nothing to encode (an empty list or text), ``413`` for more
            texts than ``limit``, ``422`` for a text with an unpaired surrogate.

    Example:
        >>> check_texts("a query", 10)
        ['a query']
        >>> check_texts([], 10)
        Traceback (most recent call last):
        ...
        bgem3.server.wire.ApiError: input is an empty list: nothing to encode
    """
    texts = [value] if isinstance(value, str) else list(value)
    if not texts:
        raise ApiError(400, f"{what} is an empty list: nothing to encode", "Empty")
    if len(texts) > limit:
        raise ApiError(413, f"{what} has {len(texts)} texts; this server takes at most {limit} "
                            "per request (--max-inputs-per-request)", "Validation")
    for i, text in enumerate(texts):
        if not text:
            raise ApiError(400, f"{what}[{i}] is an empty string: nothing to encode", "Empty")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ApiError(422, f"{what}[{i}] holds an unpaired surrogate at position "
                                f"{exc.start}: send valid UTF-16 text", "Validation") from None
    return texts


def b64_dense(vector: NDArray[np.floating]) -> str:
    """A dense vector as OpenAI's base64: little-endian float32 bytes."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def from_b64_dense(data: str) -> NDArray[np.float32]:
    """Inverse of :func:`b64_dense`.

    Example:
        >>> from_b64_dense(b64_dense(np.array([0.5, -1.0]))).tolist()
        [0.5, -1.0]
    """
    return np.frombuffer(base64.b64decode(data), dtype="<f4").astype(np.float32)


def b64_colbert(matrix: NDArray[np.floating]) -> str:
    """A ``[n_tokens, dim]`` ColBERT matrix as base64: little-endian float16, row-major."""
    return base64.b64encode(np.ascontiguousarray(matrix, dtype="<f2").tobytes()).decode("ascii")


def from_b64_colbert(data: str, shape: Sequence[int]) -> NDArray[np.float32]:
    """Inverse of :func:`b64_colbert` (as float32).

    Raises:
        ValueError: The bytes do not hold ``shape``.

    Example:
        >>> m = np.array([[0.5, 0.25], [1.0, -2.0]])
        >>> from_b64_colbert(b64_colbert(m), [2, 2]).tolist()
        [[0.5, 0.25], [1.0, -2.0]]
    """
    raw = np.frombuffer(base64.b64decode(data), dtype="<f2")
    rows, dim = (int(x) for x in shape)
    if raw.size != rows * dim:
        raise ValueError(f"ColBERT data holds {raw.size} values, not {rows} x {dim}")
    return raw.reshape(rows, dim).astype(np.float32)


def error_body(path: str, error: ApiError) -> dict[str, Any]:
    """The JSON of an error: OpenAI's shape on its routes, text-embeddings-inference's else."""
    if path.rstrip("/") in ("/v1/embeddings", "/embeddings"):
        return {"error": {"message": error.message, "type": error.kind, "param": None,
                          "code": error.status}}
    return {"error": error.message, "error_type": error.kind}
