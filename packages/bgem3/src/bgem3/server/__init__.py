"""``bgem3 serve``: BGE-M3 over HTTP for many clients (``pip install "bgem3[server]"``).

Routes speak OpenAI's embeddings API, text-embeddings-inference's (``/embed``,
``/embed_sparse``, ``/rerank``, ``/tokenize``) and ``/v1/m3/encode`` for all three outputs;
requests from all clients are batched together (:mod:`bgem3.server.batcher`). Importing
this package imports neither FastAPI nor torch; :func:`create_app` needs the extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bgem3.server.settings import ServerSettings

if TYPE_CHECKING:
    from bgem3.server.app import create_app

__all__ = ["ServerSettings", "create_app"]


def __getattr__(name: str) -> object:
    if name == "create_app":
        try:
            from bgem3.server.app import create_app
        except ImportError as exc:
            if exc.name in ("fastapi", "starlette", "prometheus_client", "pydantic"):
                raise ImportError('the server needs its extra: pip install "bgem3[server]"'
                                  ) from exc
            raise
        return create_app
    raise AttributeError(f"module 'bgem3.server' has no attribute {name!r}")
