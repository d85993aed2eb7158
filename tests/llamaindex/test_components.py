"""LlamaIndex components: equal to the core, sync == async, batch == single, no mutation."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import bgem3
import numpy as np
import pytest
from bgem3 import BGEM3
from bgem3.shared import output_cache
from li_data import QUERIES, TEXTS, make_nodes
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
from llama_index.embeddings.bgem3 import BGEM3Embedding
from llama_index.postprocessor.bgem3 import BGEM3ColbertRerank
from llama_index.sparse_embeddings.bgem3 import BGEM3SparseEmbedding


def test_dense_equals_the_core_batch_equals_single(model: BGEM3) -> None:
    emb = BGEM3Embedding(model=model, embed_batch_size=4)
    batch = emb.get_text_embedding_batch(TEXTS[:10])
    assert np.allclose(batch, model.encode_documents(TEXTS[:10]).dense, atol=1e-6)  # type: ignore[arg-type]
    assert np.allclose([emb.get_text_embedding(t) for t in TEXTS[:10]], batch, atol=1e-6)
    query = emb.get_query_embedding(QUERIES[0])
    assert np.allclose(query, model.encode_queries([QUERIES[0]]).dense[0], atol=1e-6)  # type: ignore[index]
    assert type(query[0]) is float


async def test_sync_equals_async(model: BGEM3) -> None:
    emb, sparse = BGEM3Embedding(model=model), BGEM3SparseEmbedding(model=model)
    assert await emb.aget_query_embedding(QUERIES[1]) == emb.get_query_embedding(QUERIES[1])
    assert await emb.aget_text_embedding_batch(TEXTS[:5]) == emb.get_text_embedding_batch(TEXTS[:5])
    assert await sparse.aget_query_embedding(QUERIES[1]) == sparse.get_query_embedding(QUERIES[1])
    assert await sparse.aget_text_embedding(TEXTS[3]) == sparse.get_text_embedding(TEXTS[3])


def test_sparse_dicts_and_qdrant_functions(model: BGEM3) -> None:
    sparse = BGEM3SparseEmbedding(model=model)
    docs = sparse.get_text_embedding_batch(TEXTS[:6])
    want = model.encode_documents(TEXTS[:6], dense=False, sparse=True).sparse
    for got, expected in zip(docs, want, strict=True):  # type: ignore[arg-type]
        assert got == pytest.approx(expected.to_dict(), abs=1e-6)
        assert all(type(k) is int and type(v) is float for k, v in got.items())
    indices, values = sparse.sparse_doc_fn(TEXTS[:6])
    assert indices == [list(d) for d in docs] and values == [list(d.values()) for d in docs]
    q_indices, _ = sparse.sparse_query_fn([QUERIES[0]])
    assert q_indices == [model.encode_queries([QUERIES[0]], sparse=True).sparse[0].indices.tolist()]  # type: ignore[index]
    cache = output_cache(model)
    hits = cache.hits
    emb = BGEM3Embedding(model=model)
    emb.get_text_embedding_batch([f"{t} shared" for t in TEXTS[:5]])
    sparse.sparse_doc_fn([f"{t} shared" for t in TEXTS[:5]])
    assert cache.hits - hits == 5  # the sparse call found the dense call's forward pass


def test_one_model_per_name_and_config_round_trip(tiny_path) -> None:  # type: ignore[no-untyped-def]
    options = {"model_name": str(tiny_path), "device": "cpu", "dtype": "float32"}
    emb, rerank = BGEM3Embedding(**options), BGEM3ColbertRerank(top_n=2, **options)
    assert emb.bgem3 is rerank.bgem3 is BGEM3SparseEmbedding(**options).bgem3
    config = emb.to_dict()
    assert config["class_name"] == "BGEM3Embedding" and "model" not in config
    again = BGEM3Embedding.from_dict(config)
    assert again.bgem3 is emb.bgem3
    assert again.get_query_embedding("x") == emb.get_query_embedding("x")
    assert BGEM3ColbertRerank.from_dict(rerank.to_dict()).top_n == 2


@pytest.mark.parametrize("weights", [None, (0.4, 0.2, 0.4)])
def test_rerank_scores_order_and_no_mutation(model: BGEM3, weights) -> None:  # type: ignore[no-untyped-def]
    nodes = [NodeWithScore(node=n, score=0.5) for n in make_nodes()[:10]]
    before = [(n.node.model_dump(), n.score) for n in nodes]
    out = BGEM3ColbertRerank(model=model, top_n=4, weights=weights).postprocess_nodes(
        nodes, query_str=QUERIES[2])
    texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
    fused, _ = bgem3.shared.rerank_scores(model, QUERIES[2], texts, weights=weights)
    assert [n.node.node_id for n in out] == [f"n{i}" for i in np.argsort(-fused, kind="stable")[:4]]
    assert [n.score for n in out] == pytest.approx(sorted(fused, reverse=True)[:4])
    assert [(n.node.model_dump(), n.score) for n in nodes] == before


async def test_rerank_async_and_bad_input(model: BGEM3) -> None:
    rerank = BGEM3ColbertRerank(model=model, top_n=3)
    nodes = [NodeWithScore(node=n, score=None) for n in make_nodes()[:6]]
    sync = rerank.postprocess_nodes(nodes, query_str=QUERIES[0])
    assert [n.node.node_id for n in await rerank.apostprocess_nodes(nodes, query_str=QUERIES[0])] \
        == [n.node.node_id for n in sync]
    assert rerank.postprocess_nodes([], query_str=QUERIES[0]) == []
    with pytest.raises(ValueError, match="query is empty"):
        rerank.postprocess_nodes(nodes, query_bundle=QueryBundle(""))
    with pytest.raises(ValueError, match="needs a query"):
        rerank.postprocess_nodes(nodes)
    with pytest.raises(ValueError, match="greater than 0"):
        BGEM3ColbertRerank(model=model, top_n=0)


def test_unknown_keyword_arguments_are_rejected(model: BGEM3) -> None:
    from llama_index.retrievers.bgem3 import BGEM3HybridRetriever

    for cls, name in [(BGEM3Embedding, "devcie"), (BGEM3SparseEmbedding, "devcie"),
                      (BGEM3ColbertRerank, "top_k")]:
        with pytest.raises(ValueError, match=rf"{name}\n +Extra inputs are not permitted"):
            cls(model=model, **{name: 1})
    with pytest.raises(TypeError, match="top_k"):
        BGEM3HybridRetriever.from_nodes(make_nodes()[:2], model=model, top_k=1)
    assert BGEM3ColbertRerank.from_dict({**BGEM3ColbertRerank(model=model).to_dict(),
                                         "top_n": 1}).top_n == 1


def test_namespace_layout_and_no_torch_at_import(tmp_path) -> None:  # type: ignore[no-untyped-def]
    code = ("import sys\n"
            "from llama_index.embeddings.bgem3 import BGEM3Embedding\n"
            "from llama_index.sparse_embeddings.bgem3 import BGEM3SparseEmbedding\n"
            "from llama_index.postprocessor.bgem3 import BGEM3ColbertRerank\n"
            "from llama_index.retrievers.bgem3 import BGEM3HybridRetriever\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    # the built wheel ships PEP 420 namespaces: no __init__.py above the bgem3 folders
    source = tmp_path / "source"  # build from a copy: no build/ left in the checkout
    shutil.copytree(Path(__file__).resolve().parents[2] / "packages" / "llama-index-bgem3",
                    source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(source)], check=True, capture_output=True)
    import zipfile

    (wheel,) = tmp_path.glob("llama_index_bgem3-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    inits = sorted(n for n in names if n.endswith("__init__.py"))
    assert inits == [f"llama_index/{k}/bgem3/__init__.py"
                     for k in ("embeddings", "postprocessor", "retrievers", "sparse_embeddings")]
    assert "llama_index/embeddings/bgem3/py.typed" in names


@pytest.mark.parametrize("value", [True, "3"])
def test_counts_are_not_coerced(model: BGEM3, value: object) -> None:
    """Issue 14, finding 28: ``top_n=True`` or ``"3"`` is an error, not 1 or 3."""
    with pytest.raises(ValueError, match="top_n"):
        BGEM3ColbertRerank(model=model, top_n=value)
