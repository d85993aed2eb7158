"""Everything that takes a model takes a server: the LangChain and LlamaIndex components
(``model=RemoteBGEM3(...)`` or ``base_url=``), evaluation and mining, through a real
``bgem3 serve`` process, equal to the local model (ColBERT travels as float16: 1e-3)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import bgem3
import numpy as np
import pytest
from bgem3 import BGEM3
from bgem3.remote import RemoteBGEM3
from bgem3.shared import model_reference, output_cache, resolve_reference, shared_remote
from bgem3.testing import random_texts, write_beir_dataset
from bgem3.train import mine_negatives
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

from tests.core.test_shared import check_pickles_by_reference
from tests.server.conftest import Served

# a real server on this machine's loopback, and nothing else
pytestmark = [pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]

TEXTS = list(dict.fromkeys(random_texts(30, max_words=25, seed=101, log_uniform=True)))[:20]
QUERIES = random_texts(3, max_words=5, seed=102)
KEY = "secret-key"  # the `served` fixture's --api-key


@pytest.fixture(scope="module")
def server(served: Served) -> dict[str, Any]:
    """What a component takes instead of ``model_name=``."""
    return {"base_url": served.url, "api_key": KEY}


@pytest.fixture(scope="module")
def remote(served: Served) -> RemoteBGEM3:
    return RemoteBGEM3(served.url, api_key=KEY)


def _close(got: list[float], want: Any, atol: float = 1e-6) -> None:
    np.testing.assert_allclose(got, want, atol=atol)


# ---------------------------------------------------------------- LangChain
async def test_langchain_embeddings_equal_the_local_model(server: dict[str, Any], model: BGEM3,
                                                          remote: RemoteBGEM3) -> None:
    from langchain_bgem3 import BGEM3Embeddings, BGEM3SparseEmbeddings

    emb, sparse = BGEM3Embeddings(**server), BGEM3SparseEmbeddings(**server)
    assert isinstance(emb.bgem3, RemoteBGEM3) and sparse.bgem3 is emb.bgem3  # one client
    assert emb.model_name == model.name and "secret" not in repr(emb)
    docs = emb.embed_documents(TEXTS[:6])
    assert all(type(x) is float for row in docs for x in row)
    _close(docs, model.encode_documents(TEXTS[:6]).dense)
    _close(emb.embed_query(QUERIES[0]), model.encode_queries(QUERIES[:1]).dense[0])  # type: ignore[index]
    assert await emb.aembed_query(QUERIES[1]) == emb.embed_query(QUERIES[1])
    hits = output_cache(emb.bgem3).hits
    got = sparse.embed_documents(TEXTS[:6])  # the dense call's outputs, cached
    assert output_cache(emb.bgem3).hits - hits == 6
    want = model.encode_documents(TEXTS[:6], dense=False, sparse=True).sparse
    for g, w in zip(got, want, strict=True):  # type: ignore[arg-type]
        assert g.indices == w.indices.tolist()
        _close(g.values, w.values)
    given = BGEM3Embeddings(model=remote)  # a client of one's own
    assert given.bgem3 is remote and given.base_url == remote.base_url
    _close(given.embed_query(QUERIES[0]), emb.embed_query(QUERIES[0]))


@pytest.mark.parametrize("weights", [None, (0.4, 0.2, 0.4)])
def test_langchain_reranker_equals_the_local_model(server: dict[str, Any], model: BGEM3,
                                                   weights: Any) -> None:
    from langchain_bgem3 import BGEM3ColbertReranker
    from langchain_core.documents import Document

    docs = [Document(page_content=t, id=f"d{i}") for i, t in enumerate(TEXTS[:8])]
    through = BGEM3ColbertReranker(**server, top_n=8, weights=weights)
    local = BGEM3ColbertReranker(model=model, top_n=8, weights=weights)
    scores = [{d.id: d.metadata for d in r.compress_documents(docs, QUERIES[0])}
              for r in (through, local)]
    assert scores[0].keys() == scores[1].keys()
    for doc_id, metadata in scores[1].items():
        assert scores[0][doc_id] == pytest.approx(metadata, abs=1e-3)


def test_langchain_retriever_finds_what_the_local_model_finds(server: dict[str, Any],
                                                              model: BGEM3) -> None:
    from langchain_bgem3 import BGEM3HybridRetriever
    from qdrant_client import QdrantClient

    ids = [f"t{i}" for i in range(len(TEXTS))]
    for qdrant in (False, True):
        retrievers = [BGEM3HybridRetriever.from_texts(
            TEXTS, k=4, ids=ids, qdrant_client=QdrantClient(":memory:") if qdrant else None,
            **options) for options in (server, {"model": model})]
        assert isinstance(retrievers[0].index.model, RemoteBGEM3)
        for query in QUERIES:
            got, want = (r.invoke(query) for r in retrievers)
            assert [d.id for d in got] == [d.id for d in want]
            _close([d.metadata["relevance_score"] for d in got],
                   [d.metadata["relevance_score"] for d in want], atol=1e-3)


@pytest.mark.parametrize("name", ["BGEM3Embeddings", "BGEM3SparseEmbeddings",
                                  "BGEM3ColbertReranker"])
def test_langchain_components_pickle_by_base_url_without_the_key(
        name: str, server: dict[str, Any], remote: RemoteBGEM3,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import langchain_bgem3
    from langchain_core.documents import Document

    monkeypatch.setenv("BGEM3_API_KEY", KEY)  # where pickles find the key

    def same_results(a: Any, b: Any) -> bool:
        if name == "BGEM3ColbertReranker":
            docs = [Document(page_content=t) for t in TEXTS[:4]]
            return bool(a.compress_documents(docs, QUERIES[0]) ==
                        b.compress_documents(docs, QUERIES[0]))
        return bool(a.embed_query(QUERIES[0]) == b.embed_query(QUERIES[0]))

    settings = {"top_n": 2} if name == "BGEM3ColbertReranker" else {"batch_size": 8}
    check_pickles_by_reference(getattr(langchain_bgem3, name), remote, server, same_results,
                               **settings)


@pytest.mark.filterwarnings("ignore::langchain_core._api.beta_decorator.LangChainBetaWarning")
def test_langchain_dumps_name_the_server_and_the_key_only_as_a_secret(
        server: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from langchain_bgem3 import BGEM3Embeddings
    from langchain_core.load import dumpd, load

    emb = BGEM3Embeddings(**server, query_max_length=64)
    data = json.loads(json.dumps(dumpd(emb)))
    assert KEY not in json.dumps(data)
    assert data["kwargs"]["base_url"] == server["base_url"]
    assert data["kwargs"]["api_key"] == {"lc": 1, "type": "secret", "id": ["BGEM3_API_KEY"]}
    options: dict[str, Any] = {"allowed_objects": [BGEM3Embeddings],
                               "valid_namespaces": ["langchain_bgem3"]}
    back = load(data, secrets_map={"BGEM3_API_KEY": KEY}, **options)
    assert back.bgem3 is emb.bgem3 and back.query_max_length == 64
    monkeypatch.setenv("BGEM3_API_KEY", KEY)  # no secrets map: the client's environment
    assert load(data, **options).bgem3 is emb.bgem3


class _Remote:
    """Points LangChain's standard suites at the server."""

    @pytest.fixture(autouse=True)
    def _server(self, server: dict[str, Any]) -> None:
        self.server = server

    @property
    def embeddings_class(self) -> type[Any]:
        from langchain_bgem3 import BGEM3Embeddings

        return BGEM3Embeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return dict(self.server)


