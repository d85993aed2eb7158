"""The hybrid retriever: the core index's results as Documents, per-call options, LCEL, Qdrant."""

from __future__ import annotations

import pytest
from bgem3 import BGEM3, HybridIndex
from bgem3.index import SearchOptions
from langchain_bgem3 import BGEM3HybridRetriever
from langchain_core.documents import Document
from langchain_core.runnables import RunnableLambda
from lc_data import META, QUERIES, TEXTS
from qdrant_client import QdrantClient


def test_documents_equal_the_core_index_hits(model: BGEM3, lc_retriever) -> None:  # type: ignore[no-untyped-def]
    index = HybridIndex(model)
    index.add(TEXTS, ids=[f"t{i}" for i in range(len(TEXTS))], metadata=META)
    for query in QUERIES:
        docs = lc_retriever.invoke(query)
        hits = index.search(query, k=4)
        assert [d.id for d in docs] == [h.id for h in hits]
        for doc, hit in zip(docs, hits, strict=True):
            assert doc.page_content == hit.text
            assert doc.metadata["relevance_score"] == pytest.approx(hit.score)
            assert doc.metadata["lang"] == hit.metadata["lang"]
            assert {m: doc.metadata[f"{m}_score"] for m in hit.scores} == pytest.approx(hit.scores)


def test_per_call_options(lc_retriever) -> None:  # type: ignore[no-untyped-def]
    assert len(lc_retriever.invoke(QUERIES[0], k=2)) == 2
    french = lc_retriever.invoke(QUERIES[0], k=10, filter={"lang": "fr"})
    assert french and all(d.metadata["lang"] == "fr" for d in french)
    rrf = lc_retriever.invoke(QUERIES[0], fusion="rrf")
    assert all(d.metadata["relevance_score"] < 0.1 for d in rrf)
    dense = lc_retriever.invoke(QUERIES[0], mode="dense", rerank=False)
    assert all("colbert_score" not in d.metadata for d in dense)
    with pytest.raises(TypeError, match="unknown search arguments"):
        lc_retriever.invoke(QUERIES[0], top_k=3)


