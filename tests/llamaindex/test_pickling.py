"""Pickling and deep copies of the LlamaIndex components: settings travel, the model is shared."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest
from bgem3 import BGEM3, HybridIndex
from li_data import QUERIES, make_nodes
from llama_index.core.schema import NodeWithScore
from llama_index.embeddings.bgem3 import BGEM3Embedding
from llama_index.postprocessor.bgem3 import BGEM3ColbertRerank
from llama_index.retrievers.bgem3 import BGEM3HybridRetriever
from llama_index.sparse_embeddings.bgem3 import BGEM3SparseEmbedding
from qdrant_client import QdrantClient

from tests.core.test_shared import check_pickles_by_reference

CLASSES = [BGEM3Embedding, BGEM3SparseEmbedding, BGEM3ColbertRerank]


def _same_results(a, b) -> bool:  # type: ignore[no-untyped-def]
    if isinstance(a, BGEM3ColbertRerank):
        nodes = [NodeWithScore(node=n) for n in make_nodes()[:5]]
        ranked = [[(n.node.node_id, n.score)
                   for n in r.postprocess_nodes(nodes, query_str=QUERIES[0])] for r in (a, b)]
        return ranked[0] == ranked[1]
    return bool(a.get_query_embedding(QUERIES[0]) == b.get_query_embedding(QUERIES[0]))


@pytest.mark.parametrize("cls", CLASSES)
def test_pickles_and_deep_copies_by_reference_through_bgem3_shared(
        cls, model: BGEM3, tiny_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings = {"top_n": 2, "weights": (0.5, 0.2, 0.3)} if cls is BGEM3ColbertRerank \
        else {"embed_batch_size": 8, "query_max_length": 64}
    check_pickles_by_reference(cls, model, tiny_path, _same_results, **settings)


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
