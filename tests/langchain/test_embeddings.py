"""Dense and sparse embeddings: equal to the core, one model per name, one forward per text."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bgem3 import BGEM3
from bgem3.shared import output_cache
from langchain_bgem3 import BGEM3Embeddings, BGEM3SparseEmbeddings
from langchain_qdrant import QdrantVectorStore, RetrievalMode, SparseVector
from lc_data import QUERIES, TEXTS


def test_dense_equals_the_core_and_is_python_floats(model: BGEM3) -> None:
    emb = BGEM3Embeddings(model=model)
    docs = emb.embed_documents(TEXTS[:5])
    query = emb.embed_query(QUERIES[0])
    assert all(type(x) is float for row in docs for x in row) and type(query[0]) is float
    want = model.encode_documents(TEXTS[:5], dense=True).dense
    assert np.allclose(docs, want, atol=1e-6)  # type: ignore[arg-type]
    assert np.allclose(query, model.encode_queries([QUERIES[0]]).dense[0], atol=1e-6)  # type: ignore[index]
    assert emb.embed_documents([]) == []


def test_query_and_document_max_lengths(model: BGEM3) -> None:
    long_text = " ".join(["paris"] * 60)
    emb = BGEM3Embeddings(model=model, query_max_length=8, document_max_length=64)
    with pytest.warns(Warning, match="truncat"):
        query = emb.embed_query(long_text)
    with pytest.warns(Warning, match="truncat"):
        short = model.encode_queries([long_text], max_length=8).dense[0]  # type: ignore[index]
    assert np.allclose(query, short, atol=1e-6)
    assert not np.allclose(emb.embed_documents([long_text])[0], query, atol=1e-3)


def test_sparse_equals_the_core(model: BGEM3) -> None:
    sparse = BGEM3SparseEmbeddings(model=model)
    got = sparse.embed_documents(TEXTS[:4])
    want = model.encode_documents(TEXTS[:4], dense=False, sparse=True).sparse
    assert all(isinstance(v, SparseVector) for v in got)
    for g, w in zip(got, want, strict=True):  # type: ignore[arg-type]
        assert g.indices == w.indices.tolist() and np.allclose(g.values, w.values, atol=1e-6)
        assert all(type(i) is int for i in g.indices) and all(type(x) is float for x in g.values)
    q = sparse.embed_query(QUERIES[1])
    assert q.indices == model.encode_queries([QUERIES[1]], sparse=True).sparse[0].indices.tolist()  # type: ignore[index]


def test_classes_built_from_one_name_share_one_model(tiny_path: Path) -> None:
    options = {"model_name": str(tiny_path), "device": "cpu", "dtype": "float32"}
    dense, sparse = BGEM3Embeddings(**options), BGEM3SparseEmbeddings(**options)
    assert dense.bgem3 is sparse.bgem3
    assert BGEM3Embeddings(model_name=str(tiny_path), device="cpu", dtype="bfloat16").bgem3 \
        is not dense.bgem3
    assert BGEM3Embeddings(model=dense.bgem3).model_name == dense.bgem3.name
    assert "model" not in dense.model_dump()  # the loaded model is not serialised


def test_bad_input_and_unknown_models(model: BGEM3, tmp_path: Path) -> None:
    emb = BGEM3Embeddings(model=model)
    with pytest.raises(TypeError, match="list of strings"):
        emb.embed_documents("one text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"texts\[1\] must be a str"):
        emb.embed_documents(["ok", None])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="must be a str"):
        emb.embed_query(None)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        BGEM3Embeddings(model_name=str(tmp_path / "missing"))
    with pytest.raises(TypeError, match=r"bgem3\.BGEM3"):
        BGEM3Embeddings(model="not a model")
    with pytest.raises(ValueError, match="extra"):
        BGEM3Embeddings(model=model, unknown_option=1)  # type: ignore[call-arg]


def test_dense_then_sparse_on_the_same_texts_runs_the_model_once(model: BGEM3) -> None:
    texts = [f"{t} cache probe" for t in TEXTS[:6]]
    cache = output_cache(model)
    hits, misses = cache.hits, cache.misses
    dense = BGEM3Embeddings(model=model).embed_documents(texts)
    sparse = BGEM3SparseEmbeddings(model=model).embed_documents(texts)
    assert (cache.misses - misses, cache.hits - hits) == (6, 6)
    fresh = model.encode_documents(texts, dense=True, sparse=True)
    assert np.allclose(dense, fresh.dense, atol=1e-6)  # type: ignore[arg-type]
    assert [s.indices for s in sparse] == [v.indices.tolist() for v in fresh.sparse]  # type: ignore[union-attr]


async def test_async_embeddings_do_not_block_the_event_loop(model: BGEM3) -> None:
    emb = BGEM3Embeddings(model=model)
    texts = [f"{t} async probe" for t in TEXTS] * 4
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    vectors = await emb.aembed_documents(texts)
    task.cancel()
    assert ticks > 1  # the loop kept running while the model worked in a thread
    assert vectors == emb.embed_documents(texts)
    assert await emb.aembed_query(QUERIES[0]) == emb.embed_query(QUERIES[0])
    sparse = BGEM3SparseEmbeddings(model=model)
    assert await sparse.aembed_query(QUERIES[0]) == sparse.embed_query(QUERIES[0])


def test_qdrant_vector_store_hybrid_mode(model: BGEM3) -> None:
    cache = output_cache(model)
    misses = cache.misses
    store = QdrantVectorStore.from_texts(
        TEXTS, BGEM3Embeddings(model=model), sparse_embedding=BGEM3SparseEmbeddings(model=model),
        retrieval_mode=RetrievalMode.HYBRID, location=":memory:", collection_name="hybrid",
        metadatas=[{"n": i} for i in range(len(TEXTS))])
    # Qdrant asks for dense and sparse vectors separately (plus one probe text to size the
    # collection): every text still goes through the model once
    assert cache.misses - misses <= len(TEXTS) + 1
    for i in (0, 7, 19):
        docs = store.similarity_search(TEXTS[i], k=3)
        assert docs[0].page_content == TEXTS[i] and docs[0].metadata["n"] == i
    sparse_only = QdrantVectorStore.from_texts(
        TEXTS, BGEM3Embeddings(model=model), sparse_embedding=BGEM3SparseEmbeddings(model=model),
        retrieval_mode=RetrievalMode.SPARSE, location=":memory:", collection_name="sparse")
    assert sparse_only.similarity_search(TEXTS[3], k=1)[0].page_content == TEXTS[3]


def test_milvus_sparse_adapter_and_milvus_lite_hybrid_search(model: BGEM3,
                                                             tmp_path: Path) -> None:
    from langchain_milvus.utils.sparse import BaseSparseEmbedding
    from pymilvus import MilvusClient

    sparse = BGEM3SparseEmbeddings(model=model)
    milvus_sparse = sparse.for_milvus()
    assert isinstance(milvus_sparse, BaseSparseEmbedding)
    want = sparse.embed_query(QUERIES[0])
    assert milvus_sparse.embed_query(QUERIES[0]) == dict(zip(want.indices, want.values,
                                                              strict=True))
    docs = milvus_sparse.embed_documents(TEXTS)
    assert all(type(k) is int and type(v) is float for d in docs for k, v in d.items())

    # Milvus Lite itself, with our dense and sparse vectors in one collection
    client = MilvusClient(str(tmp_path / "milvus.db"))
    try:
        _hybrid_search_on(client, model, milvus_sparse, docs)
    finally:  # an open gRPC channel to Milvus Lite can crash the interpreter at exit
        client.close()


def _hybrid_search_on(client: Any, model: BGEM3, milvus_sparse: Any,
                      docs: list[dict[int, float]]) -> None:
    from pymilvus import AnnSearchRequest, DataType, RRFRanker

    schema = client.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("dense", DataType.FLOAT_VECTOR, dim=model.dense_dim)
    schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    client.create_collection("docs", schema=schema)
    index = client.prepare_index_params()
    index.add_index("dense", index_type="FLAT", metric_type="IP")
    index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="IP",
                    params={"drop_ratio_build": 0.0})
    client.create_index("docs", index)
    client.load_collection("docs")
    dense = BGEM3Embeddings(model=model).embed_documents(TEXTS)
    # Milvus rejects empty sparse vectors (the random tiny model zeroes some texts' weights)
    kept = [i for i in range(len(TEXTS)) if docs[i]]
    client.insert("docs", [{"id": i, "dense": dense[i], "sparse": docs[i]} for i in kept])
    assert len(kept) > 10
    for i in kept[:3]:
        requests = [
            AnnSearchRequest([dense[i]], "dense", {"metric_type": "IP"}, limit=5),
            AnnSearchRequest([milvus_sparse.embed_documents([TEXTS[i]])[0]], "sparse",
                             {"metric_type": "IP"}, limit=5)]
        hits = client.hybrid_search("docs", requests, RRFRanker(60), limit=3)[0]
        assert hits[0]["id"] == i


def test_langchain_milvus_store_hybrid_on_milvus_lite(model: BGEM3, tmp_path: Path) -> None:
    from langchain_milvus import Milvus

    sparse = BGEM3SparseEmbeddings(model=model)
    texts = [t for t, v in zip(TEXTS, sparse.embed_documents(TEXTS), strict=True) if v.indices]
    store = Milvus(
        [BGEM3Embeddings(model=model), sparse.for_milvus()], vector_field=["dense", "sparse"],
        connection_args={"uri": str(tmp_path / "milvus.db")}, auto_id=True,
        index_params=[{"index_type": "FLAT", "metric_type": "IP"},
                      {"index_type": "SPARSE_INVERTED_INDEX", "metric_type": "IP",
                       "params": {"drop_ratio_build": 0.0}}],
        search_params=[{"metric_type": "IP", "params": {}}, {"metric_type": "IP", "params": {}}])
    try:
        ids = store.add_texts(texts, metadatas=[{"n": i} for i in range(len(texts))])
        assert len(ids) == len(texts)
        for i in (2, 9):
            docs = store.similarity_search(texts[i], k=2)
            assert docs[0].page_content == texts[i] and docs[0].metadata["n"] == i
    finally:
        store.client.close()
