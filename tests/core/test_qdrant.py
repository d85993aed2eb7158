"""The Qdrant backend in embedded (local) mode against the embedded index on the same data."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from bgem3 import BGEM3, HybridIndex
from bgem3.index import QdrantHybridIndex
from bgem3.testing import random_texts
from qdrant_client import QdrantClient

# distinct texts: duplicates tie exactly, and tied documents may come in either order
DOCS = list(dict.fromkeys(random_texts(80, max_words=30, seed=31, log_uniform=True)))[:50]
IDS = [f"doc-{i}" for i in range(len(DOCS))]
META = [{"lang": ["en", "fr"][i % 2], "year": 2020 + i % 3} for i in range(len(DOCS))]
QUERIES = random_texts(6, max_words=5, seed=32)


@pytest.fixture(scope="module")
def pair(model: BGEM3) -> tuple[HybridIndex, QdrantHybridIndex]:
    emb = model.encode_documents(DOCS, dense=True, sparse=True, colbert=True)
    embedded, qdrant = HybridIndex(model), QdrantHybridIndex(model, QdrantClient(":memory:"))
    embedded.add(DOCS, ids=IDS, metadata=META, embeddings=emb)
    qdrant.add(DOCS, ids=IDS, metadata=META, embeddings=emb)
    return embedded, qdrant


@pytest.mark.parametrize("fusion", ["weighted", "rrf"])
@pytest.mark.parametrize("rerank", [True, False])
@pytest.mark.parametrize("mode", ["hybrid", "dense", "sparse"])
def test_client_side_fusion_ranks_as_the_embedded_index(pair, fusion: str, rerank: bool,  # type: ignore[no-untyped-def]
                                                         mode: str) -> None:
    embedded, qdrant = pair
    for query in QUERIES:
        options = {"k": 6, "candidates": 10, "mode": mode, "fusion": fusion, "rerank": rerank}
        ours = embedded.search(query, **options)  # type: ignore[arg-type]
        theirs = qdrant.search(query, **options)  # type: ignore[arg-type]
        assert [h.score for h in theirs] == pytest.approx([h.score for h in ours], abs=5e-4)
        if fusion == "rrf" and ours:  # exact RRF ties (1st + 2nd vs 2nd + 1st) come in either order
            last = ours[-1].score
            ours = sorted((h for h in ours if h.score > last + 1e-9), key=lambda h: h.id)
            theirs = sorted((h for h in theirs if h.score > last + 1e-9), key=lambda h: h.id)
        assert [h.id for h in theirs] == [h.id for h in ours]
        for a, b in zip(ours, theirs, strict=True):
            # ColBERT: fp16 storage in the embedded index, fp32 in Qdrant
            assert b.scores == pytest.approx(a.scores, abs=5e-4)
            assert (a.text, a.metadata) == (b.text, b.metadata)


def test_colbert_only_weights_order_by_maxsim(pair) -> None:  # type: ignore[no-untyped-def]
    _, qdrant = pair
    for query in QUERIES:
        hits = qdrant.search(query, k=5, candidates=10, weights=(0.0, 0.0, 1.0))
        colbert = [h.scores["colbert"] for h in hits]
        assert colbert == sorted(colbert, reverse=True)
        assert [h.score for h in hits] == pytest.approx(colbert)


@pytest.mark.parametrize("mode", ["hybrid", "dense", "sparse"])
def test_server_side_fusion_matches_the_embedded_index(pair, mode: str) -> None:  # type: ignore[no-untyped-def]
    embedded, qdrant = pair
    for query in QUERIES:
        # k covers the whole pool: RRF ties (rank 1 in dense only vs in sparse only) may
        # come in either order, so compare id -> score maps
        ours = embedded.search(query, k=16, candidates=8, mode=mode, fusion="rrf", rerank=False)  # type: ignore[arg-type]
        theirs = qdrant.search(query, k=16, candidates=8, mode=mode, fusion="rrf",  # type: ignore[arg-type]
                               rerank=False)
        if mode == "hybrid":  # the same RRF formula, 1 / (60 + rank), computed by Qdrant
            assert {h.id: h.score for h in theirs} == pytest.approx(
                {h.id: h.score for h in ours}, abs=1e-9)
        else:
            assert [h.id for h in theirs] == [h.id for h in ours]
    dbsf = qdrant.search(QUERIES[0], k=5, fusion="dbsf", rerank=False)
    assert len(dbsf) == 5 and [h.score for h in dbsf] == sorted((h.score for h in dbsf),
                                                                reverse=True)
    with pytest.raises(ValueError, match="dbsf"):
        qdrant.search(QUERIES[0], fusion="dbsf")  # a ColBERT rerank cannot follow it
    with pytest.raises(ValueError, match="dbsf"):
        qdrant.search(QUERIES[0], fusion="dbsf", mode="dense", rerank=False)


def test_search_batch_equals_single_searches(pair, model: BGEM3) -> None:  # type: ignore[no-untyped-def]
    _, qdrant = pair
    for options in ({}, {"fusion": "rrf", "rerank": False}, {"filter": {"lang": "en"}}):
        batched = qdrant.search_batch(QUERIES, k=4, **options)
        singles = [qdrant.search(q, k=4, **options) for q in QUERIES]
        assert [[h.id for h in hits] for hits in batched] == [
            [h.id for h in hits] for hits in singles]
        for many, one in zip(batched, singles, strict=True):  # batched encoding: ~1e-7 apart
            assert [h.score for h in many] == pytest.approx([h.score for h in one], abs=1e-5)
    encoded = model.encode_queries(QUERIES, dense=True, sparse=True, colbert=True)
    assert [[h.id for h in hits] for hits in qdrant.search_encoded(encoded, k=4)] == [
        [h.id for h in hits] for hits in qdrant.search_batch(QUERIES, k=4)]
    assert qdrant.search_batch([], k=3) == []
    with pytest.raises(TypeError, match="list of strings"):
        qdrant.search_batch("one query")  # type: ignore[arg-type]


def test_filters_and_writes(pair, model: BGEM3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, shared = pair
    hits = shared.search(QUERIES[0], k=10, filter={"lang": "fr", "year": [2021, 2022]})
    assert hits and all(h.metadata["lang"] == "fr" and h.metadata["year"] != 2020 for h in hits)
    assert len(shared) == len(DOCS)

    index = QdrantHybridIndex(model, QdrantClient(path=str(tmp_path / "q")), "docs")
    ids = index.add(["one dog", "two cats"], metadata=[{"n": 1}, {"n": 2}])
    index.add(["one dog, replaced"], ids=[ids[0]])
    assert len(index) == 2 and index.get([ids[0]])[0].text == "one dog, replaced"
    with pytest.raises(KeyError, match="nothing deleted"):
        index.delete([ids[1], "missing"])
    index.delete([ids[1]])
    assert len(index) == 1
    index.client.close()
    reopened = QdrantHybridIndex(model, QdrantClient(path=str(tmp_path / "q")), "docs")
    assert [h.id for h in reopened.search("dog", k=3)] == [ids[0]]
    with pytest.raises(ValueError, match="k must be"):
        reopened.search("dog", k=0)


def test_missing_qdrant_client_says_how_to_install(model: BGEM3,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "qdrant_client", None)
    with pytest.raises(ImportError, match=r'pip install "bgem3\[qdrant\]"'):
        QdrantHybridIndex(model)
