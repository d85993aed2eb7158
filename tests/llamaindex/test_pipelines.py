"""LlamaIndex pipelines: VectorStoreIndex, Qdrant hybrid, our retriever in query engines."""

from __future__ import annotations

import uuid

import pytest
from bgem3 import BGEM3, HybridIndex
from li_data import QUERIES, TEXTS, make_nodes
from llama_index.core import Settings, StorageContext, VectorStoreIndex
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.retrievers import QueryFusionRetriever
from llama_index.core.schema import MetadataMode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)
from llama_index.embeddings.bgem3 import BGEM3Embedding
from llama_index.postprocessor.bgem3 import BGEM3ColbertRerank
from llama_index.retrievers.bgem3 import BGEM3HybridRetriever
from llama_index.sparse_embeddings.bgem3 import BGEM3SparseEmbedding
from llama_index.vector_stores.qdrant import QdrantVectorStore
from qdrant_client import QdrantClient


def test_vector_store_index_with_our_embedding(model: BGEM3, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(Settings, "_embed_model", BGEM3Embedding(model=model))
    nodes = make_nodes()
    index = VectorStoreIndex(nodes)
    for i in (0, 13):  # the stored vector embeds the metadata too: query with the same text
        query = nodes[i].get_content(metadata_mode=MetadataMode.EMBED)
        assert index.as_retriever(similarity_top_k=2).retrieve(query)[0].node.node_id == f"n{i}"


def test_qdrant_hybrid_with_our_sparse_functions(model: BGEM3) -> None:
    sparse = BGEM3SparseEmbedding(model=model)
    store = QdrantVectorStore("docs", client=QdrantClient(":memory:"), enable_hybrid=True,
                              sparse_doc_fn=sparse.sparse_doc_fn,
                              sparse_query_fn=sparse.sparse_query_fn)
    nodes = [n.model_copy(update={"id_": str(uuid.uuid5(uuid.NAMESPACE_URL, n.node_id))})
             for n in make_nodes()]  # Qdrant wants UUID point ids
    index = VectorStoreIndex(nodes, embed_model=BGEM3Embedding(model=model),
                             storage_context=StorageContext.from_defaults(vector_store=store))
    hybrid = index.as_retriever(vector_store_query_mode="hybrid", similarity_top_k=3,
                                sparse_top_k=5)
    for i in (4, 21):
        query = nodes[i].get_content(metadata_mode=MetadataMode.EMBED)
        assert hybrid.retrieve(query)[0].node.node_id == nodes[i].node_id


@pytest.fixture(scope="module")
def retriever(model: BGEM3) -> BGEM3HybridRetriever:
    return BGEM3HybridRetriever.from_nodes(make_nodes(), model=model, similarity_top_k=4)


def test_retriever_equals_the_core_index(model: BGEM3, retriever: BGEM3HybridRetriever) -> None:
    index = HybridIndex(model)
    index.add(TEXTS, ids=[f"n{i}" for i in range(len(TEXTS))])
    for query in QUERIES:
        got = retriever.retrieve(query)
        hits = index.search(query, k=4)
        assert [n.node.node_id for n in got] == [h.id for h in hits]
        assert [n.score for n in got] == pytest.approx([h.score for h in hits])
        for n, h in zip(got, hits, strict=True):
            assert n.node.metadata["colbert_score"] == pytest.approx(h.scores["colbert"])
            assert "colbert_score" not in n.node.get_content(metadata_mode="llm")  # type: ignore[arg-type]


async def test_async_filters_and_bad_input(model: BGEM3, retriever: BGEM3HybridRetriever) -> None:
    assert [n.node.node_id for n in await retriever.aretrieve(QUERIES[1])] == \
        [n.node.node_id for n in retriever.retrieve(QUERIES[1])]
    filters = MetadataFilters(filters=[
        MetadataFilter(key="lang", value="fr"),
        MetadataFilter(key="n", value=[1, 4, 7, 10], operator=FilterOperator.IN)])
    french = BGEM3HybridRetriever(retriever.index, 10, filters=filters).retrieve(QUERIES[0])
    assert french and {n.node.node_id for n in french} <= {"n1", "n4", "n7", "n10"}
    with pytest.raises(ValueError, match="OR across different keys"):
        BGEM3HybridRetriever(retriever.index, filters=MetadataFilters(
            filters=filters.filters, condition=FilterCondition.OR))
    with pytest.raises(ValueError, match="not supported"):
        BGEM3HybridRetriever(retriever.index, filters=MetadataFilters(
            filters=[MetadataFilter(key="n", value=3, operator=FilterOperator.GT)]))
    with pytest.raises(ValueError, match="query is empty"):
        retriever.retrieve(" ")
    with pytest.raises(ValueError, match="similarity_top_k"):
        BGEM3HybridRetriever(retriever.index, 0)
    assert BGEM3HybridRetriever.from_nodes([], model=model).retrieve(QUERIES[0]) == []


def _eq(key: str, value: object) -> MetadataFilter:
    return MetadataFilter(key=key, value=value)  # type: ignore[arg-type]


def _in(key: str, values: list[object]) -> MetadataFilter:
    return MetadataFilter(key=key, value=values, operator=FilterOperator.IN)  # type: ignore[arg-type]


def _all(*filters: MetadataFilter | MetadataFilters) -> MetadataFilters:
    return MetadataFilters(filters=list(filters), condition=FilterCondition.AND)


def _any(*filters: MetadataFilter | MetadataFilters) -> MetadataFilters:
    return MetadataFilters(filters=list(filters), condition=FilterCondition.OR)


@pytest.mark.parametrize(("filters", "wanted"), [
    (_all(_eq("lang", "en"), _eq("lang", "fr")), lambda m: False),
    (_all(_eq("lang", "fr"), _eq("lang", "fr")), lambda m: m["lang"] == "fr"),
    (_any(_eq("lang", "en"), _eq("lang", "fr")), lambda m: m["lang"] in ("en", "fr")),
    (_all(_in("lang", ["en", "fr"]), _in("lang", ["fr", "de"])), lambda m: m["lang"] == "fr"),
    (_all(_in("lang", ["en", "fr"]), _any(_eq("n", 0), _eq("n", 1), _eq("n", 2))),
     lambda m: m["n"] in (0, 1)),
    (_any(_all(_eq("n", 3), _eq("n", 4)), _eq("n", 5)), lambda m: m["n"] == 5),
    (_all(_eq("lang", "de"), _any(_in("n", []), _eq("n", 2))), lambda m: m["n"] == 2),
    (_all(_eq("n", 1), _eq("n", "1")), lambda m: False),  # typed, as in the core: "1" != 1
    (_any(_eq("lang", "de"), _all()), lambda m: True),
], ids=["and-two-equalities", "and-same-equality", "or-one-key", "and-two-ins", "nested",
        "or-of-an-empty-and", "or-of-an-empty-in", "typed", "or-with-no-condition"])
def test_metadata_filters_match_exactly_what_they_say(retriever: BGEM3HybridRetriever,
                                                      filters, wanted) -> None:  # type: ignore[no-untyped-def]
    got = BGEM3HybridRetriever(retriever.index, 30, filters=filters).retrieve(QUERIES[0])
    assert {n.node.node_id for n in got} == {n.node_id for n in make_nodes() if wanted(n.metadata)}


def test_metadata_filters_the_core_cannot_express_raise(retriever: BGEM3HybridRetriever) -> None:
    for filters, message in [
            (_any(_eq("lang", "en"), _eq("n", 1)), "OR across different keys"),
            (_any(_all(_eq("lang", "en"), _eq("n", 0)), _eq("lang", "fr")), "OR across"),
            (MetadataFilters(filters=[_eq("lang", "en")], condition=FilterCondition.NOT), "not"),
            (_all(_eq("lang", ["en", "fr"])), "one value"),
            (_all(MetadataFilter(key="lang", value="en", operator=FilterOperator.NE)), "!=")]:
        with pytest.raises(ValueError, match=message):
            BGEM3HybridRetriever(retriever.index, filters=filters)


def test_filter_values_are_checked_by_the_core_filter_language(
        retriever: BGEM3HybridRetriever) -> None:
    for filters in (_all(_eq("score", 0.5)), _any(_in("score", [0.5, 1.5]), _eq("score", 2))):
        with pytest.raises(ValueError, match="cannot be matched: use strings, ints or bools"):
            BGEM3HybridRetriever(retriever.index, filters=filters)


@pytest.mark.parametrize(("option", "message"), [
    ({"mode": "bm25"}, "mode must be 'hybrid', 'dense' or 'sparse', got 'bm25'"),
    ({"fusion": "max"}, "fusion must be one of"),
    ({"weights": (0, 0, 0)}, "sum to zero"),
    ({"candidates": 0}, "candidates must be a positive int, got 0"),
    ({"rrf_k": 0}, "rrf_k must be a positive int, got 0"),
])
def test_a_bad_option_is_refused_when_built(retriever: BGEM3HybridRetriever,
                                            option: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BGEM3HybridRetriever(retriever.index, **option)  # type: ignore[arg-type]


def test_every_search_option_reaches_the_core(retriever: BGEM3HybridRetriever) -> None:
    options = {"fusion": "rrf", "rrf_k": 1, "candidates": 7, "weights": [1, 0, 1]}
    custom = BGEM3HybridRetriever(retriever.index, 3, **options)  # type: ignore[arg-type]
    hits = retriever.index.search(QUERIES[0], k=3, **options)  # type: ignore[arg-type]
    got = custom.retrieve(QUERIES[0])
    assert [n.node.node_id for n in got] == [h.id for h in hits]
    assert [n.score for n in got] == pytest.approx([h.score for h in hits])
    assert custom.search_options == {"mode": "hybrid", "fusion": "rrf", "weights": (1.0, 0.0, 1.0),
                                     "candidates": 7, "rerank": None}


def test_stored_metadata_under_a_score_key_is_kept(model: BGEM3) -> None:
    nodes = [n.model_copy(update={"metadata": {**n.metadata, "dense_score": f"user {i}"}})
             for i, n in enumerate(make_nodes()[:5])]
    retriever = BGEM3HybridRetriever.from_nodes(nodes, model=model, similarity_top_k=1)
    (got,) = retriever.retrieve(TEXTS[3])
    hit = retriever.index.search(TEXTS[3], k=1)[0]
    assert got.node.node_id == hit.id == "n3"
    assert got.node.metadata["dense_score"] == pytest.approx(hit.scores["dense"])
    assert got.node.metadata["previous_dense_score"] == "user 3"
    llm_text = got.node.get_content(metadata_mode=MetadataMode.LLM)
    assert "user 3" in llm_text and "colbert_score" not in llm_text  # the user's data stays visible


def test_query_engine_with_reranker_and_fusion_retriever(
        model: BGEM3, retriever: BGEM3HybridRetriever) -> None:
    llm = MockLLM(max_tokens=8)
    engine = RetrieverQueryEngine.from_args(
        retriever, llm=llm, node_postprocessors=[BGEM3ColbertRerank(model=model, top_n=2)])
    response = engine.query(QUERIES[0])
    assert len(response.source_nodes) == 2 and str(response)
    fusion = QueryFusionRetriever([retriever], llm=llm, num_queries=1, similarity_top_k=3,
                                  mode="reciprocal_rerank")
    fused = fusion.retrieve(QUERIES[0])
    assert [n.node.node_id for n in fused] == [n.node.node_id for n in retriever.retrieve(
        QUERIES[0])][:3]


def test_qdrant_backend_and_writes(model: BGEM3, retriever: BGEM3HybridRetriever) -> None:
    remote = BGEM3HybridRetriever.from_nodes(make_nodes(), model=model, similarity_top_k=4,
                                             qdrant_client=QdrantClient(":memory:"))
    for query in QUERIES:
        assert [n.node.node_id for n in remote.retrieve(query)] == \
            [n.node.node_id for n in retriever.retrieve(query)]
    remote.delete(["n0"])
    assert all(n.node.node_id != "n0" for n in remote.retrieve(TEXTS[0]))
    with pytest.raises(ValueError, match="no text"):
        remote.add_nodes([make_nodes()[0].model_copy(update={"text": ""})])
