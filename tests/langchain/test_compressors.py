"""The ColBERT reranker: scores equal the core's, inputs untouched, works in LangChain chains."""

from __future__ import annotations

import bgem3
import numpy as np
import pytest
from bgem3 import BGEM3
from langchain_bgem3 import BGEM3ColbertReranker, BGEM3HybridRetriever
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import Document
from lc_data import QUERIES, TEXTS


def _docs() -> list[Document]:
    return [Document(page_content=t, metadata={"n": i}) for i, t in enumerate(TEXTS[:12])]


@pytest.mark.parametrize("weights", [None, (0.4, 0.2, 0.4), (1.0, 0.0, 0.0)])
def test_order_and_scores_equal_the_core(model: BGEM3, weights) -> None:  # type: ignore[no-untyped-def]
    docs = _docs()
    before = [d.model_copy(deep=True) for d in docs]
    reranker = BGEM3ColbertReranker(model=model, top_n=5, weights=weights)
    out = reranker.compress_documents(docs, QUERIES[0])
    q = model.encode_queries([QUERIES[0]], dense=True, sparse=True, colbert=True)
    d = model.encode_documents(TEXTS[:12], dense=True, sparse=True, colbert=True)
    colbert = bgem3.colbert_scores(q.colbert[0], d.colbert)  # type: ignore[index,arg-type]
    if weights is None:
        want = colbert.astype(np.float64)
    else:
        want = bgem3.fuse_scores(bgem3.dense_scores(q.dense, d.dense)[0],  # type: ignore[arg-type]
                                 bgem3.sparse_scores(q.sparse, d.sparse)[0], colbert, weights)  # type: ignore[arg-type]
    assert [doc.metadata["n"] for doc in out] == np.argsort(-want, kind="stable")[:5].tolist()
    for doc in out:
        assert doc.metadata["relevance_score"] == pytest.approx(want[doc.metadata["n"]], abs=1e-5)
        assert doc.metadata["colbert_score"] == pytest.approx(colbert[doc.metadata["n"]],
                                                              abs=1e-5)
    assert docs == before  # inputs untouched: the hits are copies
    assert all("relevance_score" not in d.metadata for d in docs)


async def test_async_equals_sync_and_bad_input(model: BGEM3) -> None:
    reranker = BGEM3ColbertReranker(model=model, top_n=3)
    docs = _docs()
    assert await reranker.acompress_documents(docs, QUERIES[1]) == \
        reranker.compress_documents(docs, QUERIES[1])
    assert reranker.compress_documents([], QUERIES[1]) == []
    assert len(BGEM3ColbertReranker(model=model, top_n=50).compress_documents(docs, "x")) == 12
    with pytest.raises(ValueError, match="query is empty"):
        reranker.compress_documents(docs, "  ")
    with pytest.raises(ValueError, match="top_n"):
        BGEM3ColbertReranker(model=model, top_n=0)
    with pytest.raises(TypeError, match="documents\\[1\\]"):
        reranker.compress_documents([docs[0], "plain text"], QUERIES[1])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="weights"):
        BGEM3ColbertReranker(model=model, weights=(0.0, 0.0, 0.0)).compress_documents(docs, "x")


def test_inside_a_contextual_compression_retriever(model: BGEM3) -> None:
    base = BGEM3HybridRetriever.from_texts(TEXTS, model=model, k=10, mode="dense", rerank=False)
    retriever = ContextualCompressionRetriever(
        base_compressor=BGEM3ColbertReranker(model=model, top_n=3), base_retriever=base)
    docs = retriever.invoke(QUERIES[2])
    assert len(docs) == 3
    scores = [d.metadata["relevance_score"] for d in docs]
    assert scores == sorted(scores, reverse=True)
    pool = {d.page_content: d.metadata["relevance_score"] for d in base.invoke(QUERIES[2])}
    assert {d.page_content for d in docs} <= set(pool)
    # the retriever's score is kept beside the reranker's
    assert [d.metadata["previous_relevance_score"] for d in docs] == [
        pool[d.page_content] for d in docs]


def test_existing_score_metadata_is_kept(model: BGEM3) -> None:
    docs = [Document(page_content=t, metadata={"relevance_score": f"user {i}", "colbert_score": i})
            for i, t in enumerate(TEXTS[:4])]
    out = BGEM3ColbertReranker(model=model, top_n=4).compress_documents(docs, QUERIES[0])
    for doc in out:
        i = int(doc.metadata["previous_relevance_score"].removeprefix("user "))
        assert doc.page_content == TEXTS[i] and doc.metadata["previous_colbert_score"] == i
        assert isinstance(doc.metadata["relevance_score"], float)
        assert doc.metadata["relevance_score"] == doc.metadata["colbert_score"]
    assert docs[0].metadata == {"relevance_score": "user 0", "colbert_score": 0}


@pytest.mark.parametrize("value", [True, "3", 2.0])
def test_counts_are_not_coerced(model: BGEM3, value: object) -> None:
    """Issue 14, finding 28: ``top_n=True`` or ``"3"`` is an error, not 1 or 3."""
    with pytest.raises(ValueError, match="top_n"):
        BGEM3ColbertReranker(model=model, top_n=value)
    with pytest.raises(ValueError, match="k"):
        BGEM3HybridRetriever.from_texts(TEXTS[:3], model=model, k=value)
