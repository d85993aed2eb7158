"""bgem3.ray.serve_app: the server app on a local Ray Serve, one replica, on 127.0.0.1 only.

Ray and Serve start once for the module, on a free port, and are shut down after it.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from bgem3 import BGEM3, CheckpointNotFoundError
from bgem3.server import ServerSettings
from bgem3.testing import random_texts

from tests.server.conftest import free_port

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
import bgem3.ray  # noqa: E402

pytestmark = pytest.mark.enable_socket  # Ray and its proxy talk over localhost

KEY = "ray-secret"
AUTH = {"Authorization": f"Bearer {KEY}"}
TEXTS = random_texts(6, max_words=40, seed=73, log_uniform=True)


@pytest.fixture(scope="module")
def url(tiny_path: Path) -> Iterator[str]:
    # Ray runs its workers at nice 15: on a busy 2-core machine they starve
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False, _node_ip_address="127.0.0.1")
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = bgem3.ray.serve_app(tiny_path, num_replicas=1,
                                  ray_actor_options={"num_cpus": 1},
                                  settings=ServerSettings(api_key=KEY),
                                  device="cpu", dtype="float32")
        serve.run(app, name="bgem3", route_prefix="/", blocking=False)  # returns once ready
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture
def client(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, headers=AUTH, timeout=60) as http:
        yield http


def test_routes_equal_the_in_process_model(client: httpx.Client, model: BGEM3) -> None:
    documents = model.encode_documents(TEXTS, dense=True, sparse=True)
    embed = client.post("/embed", json={"inputs": TEXTS})
    assert embed.status_code == 200, embed.text
    np.testing.assert_allclose(embed.json(), documents.dense, atol=1e-6)
    sparse = client.post("/embed_sparse", json={"inputs": TEXTS}).json()
    for got, want in zip(sparse, documents.sparse, strict=True):  # type: ignore[arg-type]
        assert [e["index"] for e in got] == want.indices.tolist()
        np.testing.assert_allclose([e["value"] for e in got], want.values, atol=1e-6)

    queries = model.encode_queries(TEXTS, dense=True, sparse=True, colbert=True)
    body = client.post("/v1/m3/encode", json={
        "input": TEXTS, "kind": "query", "dense": True, "sparse": True, "colbert": True,
        "colbert_format": "float"}).json()
    assert body["usage"]["total_tokens"] == int(queries.tokens.sum())  # type: ignore[union-attr]
    for i, item in enumerate(body["data"]):
        assert item["index"] == i
        np.testing.assert_allclose(item["dense"], queries.dense[i], atol=1e-6)  # type: ignore[index]
        assert item["sparse"]["indices"] == queries.sparse[i].indices.tolist()  # type: ignore[index]
        np.testing.assert_allclose(item["sparse"]["values"], queries.sparse[i].values,  # type: ignore[index]
                                   atol=1e-6)
        np.testing.assert_allclose(item["colbert"], queries.colbert[i], atol=1e-6)  # type: ignore[index]


def test_the_replica_serves_the_same_checkpoint_with_the_settings_given(
        url: str, client: httpx.Client, model: BGEM3) -> None:
    health = httpx.get(f"{url}/health", timeout=60)  # no key: /health stays open
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    refused = httpx.post(f"{url}/embed", json={"inputs": ["a text"]}, timeout=60)
    assert refused.status_code == 401 and refused.json()["error_type"] == "Unauthorized"
    info = client.get("/info").json()
    assert info["fingerprint"] == model.fingerprint
    assert (info["device"], info["dtype"]) == ("cpu", "float32")
    empty = client.post("/v1/m3/encode", json={"input": []})  # the app's own errors
    assert empty.status_code == 400 and empty.json()["error_type"] == "Empty"


def test_concurrent_requests_each_get_their_own(url: str, model: BGEM3) -> None:
    # answers at all: the batching thread runs in the replica (the app's lifespan started
    # it); each its own: requests batched together are split back per request
    texts = random_texts(24, max_words=30, seed=74)
    expected = model.encode_queries(texts, dense=True)

    async def ask_all() -> list[list[float]]:
        async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=60) as http:
            answers = await asyncio.gather(*(
                http.post("/v1/m3/encode", json={"input": [t], "kind": "query"})
                for t in texts))
        return [a.json()["data"][0]["dense"] for a in answers]

    np.testing.assert_allclose(asyncio.run(ask_all()), expected.dense, atol=1e-6)


def test_serve_app_checks_its_arguments_before_any_replica_starts(
        tiny_path: Path, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="colour"):
        bgem3.ray.serve_app(tiny_path, colour="blue")
    with pytest.raises(ValueError, match="num_replicas must be a positive int, got 0"):
        bgem3.ray.serve_app(tiny_path, num_replicas=0)
    with pytest.raises(ValueError, match="max_ongoing_requests"):
        bgem3.ray.serve_app(tiny_path, max_ongoing_requests=-1)
    with pytest.raises(ValueError, match="num_replicas as serve_app's own argument"):
        bgem3.ray.serve_app(tiny_path, deployment_options={"num_replicas": 2})
    with pytest.raises(TypeError, match="ServerSettings"):
        bgem3.ray.serve_app(tiny_path, settings={"api_key": KEY})  # type: ignore[arg-type]
    with pytest.raises(CheckpointNotFoundError, match=r"config\.json"):
        bgem3.ray.serve_app(tmp_path)  # a directory here, but no checkpoint
    app = bgem3.ray.serve_app("BAAI/bge-m3", num_replicas="auto",
                              deployment_options={"name": "m3", "autoscaling_config": {
                                  "min_replicas": 1, "max_replicas": 2}})
    assert isinstance(app, serve.Application)  # a hub id is resolved in the replicas


def test_missing_extras_name_the_install_command(monkeypatch: pytest.MonkeyPatch,
                                                 tiny_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "bgem3.server.app", None)
    with pytest.raises(ImportError, match=r'pip install "bgem3\[ray-serve\]"'):
        bgem3.ray.serve_app(tiny_path)
    monkeypatch.delattr(ray, "serve")
    monkeypatch.setitem(sys.modules, "ray.serve", None)
    with pytest.raises(ImportError, match="needs Ray Serve"):
        bgem3.ray.serve_app(tiny_path)
