"""SearchOptions: one declaration of the search defaults, checked once, shared by every backend."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import pytest
from bgem3 import BGEM3, EncodeOutput, Encoder, HybridIndex
from bgem3.index import DEFAULT_SEARCH, QdrantHybridIndex, SearchIndex, SearchOptions
from bgem3.index.options import SearchKeywords
from bgem3.testing import random_texts

DOCS = random_texts(12, max_words=20, seed=5)


@pytest.mark.parametrize(("change", "error", "message"), [
    ({"k": 0}, ValueError, "k must be a positive int"),
    ({"k": True}, ValueError, "k must be a positive int"),
    ({"candidates": 2.5}, ValueError, "candidates must be a positive int"),
    ({"rrf_k": -1}, ValueError, "rrf_k must be a positive int"),
    ({"mode": "bm25"}, ValueError, "mode must be"),
    ({"fusion": "max"}, ValueError, "fusion must be one of"),
    ({"weights": (1.0, 1.0)}, ValueError, "three finite non-negative"),
    ({"weights": "abc"}, ValueError, "three numbers"),
    ({"rerank": "yes"}, TypeError, "rerank must be"),
    ({"filter": ["lang"]}, TypeError, "filter must be a dict"),
    ({"filter": {"x": 1.5}}, ValueError, "cannot be matched"),
])
def test_bad_options_are_refused_when_made(change: dict[str, Any], error: type,
                                           message: str) -> None:
    with pytest.raises(error, match=message):
        SearchOptions(**change)
    with pytest.raises(error, match=message):
        DEFAULT_SEARCH.replace(**change)


def test_options_round_trip_as_search_keywords() -> None:
    options = SearchOptions(k=3, weights=[1, 0, 2], fusion="rrf")  # type: ignore[arg-type]
    assert options.weights == (1.0, 0.0, 2.0)  # a list becomes a tuple of floats
    assert SearchOptions(**options.as_kwargs()) == options
    assert set(options.as_kwargs()) == set(SearchOptions.names())


@pytest.mark.parametrize("method", ["search", "search_batch", "search_encoded"])
@pytest.mark.parametrize("backend", [SearchIndex, HybridIndex, QdrantHybridIndex])
def test_every_search_method_takes_its_defaults_from_one_place(backend: type,
                                                               method: str) -> None:
    parameters = inspect.signature(getattr(backend, method)).parameters
    assert parameters["k"].default == DEFAULT_SEARCH.k
    assert parameters["options"].kind is inspect.Parameter.VAR_KEYWORD
    # the typed keywords are exactly the options besides k: none can be forgotten
    assert set(SearchKeywords.__annotations__) == set(SearchOptions.names()) - {"k"}


def test_unknown_search_options_are_named(model: BGEM3) -> None:
    index = HybridIndex(model)
    with pytest.raises(TypeError, match=r"unknown search options \['top_k'\]"):
        index.search("a query", top_k=3)  # type: ignore[call-arg]


def test_backends_check_options_against_what_they_support(model: BGEM3) -> None:
    index = HybridIndex(model, store_colbert=False)
    with pytest.raises(ValueError, match="fusion must be one of 'weighted', 'rrf'"):
        index.search_options(fusion="dbsf")
    with pytest.raises(ValueError, match="rerank=True needs an index that stores ColBERT"):
        index.search_options(rerank=True)
    assert index.search_options().rerank is False  # None resolves to what the index stores
    assert HybridIndex(model).search_options().rerank is True


class _Wrapped:
    """Another Encoder: a model behind a facade (as a remote client would be)."""

    def __init__(self, model: BGEM3) -> None:
        self.inner = model
        self.name, self.fingerprint = model.name, model.fingerprint
        self.dense_dim, self.colbert_dim = model.dense_dim, model.colbert_dim
        self.vocab_size, self.has_heads = model.vocab_size, model.has_heads
        self.query_max_length = model.query_max_length
        self.document_max_length = model.document_max_length
        self.calls = 0

    def encode_queries(self, texts: Any, **options: Any) -> EncodeOutput:
        self.calls += 1
        return self.inner.encode_queries(texts, **options)

    def encode_documents(self, texts: Any, **options: Any) -> EncodeOutput:
        self.calls += 1
        return self.inner.encode_documents(texts, **options)


def test_any_encoder_feeds_an_index(model: BGEM3) -> None:
    wrapped = _Wrapped(model)
    assert isinstance(wrapped, Encoder) and isinstance(model, Encoder)
    ours, reference = HybridIndex(wrapped), HybridIndex(model)
    for index in (ours, reference):
        index.add(DOCS, ids=[f"d{i}" for i in range(len(DOCS))])
    assert wrapped.calls == 1
    for query in DOCS[:3]:
        got, want = ours.search(query, k=4), reference.search(query, k=4)
        assert [h.id for h in got] == [h.id for h in want]
        np.testing.assert_allclose([h.score for h in got], [h.score for h in want], rtol=1e-6)


def test_a_non_encoder_is_refused_with_what_was_given() -> None:
    with pytest.raises(TypeError, match=r"needs a bgem3\.BGEM3 model .* got dict"):
        HybridIndex({})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got the path"):
        HybridIndex("BAAI/bge-m3")  # type: ignore[arg-type]
