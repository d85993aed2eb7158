"""The server's Prometheus metrics, in a registry of its own (one per app)."""

from __future__ import annotations

import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""Prometheus' text exposition format."""

_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
_TOKENS = tuple(2.0**i for i in range(4, 21))


class Metrics:
    """Requests, errors, latency, queue depth, batch sizes and token throughput.

    Example:
        >>> metrics = Metrics()
        >>> metrics.request("/embed", 200, 0.01)
        >>> 'bgem3_requests_total{route="/embed",status="200"} 1.0' in metrics.render()
        True
    """

    def __init__(self, window: float = 10.0) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("bgem3_requests", "HTTP requests answered", ["route", "status"],
                                registry=r)
        self.errors = Counter("bgem3_request_errors", "HTTP requests answered with 4xx or 5xx",
                              ["route", "status"], registry=r)
        self.latency = Histogram("bgem3_request_duration_seconds", "Time to answer a request",
                                 ["route"], registry=r)
        self.queue = Gauge("bgem3_queue_depth", "Requests waiting for the model", registry=r)
        self.batch_rows = Histogram("bgem3_batch_rows", "Texts per model call", buckets=_ROWS,
                                    registry=r)
        self.batch_tokens = Histogram("bgem3_batch_tokens", "Tokens per model call",
                                      buckets=_TOKENS, registry=r)
        self.tokens = Counter("bgem3_tokens", "Tokens encoded", registry=r)
        self.throughput = Gauge("bgem3_tokens_per_second",
                                f"Tokens encoded per second over the last {window:g} s",
                                registry=r)
        self._window = window
        self._recent: deque[tuple[float, int]] = deque()

    def request(self, route: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        self.requests.labels(route, str(status)).inc()
        if status >= 400:
            self.errors.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def batch(self, rows: int, tokens: int, seconds: float) -> None:
        """Count one model call (called from the batcher's thread)."""
        self.batch_rows.observe(rows)
        self.batch_tokens.observe(tokens)
        self.tokens.inc(tokens)
        now = time.monotonic()
        self._recent.append((now, tokens))
        while self._recent and self._recent[0][0] < now - self._window:
            self._recent.popleft()
        self.throughput.set(sum(n for _, n in self._recent) / self._window)

    def render(self, queue_depth: int = 0) -> str:
        """The metrics in Prometheus' text format."""
        self.queue.set(queue_depth)
        return generate_latest(self.registry).decode("utf-8")
