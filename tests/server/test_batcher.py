"""Batching across requests: each caller gets its own outputs, long work goes in slices
sized by the model's measured speed, short and long requests take turns, and a caller that
goes away has its work dropped."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from bgem3 import BGEM3, EncodeOutput
from bgem3.server import ServerSettings
from bgem3.server.batcher import Batcher, OverloadedError, estimate_tokens
from bgem3.testing import random_texts

from tests.server.conftest import Gated

# The gate's wait counts as model time; where a test is not about the measured speed, a long
# slice_seconds leaves the size of a step to slice_tokens alone.
UNHURRIED = 60.0


class Paced(Gated):
    """The tiny model on a fake clock: a documents call takes its tokens / ``rate`` seconds."""

    def __init__(self, model: BGEM3, rate: float) -> None:
        super().__init__(model)
        self.rate = rate
        self.now = 0.0
        self.gate.set()

    def clock(self) -> float:
        return self.now

    def encode_documents(self, texts: list[str], **options: Any) -> EncodeOutput:
        output = super().encode_documents(texts, **options)
        self.now += float(output.tokens.sum()) / self.rate  # type: ignore[union-attr]
        return output


def test_concurrent_callers_get_their_own_outputs_in_fewer_calls(model: BGEM3) -> None:
    gated = Gated(model)
    batcher = Batcher(gated, ServerSettings(slice_seconds=UNHURRIED))  # type: ignore[arg-type]
    batches = [random_texts(n, max_words=12, seed=n) for n in (1, 3, 2, 5, 1, 4)]

    async def run() -> list[object]:
        calls = [batcher.encode("query", texts, dense=True, sparse=True) for texts in batches]
        gather = asyncio.gather(*calls)
        await asyncio.sleep(0.05)  # every caller is queued while the gate is shut
        gated.gate.set()
        return list(await gather)

    batcher.start()
    try:
        outputs = asyncio.run(run())
    finally:
        batcher.stop()
    for texts, output in zip(batches, outputs, strict=True):
        expected = model.encode_queries(texts, dense=True, sparse=True)
        np.testing.assert_allclose(output.dense, expected.dense, atol=1e-6)  # type: ignore[attr-defined]
        assert [v.indices.tolist() for v in output.sparse] == [  # type: ignore[attr-defined]
            v.indices.tolist() for v in expected.sparse]  # type: ignore[union-attr]
    assert len(gated.calls) <= 2  # the first caller alone, then all the others together


def _beside_documents(model: BGEM3, settings: ServerSettings, documents: list[str],
                      kind: str, texts: list[str], max_length: int | None = None
                      ) -> tuple[list[str], list[list[str]]]:
    """A request of ``texts`` queued while a long request of ``documents`` is at the gate:
    the order in which the two finished, and the model calls."""
    gated = Gated(model)
    batcher = Batcher(gated, settings)  # type: ignore[arg-type]
    finished: list[str] = []

    async def run() -> None:
        async def tagged(name: str, kind: str, texts: list[str], max_length: int | None) -> None:
            await batcher.encode(kind, texts, max_length=max_length,  # type: ignore[arg-type]
                                 dense=True)
            finished.append(name)

        long = asyncio.ensure_future(tagged("documents", "document", documents, None))
        await asyncio.sleep(0.05)  # the first slice of documents is at the gate
        other = asyncio.ensure_future(tagged("other", kind, texts, max_length))
        await asyncio.sleep(0.05)
        gated.gate.set()
        await asyncio.gather(long, other)

    batcher.start()
    try:
        asyncio.run(run())
    finally:
        batcher.stop()
    return finished, gated.calls


def test_long_documents_do_not_starve_a_short_query(model: BGEM3) -> None:
    long_texts = random_texts(24, min_words=60, max_words=80, seed=5)
    finished, calls = _beside_documents(model, ServerSettings(short_tokens=64, slice_tokens=400),
                                        long_texts, "query", ["a short query"])
    assert finished == ["other", "documents"]
    sizes = [len(c) for c in calls]
    assert sizes[1] == 1 and len(sizes) > 3  # the query right after the first slice
    assert sum(sizes) == len(long_texts) + 1


def test_a_cancelled_caller_has_its_work_dropped(model: BGEM3) -> None:
    gated = Gated(model)
    batcher = Batcher(gated, ServerSettings())  # type: ignore[arg-type]

    async def run() -> None:
        first = asyncio.ensure_future(batcher.encode("query", ["first"]))
        await asyncio.sleep(0.05)  # "first" is at the gate
        gone = asyncio.ensure_future(batcher.encode("query", ["never encoded"]))
        await asyncio.sleep(0.01)
        gone.cancel()
        await asyncio.sleep(0.01)
        gated.gate.set()
        await first
        assert await batcher.encode("query", ["after"]) is not None

    batcher.start()
    try:
        asyncio.run(run())
    finally:
        batcher.stop()
    assert ["never encoded"] not in gated.calls
    assert gated.calls == [["first"], ["after"]]


def test_a_full_queue_refuses_and_errors_reach_their_callers(model: BGEM3) -> None:
    gated = Gated(model)
    batcher = Batcher(gated, ServerSettings(max_queued_requests=1))  # type: ignore[arg-type]

    async def run() -> None:
        held = asyncio.ensure_future(batcher.encode("query", ["held"]))
        await asyncio.sleep(0.05)
        waiting = asyncio.ensure_future(batcher.encode("query", ["waiting"]))
        await asyncio.sleep(0.01)
        with pytest.raises(OverloadedError, match="1 requests are waiting"):
            await batcher.encode("query", ["refused"])
        gated.gate.set()
        await asyncio.gather(held, waiting)
        with pytest.raises(ValueError, match="max_length"):
            await batcher.encode("query", ["x"], max_length=10**6)

    batcher.start()
    try:
        asyncio.run(run())
    finally:
        batcher.stop()


def test_a_query_beside_a_long_request_waits_for_one_slice_only(model: BGEM3) -> None:
    long_texts = random_texts(40, min_words=250, max_words=300, seed=6)  # passages
    finished, calls = _beside_documents(model, ServerSettings(), long_texts, "query",
                                        ["a short query"])
    assert finished == ["other", "documents"]
    assert len(calls[0]) < len(long_texts)
    assert calls[1] == ["a short query"]


def test_texts_cut_by_max_length_count_at_that_length(model: BGEM3) -> None:
    long_texts = random_texts(40, min_words=250, max_words=300, seed=6)
    # two passages as long as the others, but cut at 32 tokens: a short request
    finished, calls = _beside_documents(model, ServerSettings(), long_texts, "document",
                                        long_texts[:2], max_length=32)
    assert finished == ["other", "documents"]
    assert calls[1] == long_texts[:2]


def test_short_and_long_requests_take_turns(model: BGEM3) -> None:
    gated = Gated(model)
    settings = ServerSettings(short_tokens=16, slice_tokens=40, slice_seconds=UNHURRIED)
    batcher = Batcher(gated, settings)  # type: ignore[arg-type]
    documents = [" ".join(["alpha"] * 17)] * 6  # each long, one to a slice
    queries = [f"query {i:02d}" for i in range(60)]  # ten to a step
    assert estimate_tokens(documents[0]) == 35 and estimate_tokens(queries[0]) == 4
    finished: list[str] = []

    async def run() -> list[EncodeOutput]:
        async def tagged(name: str, kind: str, texts: list[str]) -> EncodeOutput:
            output = await batcher.encode(kind, texts, dense=True)  # type: ignore[arg-type]
            finished.append(name)
            return output

        long = asyncio.ensure_future(tagged("documents", "document", documents))
        await asyncio.sleep(0.05)  # the first document is at the gate
        short = asyncio.gather(*(tagged(q, "query", [q]) for q in queries))
        await asyncio.sleep(0.05)  # every query is queued
        gated.gate.set()
        await long
        return list(await short)

    batcher.start()
    try:
        outputs = asyncio.run(run())
    finally:
        batcher.stop()
    kinds = ["document" if call[0] in documents else "query" for call in gated.calls]
    assert kinds == ["document", "query"] * 6
    assert [q for call in gated.calls[1::2] for q in call] == queries  # in order
    assert [len(call) for call in gated.calls] == [1, 10] * 6
    assert finished.index("documents") < finished.index(queries[-1])
    expected = model.encode_queries(queries, dense=True).dense
    np.testing.assert_allclose(np.concatenate([o.dense for o in outputs]),  # type: ignore[misc]
                               expected, atol=1e-6)  # type: ignore[arg-type]


@pytest.mark.parametrize(("rate", "per_slice"), [(200.0, 1), (1000.0, 4), (10**6, 9)])
def test_a_slice_is_what_the_model_encodes_in_slice_seconds(
        model: BGEM3, rate: float, per_slice: int) -> None:
    paced = Paced(model, rate)  # tokens a second
    settings = ServerSettings(short_tokens=256, slice_seconds=0.5, slice_tokens=1000)
    batcher = Batcher(paced, settings, clock=paced.clock)  # type: ignore[arg-type]
    texts = [" ".join(["alpha"] * 50)] * 24
    assert estimate_tokens(texts[0]) == 101  # the first slice, before any call: 256 tokens

    async def run() -> EncodeOutput:
        return await batcher.encode("document", texts, dense=True)

    batcher.start()
    try:
        output = asyncio.run(run())
    finally:
        batcher.stop()
    rest = len(texts) - 2
    expected = [2] + [per_slice] * (rest // per_slice) + [rest % per_slice] * (rest % per_slice > 0)
    assert [len(call) for call in paced.calls] == expected
    assert output.dense is not None and len(output.dense) == len(texts)


@pytest.mark.parametrize("seconds", [0, -0.5, float("nan"), float("inf"), "0.5", True])
def test_slice_seconds_must_be_a_positive_number(seconds: object) -> None:
    with pytest.raises(ValueError, match="slice_seconds must be a positive number"):
        ServerSettings(slice_seconds=seconds)  # type: ignore[arg-type]


class SlowQueries(Gated):
    """The tiny model on a fake clock: every queries call takes one second."""

    def __init__(self, model: BGEM3) -> None:
        super().__init__(model)
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def encode_queries(self, texts: list[str], **options: Any) -> EncodeOutput:
        output = super().encode_queries(texts, **options)
        self.now += 1.0
        return output


def test_callers_answered_together_are_batched_together_again(model: BGEM3) -> None:
    slow = SlowQueries(model)
    batcher = Batcher(slow, ServerSettings(), clock=slow.clock)  # type: ignore[arg-type]

    async def run() -> None:
        first = asyncio.ensure_future(batcher.encode("query", ["first"]))
        await asyncio.sleep(0.05)  # "first" is at the gate: a, b, c queue behind it
        together = asyncio.gather(*(batcher.encode("query", [t]) for t in "abc"))
        await asyncio.sleep(0.05)
        slow.gate.set()
        await asyncio.gather(first, together)  # answered together (a step of three)
        # they come back one by one: the worker waits a little for all three
        d = asyncio.ensure_future(batcher.encode("query", ["d"]))
        await asyncio.sleep(0.005)
        await asyncio.gather(d, *(batcher.encode("query", [t]) for t in "ef"))
        alone = batcher.clock()
        await batcher.encode("query", ["g"])  # a lone caller now: one step of one
        await batcher.encode("query", ["h"])
        assert batcher.clock() == alone + 2

    batcher.start()
    try:
        asyncio.run(run())
    finally:
        batcher.stop()
    assert slow.calls == [["first"], ["a", "b", "c"], ["d", "e", "f"], ["g"], ["h"]]