@pytest.mark.parametrize(("option", "message"), [
    ({"mode": "bm25"}, "mode must be 'hybrid', 'dense' or 'sparse', got 'bm25'"),
    ({"fusion": "max"}, "fusion must be one of"),
    ({"weights": (0, 0, 0)}, "sum to zero"),
    ({"candidates": 0}, "candidates must be a positive int, got 0"),
    ({"rrf_k": -1}, "rrf_k must be a positive int, got -1"),
    ({"filter": {"lang": {"$ne": "fr"}}}, "cannot be matched"),
])
def test_a_bad_option_is_refused_when_built_and_per_call(lc_retriever, option,  # type: ignore[no-untyped-def]
                                                         message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BGEM3HybridRetriever(index=lc_retriever.index, **option)
    with pytest.raises(ValueError, match=message):
        lc_retriever.invoke(QUERIES[0], **option)


def test_every_search_option_of_the_core_is_a_field_and_a_per_call_option(  # type: ignore[no-untyped-def]
        lc_retriever) -> None:
    options = lc_retriever.search_options(fusion="rrf", rrf_k=1, candidates=7)
    assert options == SearchOptions(k=4, fusion="rrf", rrf_k=1, candidates=7)
    docs = lc_retriever.invoke(QUERIES[0], fusion="rrf", rrf_k=1, candidates=7)
    hits = lc_retriever.index.search(QUERIES[0], k=4, fusion="rrf", rrf_k=1, candidates=7)
    assert [d.id for d in docs] == [h.id for h in hits]
    assert [d.metadata["relevance_score"] for d in docs] == pytest.approx([h.score for h in hits])
    built = BGEM3HybridRetriever(index=lc_retriever.index, fusion="rrf", rrf_k=1, candidates=7)
    assert [d.id for d in built.invoke(QUERIES[0])] == [h.id for h in hits]


async def test_batch_abatch_ainvoke_and_lcel(lc_retriever) -> None:  # type: ignore[no-untyped-def]
    single = [lc_retriever.invoke(q) for q in QUERIES]
    assert lc_retriever.batch(QUERIES) == single
    assert await lc_retriever.abatch(QUERIES) == single
    assert await lc_retriever.ainvoke(QUERIES[1], k=2) == lc_retriever.invoke(QUERIES[1], k=2)

    def format_docs(docs: list[Document]) -> str:
        return "\n\n".join(d.page_content for d in docs)

    chain = lc_retriever | RunnableLambda(format_docs)
    assert chain.invoke(QUERIES[0]) == format_docs(single[0])


def test_add_delete_and_from_documents(model: BGEM3) -> None:
    docs = [Document(page_content=t, metadata={"n": i}, id=f"doc-{i}")
            for i, t in enumerate(TEXTS[:8])]
    retriever = BGEM3HybridRetriever.from_documents(docs, model=model, k=3)
    assert retriever.invoke(TEXTS[5], k=1)[0].id == "doc-5"
    retriever.delete(["doc-5"])
    assert all(d.id != "doc-5" for d in retriever.invoke(TEXTS[5], k=8))
    ids = retriever.add_documents([Document(page_content=TEXTS[20], metadata={"n": 20})])
    assert retriever.invoke(TEXTS[20], k=1)[0].id == ids[0]
    retriever.add_texts(["replaced text"], ids=["doc-0"])
    assert retriever.index.get(["doc-0"])[0].text == "replaced text"


def test_documents_without_an_id_do_not_cost_the_others_theirs(model: BGEM3) -> None:
    docs = [Document(page_content=TEXTS[0], id="a"), Document(page_content=TEXTS[1]),
            Document(page_content=TEXTS[2], id="c")]
    retriever = BGEM3HybridRetriever.from_documents(docs, model=model)
    stored = [hit.id for hit in retriever.index.get(["a", "c"])]
    assert stored == ["a", "c"] and len(retriever.index) == 3
    ids = retriever.add_documents([Document(page_content=TEXTS[3]),
                                   Document(page_content="new text for a", id="a")])
    assert ids[1] == "a" and ids[0] not in {"a", "c"} and len(retriever.index) == 4
    assert retriever.index.get(["a"])[0].text == "new text for a"  # replaced, not duplicated
    retriever.delete(["a", "c", ids[0]])
    assert len(retriever.index) == 1


def test_stored_metadata_under_a_score_key_is_kept(model: BGEM3) -> None:
    retriever = BGEM3HybridRetriever.from_texts(
        TEXTS[:5], model=model, metadatas=[{"relevance_score": "editor's pick", "dense_score": i}
                                           for i in range(5)], ids=list("abcde"))
    doc = retriever.invoke(TEXTS[2], k=1)[0]
    hit = retriever.index.search(TEXTS[2], k=1)[0]
    assert doc.metadata["relevance_score"] == pytest.approx(hit.score)
    assert doc.metadata["dense_score"] == pytest.approx(hit.scores["dense"])
    assert doc.metadata["previous_relevance_score"] == "editor's pick"
    assert doc.metadata["previous_dense_score"] == 2


def test_bad_input(model: BGEM3, lc_retriever) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="query is empty"):
        lc_retriever.invoke("")
    with pytest.raises(ValueError, match="k must be"):
        lc_retriever.invoke(QUERIES[0], k=0)
    with pytest.raises(ValueError, match="no text"):
        BGEM3HybridRetriever.from_documents([Document(page_content="")], model=model)
    empty = BGEM3HybridRetriever.from_texts([], model=model)
    assert empty.invoke(QUERIES[0]) == []
    with pytest.raises(TypeError, match="list of strings"):
        BGEM3HybridRetriever.from_texts("one text", model=model)
    with pytest.raises(KeyError, match="nothing deleted"):
        lc_retriever.delete(["not-there"])


def test_over_the_qdrant_backend(model: BGEM3, lc_retriever) -> None:  # type: ignore[no-untyped-def]
    retriever = BGEM3HybridRetriever.from_texts(
        TEXTS, model=model, k=4, metadatas=META, ids=[f"t{i}" for i in range(len(TEXTS))],
        qdrant_client=QdrantClient(":memory:"))
    for query in QUERIES:
        ours = lc_retriever.invoke(query)
        theirs = retriever.invoke(query)
        assert [d.id for d in theirs] == [d.id for d in ours]
        assert [d.metadata["relevance_score"] for d in theirs] == pytest.approx(
            [d.metadata["relevance_score"] for d in ours], abs=5e-4)
    french = retriever.invoke(QUERIES[0], k=10, filter={"lang": "fr"})
    assert french and all(d.metadata["lang"] == "fr" for d in french)
