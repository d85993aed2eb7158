"""Pickling and deep copies of the LlamaIndex components: settings travel, the model is shared."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest
from bgem3 import BGEM3
from bgem3.shared import model_reference, shared_model
from li_data import QUERIES, make_nodes
from llama_index.core.schema import NodeWithScore
from llama_index.embeddings.bgem3 import BGEM3Embedding
from llama_index.postprocessor.bgem3 import BGEM3ColbertRerank
from llama_index.sparse_embeddings.bgem3 import BGEM3SparseEmbedding

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
