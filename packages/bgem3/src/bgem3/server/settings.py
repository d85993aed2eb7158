"""``ServerSettings``: the limits and switches of ``bgem3 serve``, declared once."""

from __future__ import annotations

import math
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
        short_tokens: A text of at most about this many tokens is *short*: requests of
            short texts only (queries) wait in their own queue, and the batcher takes turns
            between it and the long one, so neither starves the other.
        slice_seconds: About how long one step of the batcher runs the model: it takes as
            many tokens as the model, by its own recent calls, encodes in this time. A
            query that arrives behind long documents waits about this long at most.
        slice_tokens: At most this many (estimated) tokens in one step, however fast the
            model seems (a single longer text still goes, alone): it bounds a step when the
            measured rate misleads. A request of more is long even if every text is short.
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
    slice_seconds: float = 0.5
    slice_tokens: int = 16384
    api_key: str | None = field(default=None, repr=False)
    cors_origins: tuple[str, ...] = ()
    log_texts: bool = False
    retry_after: int = 1
    max_request_bytes: int = 64 * 2**20

    def __post_init__(self) -> None:
        for name in ("max_queued_requests", "max_inputs_per_request", "short_tokens",
                     "slice_tokens", "retry_after", "max_request_bytes"):
            positive_int(getattr(self, name), name)
        seconds = self.slice_seconds
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
                or not 0 < seconds < math.inf:
            raise ValueError(f"slice_seconds must be a positive number of seconds, got "
                             f"{seconds!r}")
        if self.api_key is not None and not (isinstance(self.api_key, str) and self.api_key):
            raise ValueError("api_key must be a non-empty string (or None for no key)")
