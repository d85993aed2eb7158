"""``ServerSettings``: the limits and switches of ``bgem3 serve``, declared once."""

from __future__ import annotations

from dataclasses import dataclass, field

from bgem3._inputs import positive_int

__all__ = ["API_KEY_ENV", "ServerSettings"]

API_KEY_ENV = "BGEM3_API_KEY"
"""The environment variable a server's key is read from (``bgem3 serve`` and its clients)."""


@dataclass(frozen=True)
class ServerSettings:
    """What a server accepts and how it batches.

    Attributes:
        max_queued_requests: Requests waiting for the model at once; one more is answered
            ``429`` with ``Retry-After`` (never an unbounded backlog).
        max_inputs_per_request: Texts in one request; more is ``413`` (OpenAI's own limit
            is 2048, and LangChain sends up to 1000 at a time).
        short_tokens: A text of at most about this many tokens is *short*: short requests
            are served before the next slice of long ones, so long documents never starve
            short queries.
        slice_tokens: About how many tokens of long texts one step of the batcher encodes
            before it looks at the short queue again.
        api_key: When set, every route but ``/health`` needs ``Authorization: Bearer KEY``.
        cors_origins: Origins allowed by CORS (none: no CORS headers at all).
        log_texts: Log request texts (off: logs hold sizes and timings only).
        retry_after: Seconds a ``429`` asks the client to wait.
        max_request_bytes: Largest request body; a larger one is ``413`` unread.

    Example:
        >>> ServerSettings(max_queued_requests=64).max_inputs_per_request
        2048
    """

    max_queued_requests: int = 512
    max_inputs_per_request: int = 2048
    short_tokens: int = 256
    slice_tokens: int = 65536
    api_key: str | None = field(default=None, repr=False)
    cors_origins: tuple[str, ...] = ()
    log_texts: bool = False
    retry_after: int = 1
    max_request_bytes: int = 64 * 2**20

    def __post_init__(self) -> None:
        for name in ("max_queued_requests", "max_inputs_per_request", "short_tokens",
                     "slice_tokens", "retry_after", "max_request_bytes"):
            positive_int(getattr(self, name), name)
        if self.api_key is not None and not (isinstance(self.api_key, str) and self.api_key):
            raise ValueError("api_key must be a non-empty string (or None for no key)")
