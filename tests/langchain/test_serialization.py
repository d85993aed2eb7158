"""Pickling, deep copies and LangChain serialisation: settings travel, the model is shared."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import pytest
from bgem3 import BGEM3, HybridIndex
from bgem3.shared import model_reference, resolve_reference
from langchain_bgem3 import (
    BGEM3ColbertReranker,
    BGEM3Embeddings,
    BGEM3HybridRetriever,
    BGEM3SparseEmbeddings,
)
from langchain_core.documents import Document
from langchain_core.load import dumpd, load
from lc_data import QUERIES, TEXTS
from qdrant_client import QdrantClient

from tests.core.test_shared import check_pickles_by_reference

SETTINGS = [  # each class, with settings other than its defaults
    (BGEM3Embeddings, {"batch_size": 8, "query_max_length": 64}),
    (BGEM3SparseEmbeddings, {"batch_size": 8, "query_max_length": 64}),
    (BGEM3ColbertReranker, {"top_n": 2, "weights": (0.5, 0.2, 0.3)}),
]


def _same_results(a, b) -> bool:  # type: ignore[no-untyped-def]
    if isinstance(a, BGEM3ColbertReranker):
        docs = [Document(page_content=t) for t in TEXTS[:5]]
        return a.compress_documents(docs, QUERIES[0]) == b.compress_documents(docs, QUERIES[0])
    return bool(a.embed_query(QUERIES[0]) == b.embed_query(QUERIES[0]))


@pytest.mark.parametrize(("cls", "settings"), SETTINGS)
def test_pickles_and_deep_copies_by_reference_through_bgem3_shared(
        cls, settings, model: BGEM3, tiny_path: Path) -> None:  # type: ignore[no-untyped-def]
    check_pickles_by_reference(cls, model, tiny_path, _same_results, **settings)


@pytest.mark.filterwarnings("ignore::langchain_core._api.beta_decorator.LangChainBetaWarning")
@pytest.mark.parametrize(("cls", "options"), SETTINGS)
def test_dumpd_and_load_rebuild_the_settings_on_the_shared_model(
        cls, options, model: BGEM3) -> None:  # type: ignore[no-untyped-def]
    obj = cls(model=model, **options)
    data = json.loads(json.dumps(dumpd(obj)))  # plain JSON
    assert data["type"] == "constructor"
    assert data["id"] == [*cls.__module__.split("."), cls.__name__]
    back = load(data, allowed_objects=[cls], valid_namespaces=["langchain_bgem3"])
    assert back.bgem3 is resolve_reference(model_reference(model))
    assert {k: getattr(back, k) for k in options} == options
    assert _same_results(back, obj)


def test_a_retriever_holds_an_index_and_is_not_serialised(lc_retriever) -> None:  # type: ignore[no-untyped-def]
    assert dumpd(lc_retriever)["type"] == "not_implemented"


def test_a_retriever_refuses_pickle_and_deep_copy_and_says_what_to_do(
        lc_retriever, model: BGEM3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    on_qdrant = BGEM3HybridRetriever.from_texts(TEXTS[:3], model=model,
                                                qdrant_client=QdrantClient(":memory:"))
    for retriever in (lc_retriever, on_qdrant):
        for copy_it in (pickle.dumps, copy.deepcopy, lambda r: r.model_copy(deep=True)):
            with pytest.raises(TypeError, match=r"cannot be pickled or deep-copied: it holds a "
                               r"live index.*index\.save\(path\)"):
                copy_it(retriever)
        assert copy.copy(retriever).index is retriever.index  # a shallow copy shares it
    lc_retriever.index.save(tmp_path / "index")  # what the message advises
    again = BGEM3HybridRetriever(index=HybridIndex.load(tmp_path / "index", model), k=4)
    assert again.invoke(QUERIES[0]) == lc_retriever.invoke(QUERIES[0])