class TestRemoteEmbeddingsUnit(_Remote, EmbeddingsUnitTests):
    pass


class TestRemoteEmbeddingsIntegration(_Remote, EmbeddingsIntegrationTests):
    pass


# ---------------------------------------------------------------- LlamaIndex
async def test_llamaindex_embeddings_equal_the_local_model(server: dict[str, Any],
                                                           model: BGEM3) -> None:
    from llama_index.embeddings.bgem3 import BGEM3Embedding
    from llama_index.sparse_embeddings.bgem3 import BGEM3SparseEmbedding

    emb, sparse = BGEM3Embedding(**server), BGEM3SparseEmbedding(**server)
    assert isinstance(emb.bgem3, RemoteBGEM3) and sparse.bgem3 is emb.bgem3
    assert "secret" not in repr(emb)
    _close(emb.get_text_embedding_batch(TEXTS[:6]), model.encode_documents(TEXTS[:6]).dense)
    _close(emb.get_query_embedding(QUERIES[0]), model.encode_queries(QUERIES[:1]).dense[0])  # type: ignore[index]
    assert await emb.aget_query_embedding(QUERIES[1]) == emb.get_query_embedding(QUERIES[1])
    want = model.encode_documents(TEXTS[:6], dense=False, sparse=True).sparse
    for got, expected in zip(sparse.get_text_embedding_batch(TEXTS[:6]), want, strict=True):  # type: ignore[arg-type]
        assert got == pytest.approx(expected.to_dict(), abs=1e-6)
    indices, _ = sparse.sparse_query_fn(QUERIES[:1])
    assert indices == [model.encode_queries(QUERIES[:1], sparse=True).sparse[0].indices.tolist()]  # type: ignore[index]


