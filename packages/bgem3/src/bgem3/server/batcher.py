"""Batching across requests: one model, one worker thread, many concurrent callers.

Requests wait in two queues: *short* ones (every text about ``short_tokens`` tokens or
less, a text counting at most its ``max_length``, and at most ``slice_tokens`` in all:
queries) and *long* ones. Each step of the worker takes work from one queue, and when both
hold some it takes turns: short requests, then a slice of the long ones, then short ones
again. So a query waits about one slice behind long documents, and long documents go on
however many queries come.

A step takes about ``slice_seconds`` of work: as many estimated tokens as the model
encodes in that time by its recent calls (tokens encoded over seconds taken, a weighted
average that forgets older calls; ``short_tokens`` before the first call), at most
``slice_tokens``, and at least one text (one whole request from the short queue). Short
requests get at least two packed rows' worth (1,024 tokens): a model call's fixed cost
makes wide steps of short texts the cheapest per text. As token estimates run high, a
step tends to take a little less than ``slice_seconds``. Long requests are cut into
slices; short ones are taken whole, in order, and those that do not fit wait for the next
turn.

A step groups what it took by what it asks for (kind, ``max_length``, outputs) and
encodes each group in one call of the model, whose token-budget batches then do the
rest. A lone request is encoded at once, and requests that arrive while the model is busy
are encoded together next. The one wait: when the last short step answered several
callers, the next waits for them to come back (at most a tenth of that step, and 50 ms),
so that clients answered together stay batched together.

Each caller gets exactly its own outputs, in its order. A caller that goes away (a client
that disconnects) has its work dropped from the queue; a full queue refuses new requests
(:class:`OverloadedError`) instead of growing without bound.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from bgem3._types import EncodeOutput, Encoder
from bgem3.batching import PACK_WIDTH
from bgem3.errors import TruncationWarning
from bgem3.server.settings import ServerSettings

__all__ = ["Batcher", "OverloadedError", "estimate_tokens", "length_limit"]

Kind = Literal["query", "document"]

_DECAY = 0.8
"""How much a model call's tokens and seconds weigh at the next call (the rate's memory)."""

_REGATHER_SHARE = 0.1
"""Longest wait for the last short step's callers to come back, as a share of its time."""

_REGATHER_MAX = 0.05
"""... and in seconds."""


class OverloadedError(RuntimeError):
    """The queue is full: the request was not accepted (answer ``429``)."""


def estimate_tokens(text: str) -> int:
    """A cheap upper estimate of a text's tokens (XLM-R averages 3-4 characters a token).

    Example:
        >>> estimate_tokens("what is bge-m3?")
        7
    """
    return len(text) // 3 + 2


def length_limit(model: Encoder, kind: Kind, max_length: int | None) -> int:
    """The tokens a text of ``kind`` keeps: ``max_length``, else the model's default for it."""
    return max_length or (model.query_max_length if kind == "query"
                          else model.document_max_length)


@dataclass(eq=False)
class _Job:
    kind: Kind
    texts: list[str]
    max_length: int | None
    outputs: tuple[bool, bool, bool]
    future: asyncio.Future[EncodeOutput]
    loop: asyncio.AbstractEventLoop
    sizes: list[int]
    done: int = 0
    parts: list[EncodeOutput] = field(default_factory=list)
    cancelled: bool = False

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.kind, self.max_length, *self.outputs)


@dataclass(frozen=True)
class _Slice:
    job: _Job
    start: int
    stop: int


