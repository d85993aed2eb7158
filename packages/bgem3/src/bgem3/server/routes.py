"""The routes: OpenAI's and text-embeddings-inference's shapes, and all of M3 in one call."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from bgem3._types import EncodeOutput
from bgem3.scoring import colbert_scores, fuse_scores, sparse_scores
from bgem3.server.batcher import Batcher, Kind, OverloadedError, length_limit
from bgem3.server.metrics import CONTENT_TYPE, Metrics
from bgem3.server.schemas import (
    EmbedRequest,
    M3EncodeRequest,
    OpenAIEmbeddingRequest,
    RerankRequest,
    SparseRequest,
    TokenizeRequest,
)
from bgem3.server.settings import ServerSettings
from bgem3.server.wire import ApiError, b64_colbert, b64_dense, check_texts

if TYPE_CHECKING:
    from bgem3.encoder import BGEM3

__all__ = ["ClientGoneError", "Server", "router"]

router = APIRouter()
"""Every route of ``bgem3 serve`` (FastAPI), to mount in an application of your own."""
logger = logging.getLogger(__name__)
T = TypeVar("T")


class ClientGoneError(Exception):
    """The client disconnected before its result was ready; its work was dropped."""


@dataclass
class Server:
    """What the routes share: the model, its batcher, the settings and the metrics."""

    model: BGEM3
    batcher: Batcher
    settings: ServerSettings
    metrics: Metrics
    version: str

    async def encode(self, request: Request, kind: Kind, texts: list[str], *,
                     max_length: int | None = None, dense: bool = True, sparse: bool = False,
                     colbert: bool = False, truncate: bool = True) -> EncodeOutput:
        """Encode through the batcher; the client's disconnect drops the work."""
        if self.settings.log_texts:
            logger.info("%s %s: %r", request.url.path, kind, texts)
        else:  # sizes only: request texts stay out of the logs unless asked for
            logger.info("%s %s: %d texts, %d characters", request.url.path, kind, len(texts),
                        sum(len(t) for t in texts))
        work = asyncio.ensure_future(self.batcher.encode(
            kind, texts, max_length=max_length, dense=dense, sparse=sparse, colbert=colbert))
        gone = asyncio.ensure_future(_disconnect(request))
        try:
            done, _ = await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if work not in done:
            work.cancel()
            raise ClientGoneError
        try:
            output = work.result()
        except OverloadedError as exc:
            raise ApiError(429, f"the server is overloaded ({exc}); retry in "
                                f"{self.settings.retry_after} s", "Overloaded",
                           {"Retry-After": str(self.settings.retry_after)}) from None
        except (TypeError, ValueError) as exc:  # what the model refuses (max_length...)
            raise ApiError(422, str(exc), "Validation") from None
        if not truncate and output.truncated is not None and output.truncated.any():
            first = int(np.flatnonzero(output.truncated)[0])
            limit = length_limit(self.model, kind, max_length)
            raise ApiError(422, f"input[{first}] is longer than {limit} tokens and truncate "
                                "is false", "Validation")
        return output


async def _disconnect(request: Request) -> None:
    """Return once the client has gone away (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _server(request: Request) -> Server:
    server: Server = request.app.state.server
    return server


def _present(value: T | None) -> T:
    """An output the request asked for (the model always returns those)."""
    if value is None:
        raise RuntimeError("the model did not return an output it was asked for")
    return value


def _usage(output: EncodeOutput) -> dict[str, int]:
    tokens = int(output.tokens.sum()) if output.tokens is not None else 0
    return {"prompt_tokens": tokens, "total_tokens": tokens}


def _check_dimensions(dimensions: int | None, width: int) -> None:
    if dimensions is not None and dimensions != width:
        raise ApiError(422, f"dimensions={dimensions}: this model gives {width}-dimensional "
                            "vectors only (BGE-M3 is not trained to be shortened)")


# ---------------------------------------------------------------------- OpenAI
@router.post("/v1/embeddings", tags=["OpenAI"], summary="Dense vectors, OpenAI's API")
@router.post("/embeddings", include_in_schema=False)
async def openai_embeddings(body: OpenAIEmbeddingRequest, request: Request) -> dict[str, Any]:
    """OpenAI's embeddings API: dense vectors, ``float`` or ``base64`` (little-endian f32)."""
    server = _server(request)
    raw = body.input
    if isinstance(raw, list) and raw and not all(isinstance(t, str) for t in raw):
        raise ApiError(422, "input holds token ids: send texts (the ids of another tokenizer "
                            "mean nothing here; with LangChain's OpenAIEmbeddings pass "
                            "check_embedding_ctx_length=False)")
    texts = check_texts(raw, server.settings.max_inputs_per_request)  # type: ignore[arg-type]
    _check_dimensions(body.dimensions, server.model.dense_dim)
    output = await server.encode(request, "document", texts)
    dense = _present(output.dense)
    encode = b64_dense if body.encoding_format == "base64" else (lambda v: v.tolist())
    return {"object": "list", "model": server.model.name, "usage": _usage(output),
            "data": [{"object": "embedding", "index": i, "embedding": encode(v)}
                     for i, v in enumerate(dense)]}