@pytest.mark.parametrize("weights", [None, (0.4, 0.2, 0.4)])
def test_llamaindex_rerank_equals_the_local_model(server: dict[str, Any], model: BGEM3,
                                                  weights: Any) -> None:
    from llama_index.core.schema import NodeWithScore, TextNode
    from llama_index.postprocessor.bgem3 import BGEM3ColbertRerank

    nodes = [NodeWithScore(node=TextNode(id_=f"n{i}", text=t)) for i, t in enumerate(TEXTS[:8])]
    scores = [{n.node.node_id: n.score for n in BGEM3ColbertRerank(
        top_n=8, weights=weights, **options).postprocess_nodes(nodes, query_str=QUERIES[0])}
        for options in (server, {"model": model})]
    assert scores[0] == pytest.approx(scores[1], abs=1e-3)


def test_llamaindex_retriever_finds_what_the_local_model_finds(server: dict[str, Any],
                                                               model: BGEM3) -> None:
    from llama_index.core.schema import TextNode
    from llama_index.retrievers.bgem3 import BGEM3HybridRetriever

    nodes = [TextNode(id_=f"n{i}", text=t) for i, t in enumerate(TEXTS)]
    through = BGEM3HybridRetriever.from_nodes(nodes, similarity_top_k=4, **server)
    local = BGEM3HybridRetriever.from_nodes(nodes, similarity_top_k=4, model=model)
    for query in QUERIES:
        got, want = through.retrieve(query), local.retrieve(query)
        assert [n.node.node_id for n in got] == [n.node.node_id for n in want]
        _close([n.score for n in got], [n.score for n in want], atol=1e-3)  # type: ignore[misc]


