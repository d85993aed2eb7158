"""Batching across requests: each caller gets its own outputs, long work goes in slices
behind short queries, and a caller that goes away has its work dropped."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from bgem3 import BGEM3
from bgem3.server import ServerSettings
from bgem3.server.batcher import Batcher, OverloadedError
from bgem3.testing import random_texts

from tests.server.conftest import Gated


def test_concurrent_callers_get_their_own_outputs_in_fewer_calls(model: BGEM3) -> None:
    gated = Gated(model)
    batcher = Batcher(gated, ServerSettings())  # type: ignore[arg-type]
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


def test_long_documents_do_not_starve_a_short_query(model: BGEM3) -> None:
    gated = Gated(model)
    settings = ServerSettings(short_tokens=64, slice_tokens=400)
    batcher = Batcher(gated, settings)  # type: ignore[arg-type]
    long_texts = random_texts(24, min_words=60, max_words=80, seed=5)
    finished: list[str] = []

    async def run() -> None:
        async def tagged(name: str, kind: str, texts: list[str]) -> None:
            await batcher.encode(kind, texts, dense=True)  # type: ignore[arg-type]
            finished.append(name)

        documents = asyncio.ensure_future(tagged("documents", "document", long_texts))
        await asyncio.sleep(0.05)  # the first slice of documents is at the gate
        query = asyncio.ensure_future(tagged("query", "query", ["a short query"]))
        await asyncio.sleep(0.05)
        gated.gate.set()
        await asyncio.gather(documents, query)

    batcher.start()
    try:
        asyncio.run(run())
    finally:
        batcher.stop()
    assert finished == ["query", "documents"]
    sizes = [len(c) for c in gated.calls]
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
