"""Every route's outputs equal the in-process model's (dense, sparse, ColBERT to 1e-6)."""

from __future__ import annotations

import numpy as np
import pytest
from bgem3 import BGEM3
from bgem3.server.wire import from_b64_colbert, from_b64_dense
from bgem3.testing import random_texts
from fastapi.testclient import TestClient

TEXTS = random_texts(6, max_words=40, seed=71, log_uniform=True)
QUERY = "what is a hybrid index?"


def test_openai_route_float_and_base64(client: TestClient, model: BGEM3) -> None:
    expected = model.encode_documents(TEXTS, dense=True)
    for route in ("/v1/embeddings", "/embeddings"):
        body = client.post(route, json={"input": TEXTS, "model": "bge-m3"}).json()
        assert body["object"] == "list" and body["model"] == model.name
        assert [d["index"] for d in body["data"]] == list(range(len(TEXTS)))
        np.testing.assert_allclose([d["embedding"] for d in body["data"]], expected.dense,
                                   atol=1e-6)
        assert body["usage"]["prompt_tokens"] == int(expected.tokens.sum())  # type: ignore[union-attr]
    packed = client.post("/v1/embeddings", json={"input": TEXTS[0],
                                                 "encoding_format": "base64"}).json()
    np.testing.assert_allclose(from_b64_dense(packed["data"][0]["embedding"]),
                               expected.dense[0], atol=1e-6)  # type: ignore[index]


def test_tei_embed_routes(client: TestClient, model: BGEM3) -> None:
    expected = model.encode_documents(TEXTS, dense=True, sparse=True)
    for route in ("/embed", "/", "//embed"):
        vectors = client.post(route, json={"inputs": TEXTS, "truncate": True}).json()
        np.testing.assert_allclose(vectors, expected.dense, atol=1e-6)
    single = client.post("/embed", json={"inputs": TEXTS[0]}).json()
    assert np.shape(single) == (1, model.dense_dim)  # one text: still [[...]], as TEI's
    sparse = client.post("/embed_sparse", json={"inputs": TEXTS}).json()
    for got, want in zip(sparse, expected.sparse, strict=True):  # type: ignore[arg-type]
        assert [e["index"] for e in got] == want.indices.tolist()
        np.testing.assert_allclose([e["value"] for e in got], want.values, atol=1e-6)


@pytest.mark.parametrize("colbert_format", ["base64", "float"])
@pytest.mark.parametrize("kind", ["query", "document"])
def test_m3_encode_gives_all_three_outputs(client: TestClient, model: BGEM3, kind: str,
                                           colbert_format: str) -> None:
    encode = model.encode_queries if kind == "query" else model.encode_documents
    expected = encode(TEXTS, dense=True, sparse=True, colbert=True, max_length=24)
    body = client.post("/v1/m3/encode", json={
        "input": TEXTS, "kind": kind, "dense": True, "sparse": True, "colbert": True,
        "max_length": 24, "colbert_format": colbert_format, "sparse_tokens": True}).json()
    assert body["usage"]["total_tokens"] == int(expected.tokens.sum())  # type: ignore[union-attr]
    for i, item in enumerate(body["data"]):
        assert item["index"] == i
        np.testing.assert_allclose(item["dense"], expected.dense[i], atol=1e-6)  # type: ignore[index]
        want = expected.sparse[i]  # type: ignore[index]
        assert item["sparse"]["indices"] == want.indices.tolist()
        np.testing.assert_allclose(item["sparse"]["values"], want.values, atol=1e-6)
        assert item["sparse"]["tokens"] == model.tokenizer.convert_ids_to_tokens(
            want.indices.tolist())
        colbert = (from_b64_colbert(item["colbert"], item["colbert_shape"])
                   if colbert_format == "base64" else np.asarray(item["colbert"]))
        assert list(colbert.shape) == item["colbert_shape"]
        atol = 1e-3 if colbert_format == "base64" else 1e-6  # base64 is float16, as documented
        np.testing.assert_allclose(colbert, expected.colbert[i], atol=atol)  # type: ignore[index]


def test_m3_encode_returns_only_what_is_asked(client: TestClient) -> None:
    item = client.post("/v1/m3/encode", json={"input": "a text", "dense": False,
                                              "sparse": True}).json()["data"][0]
    assert set(item) == {"index", "tokens", "truncated", "sparse"}
    assert set(item["sparse"]) == {"indices", "values"}


def test_rerank_has_compute_scores_semantics(client: TestClient, model: BGEM3) -> None:
    weights = (0.4, 0.2, 0.4)
    expected = model.compute_score([(QUERY, t) for t in TEXTS], weights=weights)
    ranked = client.post("/rerank", json={"query": QUERY, "texts": TEXTS,
                                          "weights": list(weights), "return_text": True}).json()
    assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)
    for result in ranked:
        i = result["index"]
        assert result["text"] == TEXTS[i]
        for mode, values in expected.items():
            assert result["scores"][mode] == pytest.approx(values[i], abs=1e-5), mode
        assert result["score"] == pytest.approx(expected["colbert+sparse+dense"][i], abs=1e-5)
    dense_first = client.post("/rerank", json={"query": QUERY, "texts": TEXTS,
                                               "mode": "dense"}).json()
    assert [r["index"] for r in dense_first] == list(np.argsort(-np.asarray(expected["dense"])))


def test_tokenize_info_health_metrics(client: TestClient, model: BGEM3) -> None:
    tokens = client.post("/tokenize", json={"inputs": ["hello world"]}).json()[0]
    ids = model.tokenizer("hello world")["input_ids"]
    assert [t["id"] for t in tokens] == ids
    assert tokens[0]["special"] and tokens[0]["start"] is None
    assert "hello world"[tokens[1]["start"]:tokens[-2]["stop"]] == "hello world"
    info = client.get("/info").json()
    assert (info["fingerprint"], info["dense_dim"], info["colbert_dim"], info["vocab_size"]) == (
        model.fingerprint, model.dense_dim, model.colbert_dim, model.vocab_size)
    assert info["query_max_length"] == model.query_max_length
    assert client.get("/health").status_code == 200
    text = client.get("/metrics").text
    for series in ("bgem3_requests_total", "bgem3_request_duration_seconds_bucket",
                   "bgem3_queue_depth", "bgem3_batch_rows_bucket", "bgem3_batch_tokens_bucket",
                   "bgem3_tokens_total", "bgem3_tokens_per_second"):
        assert series in text, series
    assert 'bgem3_requests_total{route="/tokenize",status="200"} 1.0' in text


def test_openapi_page_documents_the_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for route in ("/v1/embeddings", "/embed", "/embed_sparse", "/v1/m3/encode", "/rerank",
                  "/tokenize", "/info", "/health", "/metrics"):
        assert route in paths, route
    assert client.get("/docs").status_code == 200
