"""``bgem3 serve``: the model over HTTP (``pip install "bgem3[server]"``)."""

from __future__ import annotations

import argparse
import os
import signal
import socket

from bgem3.cli._shared import CLIError, Commands, add_model_options, env_model, model_name

__all__ = ["add_commands"]


def add_commands(commands: Commands) -> None:
    """Add ``serve``."""
    from bgem3.server.settings import API_KEY_ENV, ServerSettings

    defaults = ServerSettings()
    p = commands.add_parser("serve", help="serve the model over HTTP: OpenAI's and "
                                          "text-embeddings-inference's APIs, all of M3")
    add_model_options(p, env_model())
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="(default: %(default)s)")
    p.add_argument("--max-batch-tokens", type=int,
                   help="token budget of one forward batch (default: the model's, 16384)")
    p.add_argument("--max-queued-requests", type=int, default=defaults.max_queued_requests,
                   help="requests that may wait; one more is answered 429 (default: "
                        "%(default)s)")
    p.add_argument("--max-inputs-per-request", type=int,
                   default=defaults.max_inputs_per_request,
                   help="texts in one request; more is answered 413 (default: %(default)s)")
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV) or None,
                   help="require Authorization: Bearer KEY on every route but /health "
                        f"(default: ${API_KEY_ENV})")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow this origin by CORS (repeat for more; default: no CORS)")
    p.add_argument("--log-texts", action="store_true",
                   help="log request texts (default: sizes and timings only)")
    p.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> None:
    """``bgem3 serve``: bind first (a taken port fails at once), load, then serve."""
    try:
        import uvicorn

        from bgem3.server import ServerSettings, create_app
    except ImportError as exc:
        raise ImportError('bgem3 serve needs its extra: pip install "bgem3[server]"') from exc
    from transformers.utils import logging as hf_logging

    from bgem3.encoder import BGEM3

    settings = ServerSettings(max_queued_requests=args.max_queued_requests,
                              max_inputs_per_request=args.max_inputs_per_request,
                              api_key=args.api_key, cors_origins=tuple(args.cors_origin),
                              log_texts=args.log_texts)
    sock = _bind(args.host, args.port)
    try:
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        options = {} if args.max_batch_tokens is None else {"batch_tokens": args.max_batch_tokens}
        model = BGEM3(model_name(args.model), device=args.device, dtype=args.dtype,
                      backend=args.backend, **options)
        app = create_app(model, settings)
        config = uvicorn.Config(app, log_level="info", timeout_graceful_shutdown=60)
        # uvicorn drains on SIGTERM, then raises the signal again for the handler it found:
        # a handler that does nothing makes a drained shutdown exit 0
        signal.signal(signal.SIGTERM, lambda number, frame: None)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or a one-line error (in use, no such address)."""
    if not 0 <= port <= 65535:
        raise CLIError(f"--port must be between 0 and 65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise CLIError(f"cannot resolve --host {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise CLIError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock
