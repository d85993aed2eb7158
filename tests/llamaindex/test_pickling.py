"""Pickling and deep copies of the LlamaIndex components: settings travel, the model is shared."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest
from bgem3 import BGEM3, HybridIndex
from bgem3.shared import model_reference, shared_model
from li_data import QUERIES, make_nodes
from llama_index.core.schema import NodeWithScore
from llama_index.embeddings.bgem3 import BGEM3Embedding
from llama_index.postprocessor.bgem3 import BGEM3ColbertRerank
from llama_index.retrievers.bgem3 import BGEM3HybridRetriever
from llama_index.sparse_embeddings.bgem3 import BGEM3SparseEmbedding
from qdrant_client import QdrantClient

CLASSES = [BGEM3Embedding, BGEM3SparseEmbedding, BGEM3ColbertRerank]


def _same_results(a, b) -> bool:  # type: ignore[no-untyped-def]
    if isinstance(a, BGEM3ColbertRerank):
        nodes = [NodeWithScore(node=n) for n in make_nodes()[:5]]
        ranked = [[(n.node.node_id, n.score)
                   for n in r.postprocess_nodes(nodes, query_str=QUERIES[0])] for r in (a, b)]
        return ranked[0] == ranked[1]
    return bool(a.get_query_embedding(QUERIES[0]) == b.get_query_embedding(QUERIES[0]))


@pytest.mark.parametrize("cls", CLASSES)
def test_pickled_by_reference_and_unpickled_objects_share_one_model(
        cls, model: BGEM3, tiny_path: Path) -> None:  # type: ignore[no-untyped-def]
    by_name = cls(model_name=str(tiny_path), device="cpu", dtype="float32")
    for obj in (cls(model=model), by_name):
        data = pickle.dumps(obj)
        assert len(data) < 4096  # the tiny checkpoint alone is 2.6 MB
        first, second = pickle.loads(data), pickle.loads(data)
        name, device, dtype = model_reference(obj.bgem3)
        assert first.bgem3 is second.bgem3 is shared_model(name, device=device, dtype=dtype)
        assert (first.model_name, first.device, first.dtype) == (name, device, dtype)
        assert _same_results(first, obj)
    assert pickle.loads(pickle.dumps(by_name)).bgem3 is by_name.bgem3


@pytest.mark.parametrize("cls", CLASSES)
def test_a_deep_copy_shares_the_model(cls, model: BGEM3) -> None:  # type: ignore[no-untyped-def]
    obj = cls(model=model, top_n=2) if cls is BGEM3ColbertRerank else cls(model=model)
    clone = copy.deepcopy(obj)
    assert clone.bgem3 is model and clone is not obj and _same_results(clone, obj)


def test_a_retriever_refuses_pickle_and_deep_copy_and_says_what_to_do(
        model: BGEM3, tmp_path: Path) -> None:
    embedded = BGEM3HybridRetriever.from_nodes(make_nodes(), model=model)
    on_qdrant = BGEM3HybridRetriever.from_nodes(make_nodes()[:3], model=model,
                                                qdrant_client=QdrantClient(":memory:"))
    for retriever in (embedded, on_qdrant):
        for copy_it in (pickle.dumps, copy.deepcopy):
            with pytest.raises(TypeError, match=r"cannot be pickled or deep-copied: it holds a "
                               r"live index.*index\.save\(path\)"):
                copy_it(retriever)
        shallow = copy.copy(retriever)  # a shallow copy shares the index
        assert shallow.index is retriever.index and shallow is not retriever
    embedded.index.save(tmp_path / "index")  # what the message advises
    again = BGEM3HybridRetriever(HybridIndex.load(tmp_path / "index", model))
    assert [n.node.node_id for n in again.retrieve(QUERIES[0])] == \
        [n.node.node_id for n in embedded.retrieve(QUERIES[0])]