@pytest.mark.parametrize("name", ["embeddings", "sparse_embeddings", "postprocessor"])
def test_llamaindex_components_pickle_and_serialise_without_the_key(
        name: str, server: dict[str, Any], remote: RemoteBGEM3,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from llama_index.core.schema import NodeWithScore, TextNode

    module = importlib.import_module(f"llama_index.{name}.bgem3")
    cls = getattr(module, module.__all__[0])
    settings = {"top_n": 2} if name == "postprocessor" else {"embed_batch_size": 8}

    def results(component: Any) -> Any:
        if name == "postprocessor":
            nodes = [NodeWithScore(node=TextNode(id_=f"n{i}", text=t))
                     for i, t in enumerate(TEXTS[:4])]
            return [(n.node.node_id, n.score)
                    for n in component.postprocess_nodes(nodes, query_str=QUERIES[0])]
        return component.get_query_embedding(QUERIES[0])

    def same_results(a: Any, b: Any) -> bool:
        return bool(results(a) == results(b))

    monkeypatch.setenv("BGEM3_API_KEY", KEY)  # where pickles and configs find the key
    check_pickles_by_reference(cls, remote, server, same_results, **settings)
    component = cls(**server, **settings)
    assert KEY not in component.model_dump_json()
    if hasattr(component, "to_dict"):  # a BaseComponent (the sparse base is not one)
        config = component.to_dict()
        assert config["base_url"] == server["base_url"] and "api_key" not in config
        assert cls.from_dict(config).bgem3 is component.bgem3


# ---------------------------------------------------------------- both frameworks
def test_bad_remote_arguments_fail_at_construction(server: dict[str, Any], model: BGEM3) -> None:
    from langchain_bgem3 import BGEM3Embeddings
    from llama_index.postprocessor.bgem3 import BGEM3ColbertRerank

    for cls in (BGEM3Embeddings, BGEM3ColbertRerank):
        with pytest.raises(PermissionError, match="401"):
            cls(base_url=server["base_url"], api_key="wrong-key")
        with pytest.raises(ValueError, match="are the server's"):
            cls(**server, device="cpu")
        with pytest.raises(ValueError, match="not both"):
            cls(**server, model=model)
        with pytest.raises(ValueError, match="pass it with base_url="):
            cls(model=model, api_key=KEY)


_LANGCHAIN = """
from langchain_bgem3 import (BGEM3ColbertReranker, BGEM3Embeddings, BGEM3HybridRetriever,
                             BGEM3SparseEmbeddings)
from langchain_core.documents import Document
from qdrant_client import QdrantClient

emb = BGEM3Embeddings(base_url=url, api_key=key)
out["query"] = emb.embed_query(queries[0])
out["sparse"] = BGEM3SparseEmbeddings(base_url=url, api_key=key).embed_query(queries[0]).indices
docs = [Document(page_content=t) for t in texts]
reranked = BGEM3ColbertReranker(base_url=url, api_key=key).compress_documents(docs, queries[0])
out["reranked"] = [d.page_content for d in reranked]
retriever = BGEM3HybridRetriever.from_texts(texts, base_url=url, api_key=key, k=3,
                                            qdrant_client=QdrantClient(":memory:"))
out["retrieved"] = [d.page_content for d in retriever.invoke(queries[0])]
out["unpickled"] = unpickled.embed_query(queries[0])
"""

_LLAMAINDEX = """
from llama_index.core.schema import NodeWithScore, TextNode
from llama_index.embeddings.bgem3 import BGEM3Embedding
from llama_index.postprocessor.bgem3 import BGEM3ColbertRerank
from llama_index.retrievers.bgem3 import BGEM3HybridRetriever
from llama_index.sparse_embeddings.bgem3 import BGEM3SparseEmbedding
from qdrant_client import QdrantClient

out["query"] = BGEM3Embedding(base_url=url, api_key=key).get_query_embedding(queries[0])
sparse = BGEM3SparseEmbedding(base_url=url, api_key=key)
out["sparse"] = sorted(sparse.get_query_embedding(queries[0]))
nodes = [TextNode(text=t) for t in texts]
reranked = BGEM3ColbertRerank(base_url=url, api_key=key).postprocess_nodes(
    [NodeWithScore(node=n) for n in nodes], query_str=queries[0])
out["reranked"] = [n.node.get_content() for n in reranked]
retriever = BGEM3HybridRetriever.from_nodes(nodes, base_url=url, api_key=key,
                                            similarity_top_k=3,
                                            qdrant_client=QdrantClient(":memory:"))
out["retrieved"] = [n.node.get_content() for n in retriever.retrieve(queries[0])]
out["unpickled"] = unpickled.get_query_embedding(queries[0])
"""

_EMBEDDED_SEARCH = """
from langchain_bgem3 import BGEM3HybridRetriever

retriever = BGEM3HybridRetriever.from_texts(texts, base_url=url, api_key=key, k=3)
out["retrieved"] = [d.page_content for d in retriever.invoke(queries[0])]
"""


def _run_remote(script: str, server: dict[str, Any], path: Path | None = None
                ) -> dict[str, Any]:
    """``script`` in a fresh process (with ``url``, ``key``, ``texts``, ``queries`` and the
    object pickled at ``path`` as ``unpickled``): its ``out``, and the torch and
    transformers modules it imported as ``out["heavy"]``."""
    code = ("import json, pickle, sys\n"
            "url, key, texts, queries, path = json.loads(sys.stdin.read())\n"
            "out = {}\n"
            "unpickled = path and pickle.loads(open(path, 'rb').read())\n"
            + script +
            "out['heavy'] = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'transformers'))\n"
            "print(json.dumps(out))\n")
    stdin = json.dumps([server["base_url"], KEY, TEXTS[:8], QUERIES, path and str(path)])
    done = subprocess.run([sys.executable, "-c", code], input=stdin, capture_output=True,
                          text=True, env={**os.environ, "BGEM3_API_KEY": KEY}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def _local_hits(model: BGEM3) -> list[str | None]:
    local = bgem3.HybridIndex(model)
    local.add(TEXTS[:8])
    return [hit.text for hit in local.search(QUERIES[0], k=3)]


@pytest.mark.parametrize("framework", ["langchain", "llamaindex"])
def test_remote_mode_never_imports_torch_or_transformers(
        framework: str, server: dict[str, Any], model: BGEM3, tmp_path: Path) -> None:
    """Each component built with ``base_url=`` and used in a fresh process (the hybrid
    retriever over Qdrant); a component pickled here is unpickled there, with
    ``BGEM3_API_KEY`` as its key."""
    if framework == "langchain":
        from langchain_bgem3 import BGEM3Embeddings as Dense
    else:
        from llama_index.embeddings.bgem3 import BGEM3Embedding as Dense  # type: ignore[assignment]
    (tmp_path / "component.pkl").write_bytes(pickle.dumps(Dense(**server)))
    out = _run_remote(_LANGCHAIN if framework == "langchain" else _LLAMAINDEX, server,
                      tmp_path / "component.pkl")
    assert out["heavy"] == []
    query = model.encode_queries(QUERIES[:1], sparse=True)
    _close(out["query"], query.dense[0])  # type: ignore[index]
    _close(out["unpickled"], query.dense[0])  # type: ignore[index]
    assert out["sparse"] == query.sparse[0].indices.tolist()  # type: ignore[index]
    assert len(out["reranked"]) == 3 and set(out["reranked"]) <= set(TEXTS[:8])
    assert out["retrieved"] == _local_hits(model)


def test_a_retriever_over_the_embedded_index_never_imports_torch(
        server: dict[str, Any], model: BGEM3) -> None:
    out = _run_remote(_EMBEDDED_SEARCH, server)
    assert out["retrieved"] == _local_hits(model)
    assert out["heavy"] == []


# ---------------------------------------------------------------- evaluation and mining
def test_evaluate_through_the_server_equals_the_local_model(remote: RemoteBGEM3, model: BGEM3,
                                                            tmp_path: Path) -> None:
    data = write_beir_dataset(tmp_path, n_documents=40, n_queries=12)
    got, want = bgem3.evaluate(remote, data), bgem3.evaluate(model, data)
    assert got.model == want.model == model.name
    assert [r.mode for r in got.results] == [r.mode for r in want.results]
    for row, expected in zip(got.results, want.results, strict=True):
        assert row.metrics == pytest.approx(expected.metrics, abs=1e-6), row.mode


def test_mine_negatives_through_the_server_equals_the_local_model(remote: RemoteBGEM3,
                                                                  model: BGEM3,
                                                                  tmp_path: Path) -> None:
    texts = random_texts(60, min_words=6, max_words=30, seed=103)
    rows = [{"query": " ".join(texts[i].split()[:4]), "pos": [texts[i]],
             "neg": [texts[20 + (i * 7 + j * 13) % 40] for j in range(3)]} for i in range(20)]
    source = tmp_path / "train.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    for mode in ("dense", "hybrid"):
        mined = []
        for encoder, name in ((remote, "remote"), (model, "local")):
            report = mine_negatives(source, encoder, tmp_path / f"{name}-{mode}.jsonl",
                                    rank_range=(2, 12), num=4, mode=mode, seed=1)
            assert report.queries == 20
            mined.append((tmp_path / f"{name}-{mode}.jsonl").read_text(encoding="utf-8"))
        assert mined[0] == mined[1], mode


def test_a_reference_names_the_server_and_never_its_key(remote: RemoteBGEM3,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    reference = model_reference(remote)
    assert reference == (remote.name, None, None, remote.base_url)
    monkeypatch.delenv("BGEM3_API_KEY", raising=False)
    with pytest.raises(PermissionError, match="never its key: set BGEM3_API_KEY where"):
        resolve_reference(reference)
    monkeypatch.setenv("BGEM3_API_KEY", KEY)
    assert resolve_reference(reference) is shared_remote(remote.base_url, KEY)
