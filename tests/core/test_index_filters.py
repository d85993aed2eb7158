"""The metadata filter language: the same meaning on both backends, clear errors."""


from __future__ import annotations

import numpy as np
import pytest
from bgem3 import BGEM3, HybridIndex
from bgem3.index import QdrantHybridIndex
from bgem3.index.filters import Postings
from qdrant_client import QdrantClient

# ------------------------------------------------------------ 16. one filter semantics
META = [{"flag": True}, {"flag": 1}, {"flag": 1.0}, {"tags": ["a", "b"]}, {"tags": "b"},
        {"n": "3"}, {"n": 3}]


@pytest.fixture(scope="module")
def both(model: BGEM3) -> tuple[HybridIndex, QdrantHybridIndex]:
    texts = [f"document number {i}" for i in range(len(META))]
    ids = [f"m{i}" for i in range(len(META))]
    emb = model.encode_documents(texts, dense=True, sparse=True, colbert=True)
    embedded, qdrant = HybridIndex(model), QdrantHybridIndex(model, QdrantClient(":memory:"))
    embedded.add(texts, ids=ids, metadata=META, embeddings=emb)
    qdrant.add(texts, ids=ids, metadata=META, embeddings=emb)
    return embedded, qdrant


@pytest.mark.parametrize(("where", "expected"), [
    ({"flag": True}, {"m0"}),
    ({"flag": 1}, {"m1"}),
    ({"flag": [True, 1]}, {"m0", "m1"}),
    ({"tags": "a"}, {"m3"}),
    ({"tags": "b"}, {"m3", "m4"}),
    ({"n": "3"}, {"m5"}),
    ({"n": 3}, {"m6"}),
    ({"tags": []}, set()),
])
def test_filters_mean_the_same_on_both_backends(both, where: dict, expected: set) -> None:  # type: ignore[no-untyped-def]
    for backend in both:
        found = {h.id for h in backend.search("document", k=len(META), filter=where)}
        assert found == expected, (type(backend).__name__, where)


def test_unmatchable_filters_are_refused_on_both_backends(both) -> None:  # type: ignore[no-untyped-def]
    for backend in both:
        with pytest.raises(ValueError, match="cannot be matched"):
            backend.search("document", filter={"flag": 1.0})
        with pytest.raises(TypeError, match="filter must be a dict"):
            backend.search("document", filter=["flag", True])  # type: ignore[arg-type]


def test_postings_match_as_the_filter_language_says() -> None:
    postings = Postings()
    postings.add([{"lang": "en", "n": 1}, {"lang": ["fr", "en"], "n": True}, {"x": None}], start=0)
    postings.add([{"lang": "de"}], start=3)
    alive = np.ones(4, dtype=bool)
    assert postings.mask({"lang": "en"}, alive).tolist() == [True, True, False, False]
    assert postings.mask({"n": 1}, alive).tolist() == [True, False, False, False]
    assert postings.mask({"lang": ["de", "fr"]}, alive).tolist() == [False, True, False, True]
    assert postings.mask({"lang": []}, alive).tolist() == [False] * 4
    alive[1] = False  # a deleted row never matches
    assert postings.mask({"lang": "en"}, alive).tolist() == [True, False, False, False]
    assert postings.mask(None, alive[:3]).tolist() == [True, False, True]  # older snapshot
