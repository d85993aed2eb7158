"""``RemoteBGEM3``: a ``bgem3 serve`` server used like a local model, without torch.

It has the attributes and encode methods of :class:`~bgem3.BGEM3` (the
:class:`~bgem3.Encoder` protocol) and its ``compute_score``, so it goes wherever a model
goes: :class:`~bgem3.HybridIndex`, the Qdrant backend, :func:`bgem3.evaluate`,
:func:`bgem3.train.mine_negatives`. Outputs are the server's model's, decoded into the same
:class:`~bgem3.EncodeOutput` (ColBERT vectors travel as float16). Importing this module
imports neither torch nor transformers (``pip install "bgem3[remote]"``: httpx only).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from bgem3._inputs import as_pairs, as_texts, positive_int
from bgem3._optional import require
from bgem3._types import EncodeOutput, SparseVector
from bgem3.errors import TruncationWarning, warn_each_call
from bgem3.scoring import pair_scores
from bgem3.server.settings import API_KEY_ENV
from bgem3.server.wire import from_b64_colbert

if TYPE_CHECKING:
    import httpx
    from typing_extensions import Unpack

    from bgem3._types import EncodeKeywords

__all__ = ["RemoteBGEM3", "RemoteError"]

_RETRIES = 3


class RemoteError(RuntimeError):
    """The server answered with an error (its status and message), or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _import_httpx() -> Any:
    return require("httpx", "remote", "RemoteBGEM3")


class RemoteBGEM3:
    """A client of ``bgem3 serve`` that behaves like :class:`~bgem3.BGEM3`.

    Args:
        base_url: The server, e.g. ``"http://127.0.0.1:8000"``.
        api_key: Sent as ``Authorization: Bearer KEY`` (the server's ``--api-key``);
            ``None`` reads ``BGEM3_API_KEY`` (no key if it is not set).
        timeout: Seconds to wait for one response.
        batch_size: Texts per request (at most the server's ``max_client_batch_size``).

    Attributes:
        name: The server's model (hub id or path), as indexes record it.
        fingerprint: Its weights' fingerprint: an index built through the server can be
            opened with the local model, and the other way round.

    Raises:
        RemoteError: The server cannot be reached or refuses the key.

    Example (tested in ``tests/server/test_remote.py``)::

        model = RemoteBGEM3("http://127.0.0.1:8000")
        index = bgem3.HybridIndex(model)
        index.add(texts)
    """

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 60.0,
                 batch_size: int = 256) -> None:
        http = _import_httpx()
        self.base_url = base_url.rstrip("/")
        self.batch_size = positive_int(batch_size, "batch_size")
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        headers = {} if key is None else {"Authorization": f"Bearer {key}"}
        self._client: httpx.Client = http.Client(base_url=self.base_url, headers=headers,
                                                 timeout=timeout)
        self._async_options = {"base_url": self.base_url, "headers": headers,
                               "timeout": timeout}
        info = self._get("/info")
        self.name: str = str(info["model"])
        self.fingerprint: str = str(info["fingerprint"])
        self.dense_dim: int = int(info["dense_dim"])
        self.colbert_dim: int | None = (None if info["colbert_dim"] is None
                                        else int(info["colbert_dim"]))
        self.vocab_size: int = int(info["vocab_size"])
        self.has_heads: bool = bool(info["has_heads"])
        self.query_max_length: int = int(info["query_max_length"])
        self.document_max_length: int = int(info["document_max_length"])
        self.batch_size = min(self.batch_size, int(info.get("max_client_batch_size",
                                                            self.batch_size)))

    def __repr__(self) -> str:
        return f"RemoteBGEM3({self.base_url!r}, model={self.name!r})"

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    def __enter__(self) -> RemoteBGEM3:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ encoding
    def encode(self, texts: Sequence[str], **options: Unpack[EncodeKeywords]) -> EncodeOutput:
        """Like :meth:`bgem3.BGEM3.encode` (documents' default length)."""
        return self._encode("document", texts, dict(options))

    def encode_queries(self, texts: Sequence[str], **options: Unpack[EncodeKeywords]
                       ) -> EncodeOutput:
        """Like :meth:`bgem3.BGEM3.encode_queries`."""
        return self._encode("query", texts, dict(options))

    def encode_documents(self, texts: Sequence[str], **options: Unpack[EncodeKeywords]
                         ) -> EncodeOutput:
        """Like :meth:`bgem3.BGEM3.encode_documents`."""
        return self._encode("document", texts, dict(options))

    async def aencode_queries(self, texts: Sequence[str], **options: Unpack[EncodeKeywords]
                              ) -> EncodeOutput:
        """:meth:`encode_queries` without blocking the event loop."""
        return await self._aencode("query", texts, dict(options))

    async def aencode_documents(self, texts: Sequence[str],
                                **options: Unpack[EncodeKeywords]) -> EncodeOutput:
        """:meth:`encode_documents` without blocking the event loop."""
        return await self._aencode("document", texts, dict(options))

    def compute_score(self, pairs: Sequence[tuple[str, str]],
                      weights: Sequence[float] = (1.0, 1.0, 1.0), *,
                      max_query_length: int | None = None,
                      max_passage_length: int | None = None) -> dict[str, list[float]]:
        """Like :meth:`bgem3.BGEM3.compute_score`: the five scores of each pair.

        Each distinct query and passage is encoded once by the server; the scores are
        computed here from the outputs, with the local model's formulas.
        """
        from bgem3.batching import unique_texts

        query_texts, passage_texts = as_pairs(pairs)
        queries, query_of = unique_texts(query_texts)
        passages, passage_of = unique_texts(passage_texts)
        every = {"dense": True, "sparse": True, "colbert": True}
        q = self._encode("query", queries, {**every, "max_length": max_query_length})
        p = self._encode("document", passages, {**every, "max_length": max_passage_length})
        return pair_scores(q, p, query_of, passage_of, weights, self.vocab_size)

    # ------------------------------------------------------------------ wire
    def _requests(self, kind: str, texts: Sequence[str], options: dict[str, Any]
                  ) -> Iterator[dict[str, Any]]:
        items = as_texts(texts, "queries" if kind == "query" else "documents")
        unknown = sorted(set(options) - {"max_length", "dense", "sparse", "colbert",
                                         "batch_size", "show_progress"})
        if unknown:
            raise TypeError(f"unexpected keyword arguments {unknown}")
        outputs = {name: bool(options.get(name, name == "dense"))
                   for name in ("dense", "sparse", "colbert")}
        if not any(outputs.values()):
            raise ValueError("ask for at least one of dense, sparse and colbert")
        size = min(self.batch_size, positive_int(options.get("batch_size", self.batch_size),
                                                 "batch_size"))
        for start in range(0, len(items), size):
            yield {"input": items[start : start + size], "kind": kind, **outputs,
                   "max_length": options.get("max_length"), "colbert_format": "base64"}

    def _encode(self, kind: str, texts: Sequence[str], options: dict[str, Any]) -> EncodeOutput:
        bodies = list(self._requests(kind, texts, options))
        show = options.get("show_progress")
        if show is None:
            show = len(bodies) > 8
        answers = []
        with tqdm(total=sum(len(b["input"]) for b in bodies), disable=not show,
                  desc="encoding", unit="text") as bar:
            for body in bodies:
                answers.append(self._post("/v1/m3/encode", body))
                bar.update(len(body["input"]))
        return _warn_truncated(_decode(answers, bodies))

    async def _aencode(self, kind: str, texts: Sequence[str], options: dict[str, Any]
                       ) -> EncodeOutput:
        httpx = _import_httpx()
        bodies = list(self._requests(kind, texts, options))
        async with httpx.AsyncClient(**self._async_options) as client:
            answers = []
            for body in bodies:
                for attempt in range(_RETRIES + 1):
                    response = await client.post("/v1/m3/encode", json=body)
                    wait = _retry_after(response, attempt)
                    if wait is None:
                        break
                    import asyncio

                    await asyncio.sleep(wait)
                answers.append(_checked(response))
        return _warn_truncated(_decode(answers, bodies))

    def _get(self, route: str) -> dict[str, Any]:
        httpx = _import_httpx()
        try:
            response = self._client.get(route)
        except httpx.HTTPError as exc:
            raise RemoteError(f"cannot reach {self.base_url}: {exc}") from exc
        result: dict[str, Any] = _checked(response)
        return result

    def _post(self, route: str, body: dict[str, Any]) -> Any:
        httpx = _import_httpx()
        for attempt in range(_RETRIES + 1):
            try:
                response = self._client.post(route, json=body)
            except httpx.HTTPError as exc:
                raise RemoteError(f"cannot reach {self.base_url}: {exc}") from exc
            wait = _retry_after(response, attempt)
            if wait is None:
                return _checked(response)
            time.sleep(wait)
        return _checked(response)  # pragma: no cover - the loop returns


