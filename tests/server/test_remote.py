"""RemoteBGEM3: a server used like the local model, everywhere a model goes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bgem3 import BGEM3, Encoder, HybridIndex, TruncationWarning
from bgem3.remote import RemoteBGEM3, RemoteError
from bgem3.testing import random_texts

from tests.server.conftest import Served

pytestmark = [pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]

DOCS = list(dict.fromkeys(random_texts(30, max_words=30, seed=91, log_uniform=True)))
QUERIES = random_texts(4, max_words=6, seed=92)
KEY = "secret-key"


@pytest.fixture(scope="module")
def remote(served: Served) -> RemoteBGEM3:
    return RemoteBGEM3(served.url, api_key=KEY, batch_size=7)  # several requests per call


def test_remote_outputs_equal_the_local_models(remote: RemoteBGEM3, model: BGEM3) -> None:
    assert isinstance(remote, Encoder)
    assert (remote.name, remote.fingerprint, remote.dense_dim, remote.colbert_dim,
            remote.vocab_size, remote.query_max_length) == (
        model.name, model.fingerprint, model.dense_dim, model.colbert_dim, model.vocab_size,
        model.query_max_length)
    for encode, local in ((remote.encode_queries, model.encode_queries),
                          (remote.encode_documents, model.encode_documents)):
        with pytest.warns(TruncationWarning, match="3 of 10 texts"):  # as the local model
            got = encode(DOCS[:10], dense=True, sparse=True, colbert=True, max_length=20)
        with pytest.warns(TruncationWarning, match="3 of 10 texts"):
            want = local(DOCS[:10], dense=True, sparse=True, colbert=True, max_length=20)
        np.testing.assert_allclose(got.dense, want.dense, atol=1e-6)  # type: ignore[arg-type]
        for a, b in zip(got.sparse, want.sparse, strict=True):  # type: ignore[arg-type]
            assert a.indices.tolist() == b.indices.tolist()
            np.testing.assert_allclose(a.values, b.values, atol=1e-6)
        for a, b in zip(got.colbert, want.colbert, strict=True):  # type: ignore[arg-type]
            np.testing.assert_allclose(a, b, atol=1e-3)  # float16 on the wire
        assert got.tokens.tolist() == want.tokens.tolist()  # type: ignore[union-attr]
        assert got.truncated.tolist() == want.truncated.tolist()  # type: ignore[union-attr]
    only_sparse = remote.encode_documents(DOCS[:2], dense=False, sparse=True)
    assert only_sparse.dense is None and only_sparse.colbert is None


def test_remote_compute_score_equals_the_local_one(remote: RemoteBGEM3, model: BGEM3) -> None:
    pairs = [(q, d) for q in QUERIES[:2] for d in DOCS[:5]]
    got = remote.compute_score(pairs, weights=(0.4, 0.2, 0.4))
    want = model.compute_score(pairs, weights=(0.4, 0.2, 0.4))
    for mode, values in want.items():
        np.testing.assert_allclose(got[mode], values, atol=1e-3, err_msg=mode)


def test_remote_behind_an_index_finds_what_the_local_model_finds(
        remote: RemoteBGEM3, model: BGEM3, tmp_path: Path) -> None:
    ids = [f"d{i}" for i in range(len(DOCS))]
    through_server, local = HybridIndex(remote), HybridIndex(model)
    through_server.add(DOCS, ids=ids)
    local.add(DOCS, ids=ids)
    for query in QUERIES:
        got, want = through_server.search(query, k=5), local.search(query, k=5)
        assert [h.id for h in got] == [h.id for h in want]
        np.testing.assert_allclose([h.score for h in got], [h.score for h in want], atol=1e-3)
    through_server.save(tmp_path / "index")  # same fingerprint: the local model opens it
    assert len(HybridIndex.load(tmp_path / "index", model)) == len(DOCS)


def test_remote_async_methods(remote: RemoteBGEM3, model: BGEM3) -> None:
    async def run() -> tuple[object, object]:
        return await asyncio.gather(remote.aencode_queries(QUERIES, sparse=True),
                                    remote.aencode_documents(DOCS[:3]))

    queries, documents = asyncio.run(run())
    np.testing.assert_allclose(queries.dense, model.encode_queries(QUERIES).dense, atol=1e-6)  # type: ignore[attr-defined]
    np.testing.assert_allclose(documents.dense, model.encode_documents(DOCS[:3]).dense,  # type: ignore[attr-defined]
                               atol=1e-6)


def test_the_key_comes_from_the_environment_when_not_given(
        served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BGEM3_API_KEY", KEY)
    assert RemoteBGEM3(served.url).encode_queries(["x"]).dense.shape[0] == 1  # type: ignore[union-attr]
    monkeypatch.delenv("BGEM3_API_KEY")
    with pytest.raises(PermissionError, match="401"):
        RemoteBGEM3(served.url)


def test_remote_errors_are_clear(remote: RemoteBGEM3, served: Served) -> None:
    with pytest.raises(PermissionError, match="401"):
        RemoteBGEM3(served.url, api_key="wrong")
    with pytest.raises(RemoteError, match="cannot reach"):
        RemoteBGEM3("http://127.0.0.1:9", api_key=KEY, timeout=2)
    with pytest.raises(ValueError, match="max_length"):
        remote.encode_queries(["x"], max_length=10**6)
    with pytest.raises(TypeError, match="unexpected keyword"):
        remote.encode_queries(["x"], colbrt=True)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="list of strings"):
        remote.encode_queries("a bare string")
    with pytest.warns(TruncationWarning, match="1 of 1 texts"):
        remote.encode_documents(["word " * 50], max_length=8)


def test_importing_the_client_imports_no_torch() -> None:
    code = ("import sys, bgem3.remote, bgem3.server; "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.split() == ["False", "False"]