class Batcher:
    """Encode for many concurrent async callers with one model in one worker thread.

    Args:
        model: The encoder (a loaded :class:`~bgem3.BGEM3`).
        settings: Queue limits and slice sizes.
        on_batch: Called after each model call with ``(rows, tokens, seconds)``.
        clock: Seconds, for timing the model's calls (tests pass a fake one).

    Example (tested in ``tests/server/``)::

        batcher = Batcher(model, ServerSettings())
        batcher.start()
        out = await batcher.encode("query", ["what is bge-m3?"], dense=True)
        batcher.stop()
    """

    def __init__(self, model: Encoder, settings: ServerSettings,
                 on_batch: Callable[[int, int, float], None] | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.model = model
        self.settings = settings
        self.on_batch = on_batch
        self.clock = clock
        self._short: collections.deque[_Job] = collections.deque()
        self._long: collections.deque[_Job] = collections.deque()
        self._ready = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        # only the worker thread reads or writes these
        self._took_short = False
        self._tokens = 0.0  # tokens encoded and seconds taken, older calls weighing less
        self._seconds = 0.0
        self._short_step = (0, 0.0)  # requests the last short step took, and its seconds

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the worker thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="bgem3-batcher",
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish what is queued, then stop the worker thread."""
        with self._ready:
            self._stopping = True
            self._ready.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def depth(self) -> int:
        """Requests waiting or being encoded."""
        with self._ready:
            return len(self._short) + len(self._long)

    # ------------------------------------------------------------------ callers
    async def encode(self, kind: Kind, texts: Sequence[str], *, max_length: int | None = None,
                     dense: bool = True, sparse: bool = False, colbert: bool = False
                     ) -> EncodeOutput:
        """Queue ``texts`` and wait for their outputs (in order).

        Raises:
            OverloadedError: ``max_queued_requests`` requests are waiting already.
            asyncio.CancelledError: The caller was cancelled; its work is dropped.
        """
        loop = asyncio.get_running_loop()
        limit = length_limit(self.model, kind, max_length)
        sizes = [min(estimate_tokens(t), limit) for t in texts]
        job = _Job(kind, list(texts), max_length, (dense, sparse, colbert),
                   loop.create_future(), loop, sizes)
        short = max(sizes, default=0) <= self.settings.short_tokens \
            and sum(sizes) <= self.settings.slice_tokens
        with self._ready:
            if self._stopping:
                raise OverloadedError("the server is shutting down")
            if len(self._short) + len(self._long) >= self.settings.max_queued_requests:
                raise OverloadedError(f"{self.settings.max_queued_requests} requests are waiting "
                                 "already")
            (self._short if short else self._long).append(job)
            self._ready.notify()
        try:
            return await job.future
        except asyncio.CancelledError:
            job.cancelled = True  # the worker drops it (or ignores its result)
            raise

    # ------------------------------------------------------------------ the worker
    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._short and not self._long and not self._stopping:
                    self._ready.wait()
                if self._stopping and not self._short and not self._long:
                    return
                self._regather()
                slices = self._take()
            started = self.clock()
            groups: dict[tuple[Any, ...], list[_Slice]] = {}
            for part in slices:
                groups.setdefault(part.job.key, []).append(part)
            for group in groups.values():
                self._encode(group)
            if self._took_short:
                self._short_step = (len(slices), self.clock() - started)

    def _regather(self) -> None:
        """Before a short step, wait briefly for the callers the last one answered.

        Clients that got their answers together send their next requests together, but
        not at the same instant: taking the first arrival alone would split one wide step
        into a narrow one and the rest. So while fewer short requests wait than the last
        short step took, the worker waits for them, at most a tenth of that step's time
        and 50 ms. A lone client (a step of one) never waits. Called under the lock.
        """
        expected, seconds = self._short_step
        if not self._short or (self._long and self._took_short) or expected <= 1:
            return
        deadline = time.monotonic() + min(_REGATHER_SHARE * seconds, _REGATHER_MAX)
        while len(self._short) < expected and not self._stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._ready.wait(left)

    def _budget(self) -> int:
        """Estimated tokens the model encodes in about ``slice_seconds``."""
        if self._seconds <= 0:
            return self.settings.short_tokens  # nothing measured yet
        rate = self._tokens / self._seconds
        return max(1, min(int(rate * self.settings.slice_seconds), self.settings.slice_tokens))

    def _learn(self, tokens: int, seconds: float) -> None:
        self._tokens = _DECAY * self._tokens + tokens
        self._seconds = _DECAY * self._seconds + seconds

    def _take(self) -> list[_Slice]:
        """What the next step encodes: short requests or a slice of the long ones, in turn."""
        for queue in (self._short, self._long):
            while queue and queue[0].cancelled:
                queue.popleft()
        # short after long and long after short while both wait; else whichever has work
        self._took_short = bool(self._short) and not (self._long and self._took_short)
        return self._take_short() if self._took_short else self._take_long()

    def _take_short(self) -> list[_Slice]:
        """Whole short requests, in order, while they fit the budget (at least one)."""
        taken: list[_Slice] = []
        # a model call's fixed cost makes wide steps of short texts the cheapest per text
        # (a CPU packs them into rows of 512 tokens): two rows' worth unless capped lower
        budget = max(self._budget(), min(2 * PACK_WIDTH, self.settings.slice_tokens))
        while self._short and (not taken or sum(self._short[0].sizes) <= budget):
            job = self._short.popleft()
            if not job.cancelled:
                budget -= sum(job.sizes)
                taken.append(_Slice(job, 0, len(job.texts)))
        return taken

    def _take_long(self) -> list[_Slice]:
        """The next texts of the long requests, in order, while they fit (at least one)."""
        taken: list[_Slice] = []
        budget = self._budget()
        while self._long:
            job = self._long[0]
            if job.cancelled:
                self._long.popleft()
                continue
            start = stop = job.done
            first = not taken  # a step takes at least one text, however long
            while stop < len(job.texts) and (budget >= job.sizes[stop]
                                             or (first and stop == start)):
                budget -= job.sizes[stop]
                stop += 1
            if stop == start:
                break  # the budget is spent
            taken.append(_Slice(job, start, stop))
            job.done = stop
            if stop < len(job.texts):
                break  # the rest of this job comes in the next step
            self._long.popleft()
        return taken

    def _encode(self, group: list[_Slice]) -> None:
        """One model call for slices that ask for the same outputs; results to their jobs."""
        live = [part for part in group if not part.job.cancelled]
        if not live:
            return
        first = live[0].job
        texts = [t for part in live for t in part.job.texts[part.start : part.stop]]
        dense, sparse, colbert = first.outputs
        encode = (self.model.encode_queries if first.kind == "query"
                  else self.model.encode_documents)
        started = self.clock()
        try:
            with warnings.catch_warnings():  # truncation is reported per request instead
                warnings.simplefilter("ignore", TruncationWarning)
                output = encode(texts, max_length=first.max_length, dense=dense, sparse=sparse,
                                colbert=colbert, show_progress=False)
        except Exception as exc:  # handed to each waiting caller, who answers with an error
            for part in live:
                _resolve(part.job, exc)
            return
        seconds = self.clock() - started
        tokens = int(output.tokens.sum()) if output.tokens is not None else 0
        self._learn(tokens or sum(sum(p.job.sizes[p.start : p.stop]) for p in live), seconds)
        if self.on_batch is not None:
            self.on_batch(len(texts), tokens, seconds)
        offset = 0
        for part in live:
            size = part.stop - part.start
            part.job.parts.append(take(output, offset, offset + size))
            offset += size
            if part.stop == len(part.job.texts):
                _resolve(part.job, concat(part.job.parts))


def _resolve(job: _Job, result: EncodeOutput | BaseException) -> None:
    def settle() -> None:
        if job.future.done():  # cancelled meanwhile
            return
        if isinstance(result, BaseException):
            job.future.set_exception(result)
        else:
            job.future.set_result(result)

    with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
        job.loop.call_soon_threadsafe(settle)


def take(output: EncodeOutput, start: int, stop: int) -> EncodeOutput:
    """Rows ``start:stop`` of an encode output (every field that is present)."""
    return EncodeOutput(
        dense=None if output.dense is None else output.dense[start:stop],
        sparse=None if output.sparse is None else output.sparse[start:stop],
        colbert=None if output.colbert is None else output.colbert[start:stop],
        tokens=None if output.tokens is None else output.tokens[start:stop],
        truncated=None if output.truncated is None else output.truncated[start:stop],
    )


def concat(parts: Sequence[EncodeOutput]) -> EncodeOutput:
    """Encode outputs one after the other, as one output."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]

    def arrays(name: str) -> Any:
        values = [getattr(p, name) for p in parts]
        return None if values[0] is None else np.concatenate(values)

    def lists(name: str) -> Any:
        values = [getattr(p, name) for p in parts]
        return None if values[0] is None else [item for value in values for item in value]

    return EncodeOutput(dense=arrays("dense") if first.dense is not None else None,
                        sparse=lists("sparse"), colbert=lists("colbert"),
                        tokens=arrays("tokens"), truncated=arrays("truncated"))
