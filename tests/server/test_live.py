"""A real ``bgem3 serve`` process on a free port, spoken to by the clients users have."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from bgem3 import BGEM3
from bgem3.server.wire import from_b64_colbert
from bgem3.testing import random_texts

from tests.server.conftest import Served

# a real server on this machine's loopback, and nothing else
pytestmark = [pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]

TEXTS = random_texts(5, max_words=30, seed=81)
KEY = "secret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def test_openai_client(served: Served, model: BGEM3) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key=KEY)
    response = client.embeddings.create(model="bge-m3", input=TEXTS)  # base64 by default
    expected = model.encode_documents(TEXTS).dense
    np.testing.assert_allclose([d.embedding for d in response.data], expected, atol=1e-6)
    assert response.usage.prompt_tokens > 0
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{served.url}/v1", api_key="wrong").embeddings.create(
            model="bge-m3", input="x")


def test_langchain_openai_embeddings(served: Served, model: BGEM3) -> None:
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(base_url=f"{served.url}/v1", api_key=KEY,  # type: ignore[arg-type]
                                  model="bge-m3", check_embedding_ctx_length=False)
    np.testing.assert_allclose(embeddings.embed_documents(TEXTS),
                               model.encode_documents(TEXTS).dense, atol=1e-6)
    np.testing.assert_allclose(embeddings.embed_query(TEXTS[0]),
                               model.encode_documents(TEXTS[:1]).dense[0], atol=1e-6)  # type: ignore[index]


def test_llama_index_openai_like_embedding(served: Served, model: BGEM3) -> None:
    from llama_index.embeddings.openai_like import OpenAILikeEmbedding

    embedding = OpenAILikeEmbedding(model_name="bge-m3", api_base=f"{served.url}/v1",
                                    api_key=KEY)
    np.testing.assert_allclose(embedding.get_text_embedding_batch(TEXTS),
                               model.encode_documents(TEXTS).dense, atol=1e-6)


def test_llama_index_text_embeddings_inference(served: Served, model: BGEM3) -> None:
    from llama_index.embeddings.text_embeddings_inference import TextEmbeddingsInference

    # a trailing slash, as users write it: the client then posts to //embed
    embedding = TextEmbeddingsInference(model_name="BAAI/bge-m3", base_url=f"{served.url}/",
                                        auth_token=KEY)
    np.testing.assert_allclose(embedding.get_text_embedding_batch(TEXTS),
                               model.encode_documents(TEXTS).dense, atol=1e-6)
    np.testing.assert_allclose(embedding.get_query_embedding(TEXTS[0]),
                               model.encode_documents(TEXTS[:1]).dense[0], atol=1e-6)  # type: ignore[index]


def test_hugging_face_inference_client(served: Served, model: BGEM3,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # what LangChain's HuggingFaceEndpointEmbeddings sends (it posts {"inputs": [...]} to the URL)
    from huggingface_hub import InferenceClient, constants

    # the hub client refuses every URL while HF_HUB_OFFLINE is set; sockets stay limited to
    # 127.0.0.1 by this module's marks
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    vectors = InferenceClient(model=served.url, token=KEY).feature_extraction(TEXTS[0])
    np.testing.assert_allclose(np.asarray(vectors).reshape(1, -1),
                               model.encode_documents(TEXTS[:1]).dense, atol=1e-6)


def _request(i: int) -> tuple[str, dict[str, Any], list[str]]:
    texts = random_texts(1 + i % 4, max_words=5 + 13 * (i % 5), seed=1000 + i)
    if i % 3 == 0:
        return "/embed", {"inputs": texts}, texts
    if i % 3 == 1:
        return "/embed_sparse", {"inputs": texts}, texts
    return "/v1/m3/encode", {"input": texts, "kind": "query", "colbert": True}, texts


def test_64_concurrent_mixed_requests_each_get_their_own_results(served: Served,
                                                                 model: BGEM3) -> None:
    def model_calls() -> float:
        metrics = httpx.get(f"{served.url}/metrics", headers=AUTH).text
        counts = [line for line in metrics.splitlines()
                  if line.startswith("bgem3_batch_rows_count")]
        return float(counts[0].split()[-1]) if counts else 0.0

    calls_before = model_calls()

    def send(i: int) -> tuple[int, Any]:
        route, body, _ = _request(i)
        response = httpx.post(served.url + route, json=body, headers=AUTH, timeout=120)
        return response.status_code, response.json()

    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(send, range(64)))
    for i, (status, body) in enumerate(results):
        assert status == 200, body
        route, _, texts = _request(i)
        if route == "/embed":
            # batched with other requests: other batch shapes, float rounding of ~1e-6
            np.testing.assert_allclose(body, model.encode_documents(texts).dense, atol=1e-5)
        elif route == "/embed_sparse":
            expected = model.encode_documents(texts, dense=False, sparse=True).sparse
            assert [[e["index"] for e in row] for row in body] == [
                v.indices.tolist() for v in expected]  # type: ignore[union-attr]
        else:
            expected = model.encode_queries(texts, colbert=True)
            for item, want, colbert in zip(body["data"], expected.dense,  # type: ignore[arg-type]
                                           expected.colbert, strict=True):  # type: ignore[arg-type]
                np.testing.assert_allclose(item["dense"], want, atol=1e-5)
                np.testing.assert_allclose(from_b64_colbert(item["colbert"],
                                                            item["colbert_shape"]),
                                           colbert, atol=1e-3)
    assert model_calls() - calls_before < 64  # some requests were encoded together


def test_sigterm_finishes_the_requests_in_flight_and_exits_0(tiny_path: Path) -> None:
    server = Served(tiny_path)
    texts = random_texts(500, min_words=100, max_words=200, seed=9)  # seconds of work
    answer: list[httpx.Response] = []
    sender = threading.Thread(target=lambda: answer.append(
        httpx.post(f"{server.url}/embed", json={"inputs": texts}, timeout=300)))
    sender.start()
    time.sleep(0.5)  # the request is being encoded
    server.process.send_signal(signal.SIGTERM)
    sender.join(300)
    assert server.process.wait(120) == 0
    assert answer and answer[0].status_code == 200
    assert len(answer[0].json()) == len(texts)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/health")


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bgem3", "serve", *args], capture_output=True,
                          text=True, timeout=120, env={"HF_HUB_OFFLINE": "1",
                                                      "PATH": "/usr/bin:/bin"})


def test_start_errors_are_one_line(tiny_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = str(taken.getsockname()[1])
        result = _serve("--model", str(tiny_path), "--port", port)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"bgem3: error: cannot listen on 127.0.0.1:{port}: Address already in use"]
    result = _serve("--model", "/no/such/checkpoint", "--port", "0")
    assert result.returncode == 1 and result.stderr.startswith("bgem3: error: ")
    assert len(result.stderr.strip().splitlines()) <= 2  # the error and a hint
    result = _serve("--port", "not-a-port")
    assert result.returncode == 2 and "invalid int value" in result.stderr
