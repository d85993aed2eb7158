"""``create_app``: the FastAPI application around one loaded model.

One model, one batching worker thread, any number of concurrent requests. Errors are JSON
in the shape each client family reads (OpenAI's on its routes, text-embeddings-inference's
elsewhere) and never hold a stack trace; with an API key, every route but ``/health``
needs ``Authorization: Bearer KEY`` (compared in constant time).
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from bgem3.server.batcher import Batcher
from bgem3.server.metrics import Metrics
from bgem3.server.routes import ClientGoneError, Server, router
from bgem3.server.settings import ServerSettings
from bgem3.server.wire import ApiError, error_body

if TYPE_CHECKING:
    from bgem3.encoder import BGEM3

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

_PUBLIC = frozenset({"/health"})
_STATUS_KIND = {400: "Validation", 401: "Unauthorized", 404: "NotFound",
                405: "MethodNotAllowed", 413: "Validation", 415: "Validation",
                422: "Validation", 429: "Overloaded"}


def create_app(model: BGEM3, settings: ServerSettings | None = None) -> FastAPI:
    """The HTTP app serving ``model`` (run it with uvicorn, or ``bgem3 serve``).

    Args:
        model: A loaded :class:`~bgem3.BGEM3`.
        settings: Limits, the API key, CORS and logging (defaults: :class:`ServerSettings`).

    Returns:
        A FastAPI app; its batching thread runs while the app's lifespan does.

    Example:
        >>> import tempfile, bgem3
        >>> from bgem3.testing import build_tiny_checkpoint
        >>> model = bgem3.BGEM3(build_tiny_checkpoint(tempfile.mkdtemp()), device="cpu")
        >>> app = create_app(model)
        >>> sorted(path for path, ops in app.openapi()["paths"].items() if "post" in ops)[:3]
        ['/embed', '/embed_sparse', '/rerank']
    """
    from bgem3 import __version__

    settings = settings or ServerSettings()
    metrics = Metrics()
    batcher = Batcher(model, settings, on_batch=metrics.batch)
    server = Server(model, batcher, settings, metrics, __version__)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _ = model.fingerprint  # hashed once now, not on the first /info
        batcher.start()
        logger.info("serving %s (%s)", model.name, model.device)
        try:
            yield
        finally:
            batcher.stop()  # uvicorn has drained the requests in flight by now

    app = FastAPI(title="bgem3", version=__version__, lifespan=lifespan,
                  summary="BGE-M3's dense, sparse and ColBERT outputs over HTTP")
    app.state.server = server
    app.include_router(router)
    _install_errors(app)
    app.middleware("http")(_observe(server))
    if settings.api_key is not None:
        app.middleware("http")(_require_key(settings.api_key))
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["*"])
    app.add_middleware(_Lenient, max_bytes=settings.max_request_bytes)  # outermost
    return app


class _Lenient:
    """What clients get wrong that has one meaning, put right before routing.

    ``//embed`` is ``/embed`` (LlamaIndex's TEI client doubles a base URL's slash), and a
    body sent without a JSON content type (``curl -d``) is read as JSON all the same (it is
    refused if it is not JSON). A body announced larger than ``max_bytes`` is refused
    before it is read.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length", b"0")
            if length.isdigit() and int(length) > self.max_bytes:
                error = ApiError(413, f"the request body has {int(length)} bytes; this server "
                                      f"takes at most {self.max_bytes}", "Validation")
                response = JSONResponse(error_body(scope["path"], error), status_code=413)
                await response(scope, receive, send)
                return
            if "//" in scope["path"]:
                path = "/" + "/".join(part for part in scope["path"].split("/") if part)
                scope = {**scope, "path": path, "raw_path": path.encode("ascii", "replace")}
            if scope["method"] == "POST":
                headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
                given = dict(scope["headers"]).get(b"content-type", b"")
                if b"json" not in given:
                    scope = {**scope, "headers": [*headers,
                                                  (b"content-type", b"application/json")]}
        await self.app(scope, receive, send)


def route_of(request: Request) -> str:
    """The route asked for, without the prefix a proxy mounts the app under (Ray Serve's)."""
    prefix = str(request.scope.get("root_path", "")).rstrip("/")
    path = request.url.path
    return (path[len(prefix):] or "/") if prefix and path.startswith(prefix) else path


def _json_error(request: Request, error: ApiError) -> JSONResponse:
    return JSONResponse(error_body(route_of(request), error), status_code=error.status,
                        headers=error.headers)


def _install_errors(app: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> Response:
        return _json_error(request, exc if isinstance(exc, ApiError) else ApiError(500, ""))

    async def invalid(request: Request, exc: Exception) -> Response:
        problems = []
        errors = exc.errors() if isinstance(exc, RequestValidationError) else []
        for error in errors[:5]:
            if error.get("type") == "json_invalid":
                problems.append(f"the body is not valid JSON (at character "
                                f"{error.get('loc', ('', '?'))[-1]})")
                continue
            where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
            problems.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
        return _json_error(request, ApiError(422, "; ".join(problems)))

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
        detail = exc.detail if isinstance(exc, StarletteHTTPException) else None
        headers = exc.headers if isinstance(exc, StarletteHTTPException) else None
        message = str(detail) if detail else "error"
        if status == 404:
            message = f"no route {request.method} {route_of(request)}"
        elif status == 405:
            message = f"{request.method} is not allowed on {route_of(request)}"
        error = ApiError(status, message, _STATUS_KIND.get(status, "Error"), dict(headers or {}))
        return _json_error(request, error)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)


Handler = Callable[[Request], Awaitable[Response]]


def _observe(server: Server) -> Callable[[Request, Handler], Awaitable[Response]]:
    """Time and count every request; anything unexpected is a 500 without a trace."""

    async def observe(request: Request, call_next: Handler) -> Response:
        started = time.perf_counter()
        route = route_of(request)
        try:
            response = await call_next(request)
        except ClientGoneError:
            response = Response(status_code=499)  # nginx's "client closed request"
        except Exception:  # the trace goes to the log, never to the client
            logger.exception("error while answering %s %s", request.method, route)
            response = _json_error(request, ApiError(500, "internal server error", "Backend"))
        server.metrics.request(route, response.status_code, time.perf_counter() - started)
        return response

    return observe


def _require_key(key: str) -> Callable[[Request, Handler], Awaitable[Response]]:
    expected = f"Bearer {key}".encode()

    async def require_key(request: Request, call_next: Handler) -> Response:
        if route_of(request) in _PUBLIC:
            return await call_next(request)
        given = request.headers.get("authorization", "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, expected):
            return _json_error(request, ApiError(
                401, "missing or wrong API key: send Authorization: Bearer <key>",
                "Unauthorized", {"WWW-Authenticate": "Bearer"}))
        return await call_next(request)

    return require_key