# ---------------------------------------------------------------------- text-embeddings-inference
@router.post("/embed", tags=["text-embeddings-inference"], summary="Dense vectors, TEI's API")
@router.post("/", include_in_schema=False)
async def embed(body: EmbedRequest, request: Request) -> list[list[float]]:
    """text-embeddings-inference's ``/embed``: ``[[float]]``, one vector per input."""
    server = _server(request)
    texts = check_texts(body.inputs, server.settings.max_inputs_per_request, "inputs")
    if not body.normalize:
        raise ApiError(422, "normalize=false is not available: BGE-M3's dense vectors are the "
                            "normalised [CLS] state")
    _check_dimensions(body.dimensions, server.model.dense_dim)
    output = await server.encode(request, "document", texts, truncate=body.truncate)
    result: list[list[float]] = _present(output.dense).tolist()
    return result


@router.post("/embed_sparse", tags=["text-embeddings-inference"],
             summary="Lexical weights, TEI's API")
async def embed_sparse(body: SparseRequest, request: Request) -> list[list[dict[str, Any]]]:
    """BGE-M3's lexical weights in TEI's shape: special tokens dropped, max per token id."""
    server = _server(request)
    texts = check_texts(body.inputs, server.settings.max_inputs_per_request, "inputs")
    output = await server.encode(request, "document", texts, dense=False, sparse=True,
                                 truncate=body.truncate)
    return [[{"index": int(i), "value": float(v)} for i, v in zip(s.indices, s.values,
                                                                   strict=True)]
            for s in _present(output.sparse)]


# ---------------------------------------------------------------------- all of M3
@router.post("/v1/m3/encode", tags=["BGE-M3"], summary="Dense, sparse and ColBERT in one call")
async def m3_encode(body: M3EncodeRequest, request: Request) -> dict[str, Any]:
    """Any of BGE-M3's outputs; ColBERT as base64 little-endian float16 (row-major) or floats."""
    server = _server(request)
    texts = check_texts(body.input, server.settings.max_inputs_per_request)
    if not (body.dense or body.sparse or body.colbert):
        raise ApiError(422, "ask for at least one of dense, sparse and colbert")
    if (body.sparse or body.colbert) and not server.model.has_heads:
        raise ApiError(422, "this model was loaded without its sparse and ColBERT heads")
    output = await server.encode(request, body.kind, texts, max_length=body.max_length,
                                 dense=body.dense, sparse=body.sparse, colbert=body.colbert)
    data: list[dict[str, Any]] = [{"index": i} for i in range(len(texts))]
    if output.tokens is not None and output.truncated is not None:  # beside usage: per text
        for item, n, cut in zip(data, output.tokens.tolist(), output.truncated.tolist(),
                                strict=True):
            item["tokens"], item["truncated"] = n, cut
    if output.dense is not None:
        for item, vector in zip(data, output.dense.tolist(), strict=True):
            item["dense"] = vector
    if output.sparse is not None:
        tokens = server.model.tokenizer.convert_ids_to_tokens if body.sparse_tokens else None
        for item, sparse in zip(data, output.sparse, strict=True):
            ids = sparse.indices.tolist()
            item["sparse"] = {"indices": ids, "values": sparse.values.tolist()}
            if tokens is not None:
                item["sparse"]["tokens"] = tokens(ids)
    if output.colbert is not None:
        for item, matrix in zip(data, output.colbert, strict=True):
            item["colbert"] = (b64_colbert(matrix) if body.colbert_format == "base64"
                               else matrix.tolist())
            item["colbert_shape"] = list(matrix.shape)
    return {"object": "list", "model": server.model.name, "data": data,
            "usage": _usage(output)}