def _warn_truncated(output: EncodeOutput) -> EncodeOutput:
    """Say, as the local model does, how many texts the server cut at ``max_length``."""
    if output.truncated is not None and output.truncated.any():
        warn_each_call(f"{int(output.truncated.sum())} of {len(output)} texts were longer than "
                       "max_length tokens and were truncated", TruncationWarning, stacklevel=4)
    return output


def _retry_after(response: Any, attempt: int) -> float | None:
    """Seconds to wait before retrying an overloaded server, or ``None`` (do not retry)."""
    if response.status_code != 429 or attempt >= _RETRIES:
        return None
    try:
        return min(float(response.headers.get("retry-after", "1")), 30.0)
    except ValueError:
        return 1.0


def _checked(response: Any) -> Any:
    """The JSON of a successful response, or the server's error as an exception."""
    if response.status_code < 400:
        return response.json()
    try:
        body = response.json()
        error = body.get("error", body) if isinstance(body, dict) else body
        message = error.get("message") if isinstance(error, dict) else error
    except ValueError:
        message = response.text
    text = f"the server answered {response.status_code}: {message}"
    if response.status_code in (400, 413, 422):
        raise ValueError(text)
    if response.status_code == 401:
        raise PermissionError(text)
    raise RemoteError(text, response.status_code)


def _decode(answers: list[dict[str, Any]], bodies: list[dict[str, Any]]) -> EncodeOutput:
    """The server's answers to ``bodies``, one :class:`EncodeOutput` in input order."""
    items = [item for answer in answers for item in answer["data"]]
    first = bodies[0] if bodies else {"dense": True, "sparse": False, "colbert": False}
    dense = sparse = colbert = None
    if first["dense"]:
        dense = np.asarray([item["dense"] for item in items], dtype=np.float32)
        if not items:
            dense = dense.reshape(0, 0)
    if first["sparse"]:
        sparse = [SparseVector(np.asarray(item["sparse"]["indices"], np.int64),
                               np.asarray(item["sparse"]["values"], np.float32))
                  for item in items]
    if first["colbert"]:
        colbert = [from_b64_colbert(item["colbert"], item["colbert_shape"]) for item in items]
    tokens = truncated = None
    if all("tokens" in item for item in items):
        tokens = np.asarray([item["tokens"] for item in items], dtype=np.int32)
        truncated = np.asarray([item["truncated"] for item in items], dtype=np.bool_)
    return EncodeOutput(dense=dense, sparse=sparse, colbert=colbert, tokens=tokens,
                        truncated=truncated)
