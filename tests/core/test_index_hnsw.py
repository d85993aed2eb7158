"""Dense candidates from the HNSW graph: persisted, filtered, following deletes, switched on
at the size threshold."""


from __future__ import annotations

from pathlib import Path

import pytest
from bgem3 import BGEM3, HybridIndex
from bgem3.index import embedded as embedded_module
from bgem3.testing import random_texts

from tests.core.index_data import DOCS, IDS


# ------------------------------------------------------------ issue 16: the HNSW graph
def test_hnsw_dense_candidates_persist_filter_and_follow_deletes(model: BGEM3,
                                                                 tmp_path: Path) -> None:
    docs = list(dict.fromkeys(random_texts(500, min_words=5, max_words=30, seed=9)))[:300]
    ids = [f"h{i}" for i in range(len(docs))]
    meta = [{"even": i % 2 == 0} for i in range(len(docs))]
    emb = model.encode_documents(docs, dense=True, sparse=True, colbert=True)
    exact = HybridIndex(model, dense_search="exact")
    exact.add(docs, ids=ids, metadata=meta, embeddings=emb)
    graph = HybridIndex(model, dense_search="hnsw", ef_search=256)
    graph.add(docs, ids=ids, metadata=meta, embeddings=emb)
    queries = random_texts(20, min_words=3, max_words=10, seed=10)
    for q in queries:  # a small index: the graph finds the exact neighbours
        assert ([h.id for h in graph.search(q, k=10, mode="dense", rerank=False)]
                == [h.id for h in exact.search(q, k=10, mode="dense", rerank=False)])
    assert all(h.metadata["even"] for h in graph.search(queries[0], k=10,
                                                        filter={"even": True}))
    graph.delete(["h0"])
    assert "h0" not in {h.id for h in graph.search(docs[0], k=10, mode="dense",
                                                   rerank=False)}
    graph.save(tmp_path / "idx")  # compacts first: the saved graph numbers live rows
    loaded = HybridIndex.load(tmp_path / "idx", model)
    assert loaded.dense_search == "hnsw" and loaded._graph is not None
    assert len(loaded._graph) == len(loaded) == len(docs) - 1
    assert ([h.id for h in loaded.search(queries[1], k=5)]
            == [h.id for h in graph.search(queries[1], k=5)])


def test_auto_switches_to_the_graph_past_the_threshold(model: BGEM3,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded_module, "HNSW_MIN_DOCUMENTS", 25)
    index = HybridIndex(model)
    index.add(DOCS[:20], ids=IDS[:20])
    assert index._graph is None
    index.add(DOCS[20:], ids=IDS[20:])
    assert index._graph is not None and len(index._graph) == len(DOCS)
    with pytest.raises(ValueError, match="dense_search must be"):
        HybridIndex(model, dense_search="ivf")