@router.post("/rerank", tags=["BGE-M3"], summary="Scores of texts for a query, fused")
async def rerank(body: RerankRequest, request: Request) -> list[dict[str, Any]]:
    """``compute_score``'s five scores of each text for the query, best first (TEI's shape).

    ``score`` is the ``mode`` score (default ``colbert+sparse+dense`` with ``weights``);
    ``scores`` has all five. Scores are similarities, never squashed, so ``raw_scores``
    changes nothing.
    """
    server = _server(request)
    texts = check_texts(body.texts, server.settings.max_inputs_per_request, "texts")
    check_texts(body.query, 1, "query")
    if not server.model.has_heads:
        raise ApiError(422, "this model was loaded without its sparse and ColBERT heads")
    every = {"dense": True, "sparse": True, "colbert": True, "truncate": body.truncate}
    query, documents = await asyncio.gather(
        server.encode(request, "query", [body.query], **every),
        server.encode(request, "document", texts, **every))
    dense = (_present(documents.dense) @ _present(query.dense)[0]).astype(np.float64)
    sparse = sparse_scores(_present(query.sparse),
                           _present(documents.sparse))[0].astype(np.float64)
    colbert = colbert_scores(_present(query.colbert)[0], _present(documents.colbert))
    try:
        modes = {"dense": dense, "sparse": sparse, "colbert": colbert,
                 "sparse+dense": fuse_scores(dense, sparse, None, body.weights),
                 "colbert+sparse+dense": fuse_scores(dense, sparse, colbert, body.weights)}
    except ValueError as exc:
        raise ApiError(422, str(exc)) from None
    ranked = np.argsort(-np.asarray(modes[body.mode]), kind="stable")
    return [{"index": int(i), "score": float(modes[body.mode][i]),
             "scores": {name: float(values[i]) for name, values in modes.items()},
             **({"text": texts[i]} if body.return_text else {})} for i in ranked]


@router.post("/tokenize", tags=["text-embeddings-inference"], summary="Tokens of texts")
async def tokenize(body: TokenizeRequest, request: Request) -> list[list[dict[str, Any]]]:
    """The tokens each text is encoded as, with character offsets (TEI's shape)."""
    server = _server(request)
    texts = check_texts(body.inputs, server.settings.max_inputs_per_request, "inputs")
    return await run_in_threadpool(_tokens, server.model, texts, body.add_special_tokens)


def _tokens(model: BGEM3, texts: list[str], special: bool) -> list[list[dict[str, Any]]]:
    tokenizer = model.tokenizer
    encoded = tokenizer(texts, add_special_tokens=special, return_offsets_mapping=True,
                        truncation=False)
    specials = set(tokenizer.all_special_ids)
    out = []
    for ids, offsets in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True):
        pieces = tokenizer.convert_ids_to_tokens(ids)
        out.append([{"id": int(i), "text": piece, "special": int(i) in specials,
                     "start": None if int(i) in specials else int(a),
                     "stop": None if int(i) in specials else int(b)}
                    for i, piece, (a, b) in zip(ids, pieces, offsets, strict=True)])
    return out


# ---------------------------------------------------------------------- about the server
@router.get("/info", tags=["server"], summary="The model and the server's limits")
async def info(request: Request) -> dict[str, Any]:
    """The model (name, fingerprint, widths, lengths, backend) and the server's limits."""
    server = _server(request)
    model = server.model
    return {
        "model_id": model.name, "model": model.name, "fingerprint": model.fingerprint,
        "dense_dim": model.dense_dim, "colbert_dim": model.colbert_dim,
        "vocab_size": model.vocab_size, "has_heads": model.has_heads,
        "query_max_length": model.query_max_length,
        "document_max_length": model.document_max_length,
        "max_input_length": model.document_max_length,
        "backend": model.backend, "device": str(model.device),
        "dtype": str(model.dtype).removeprefix("torch."),
        "max_batch_tokens": model.batch_tokens,
        "max_client_batch_size": server.settings.max_inputs_per_request,
        "max_concurrent_requests": server.settings.max_queued_requests,
        "version": server.version,
    }


@router.get("/health", tags=["server"], summary="200 once the model is loaded")
async def health() -> dict[str, str]:
    """Liveness: the model is loaded and the batcher runs."""
    return {"status": "ok"}


@router.get("/metrics", tags=["server"], summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    """Requests, errors, latency, queue depth, batch sizes and tokens per second."""
    server = _server(request)
    return Response(server.metrics.render(server.batcher.depth), media_type=CONTENT_TYPE)
