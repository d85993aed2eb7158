"""Bad input, limits, overload and keys: a JSON error with a message, never a stack trace,
and the server keeps serving (every case ends with a good request that succeeds)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from bgem3 import BGEM3
from bgem3.server import ServerSettings, create_app
from fastapi.testclient import TestClient

from tests.server.conftest import Gated, gated_client

GOOD = ("/embed", {"inputs": ["a good request"]})


def _error(response: Any) -> str:
    body = response.json()
    assert "Traceback" not in response.text and "File \"" not in response.text
    error = body["error"]
    return error["message"] if isinstance(error, dict) else error


@pytest.mark.parametrize(("route", "body", "status", "message"), [
    ("/embed", b"{not json", 422, "not valid JSON"),
    ("/embed", b"", 422, "body"),
    ("/embed", {"inputs": 5}, 422, "inputs"),
    ("/embed", {"inputs": []}, 400, "empty list"),
    ("/embed", {"inputs": ["ok", ""]}, 400, "inputs[1] is an empty string"),
    ("/embed", b'{"inputs": ["ok", "\\ud800 lone"]}', 422, "unpaired surrogate"),
    ("/embed", {"inputs": "x", "unknown": 1}, 422, "Extra inputs are not permitted"),
    ("/embed", {"inputs": "x", "normalize": False}, 422, "normalize=false"),
    ("/embed", {"inputs": "x", "dimensions": 8}, 422, "dimensions=8"),
    ("/embed", {"inputs": "x", "truncate": "yes"}, 422, "truncate"),
    ("/embed", {"inputs": "x", "prompt_name": "query"}, 422, "prompt_name"),
    ("/embed", {"inputs": "x " * 9000, "truncate": False}, 422, "truncate is false"),
    ("/v1/embeddings", {"input": [[1, 2, 3]]}, 422, "token ids"),
    ("/v1/embeddings", {"input": "x", "encoding_format": "int8"}, 422, "encoding_format"),
    ("/v1/embeddings", {"input": "x", "dimensions": 1}, 422, "dimensions=1"),
    ("/v1/m3/encode", {"input": "x", "dense": False}, 422, "at least one"),
    ("/v1/m3/encode", {"input": "x", "kind": "passage"}, 422, "kind"),
    ("/v1/m3/encode", {"input": "x", "max_length": 1}, 422, "max_length"),
    ("/v1/m3/encode", {"input": "x", "max_length": 100000}, 422, "max_length"),
    ("/rerank", {"query": "q", "texts": []}, 400, "empty list"),
    ("/rerank", {"query": "", "texts": ["t"]}, 400, "empty string"),
    ("/rerank", {"query": "q", "texts": ["t"], "weights": [0, 0, 0]}, 422, "sum to zero"),
    ("/tokenize", {"inputs": None}, 422, "inputs"),
])
def test_bad_input_gets_a_clear_error_and_the_server_goes_on(
        client: TestClient, route: str, body: Any, status: int, message: str) -> None:
    if isinstance(body, bytes):
        response = client.post(route, content=body, headers={"content-type": "application/json"})
    else:
        response = client.post(route, json=body)
    assert response.status_code == status, response.text
    assert message in _error(response)
    assert client.post(*GOOD[:1], json=GOOD[1]).status_code == 200


def test_openai_errors_have_openais_shape(client: TestClient) -> None:
    body = client.post("/v1/embeddings", json={"input": []}).json()
    assert body["error"]["message"].startswith("input is an empty list")
    assert body["error"]["type"] == "Empty"


def test_unknown_routes_and_methods(client: TestClient) -> None:
    assert client.get("/nowhere").status_code == 404
    assert "no route GET /nowhere" in _error(client.get("/nowhere"))
    response = client.get("/embed")
    assert response.status_code == 405 and "GET is not allowed" in _error(response)
    assert client.post(*GOOD[:1], json=GOOD[1]).status_code == 200


def test_too_many_inputs_or_bytes_is_413(model: BGEM3) -> None:
    settings = ServerSettings(max_inputs_per_request=3, max_request_bytes=1000)
    with TestClient(create_app(model, settings)) as client:
        response = client.post("/embed", json={"inputs": ["a", "b", "c", "d"]})
        assert response.status_code == 413 and "at most 3" in _error(response)
        response = client.post("/embed", json={"inputs": ["x" * 2000]})
        assert response.status_code == 413 and "at most 1000" in _error(response)
        assert client.post("/embed", json={"inputs": ["a", "b", "c"]}).status_code == 200


def test_keys_are_checked_on_every_route_but_health(model: BGEM3) -> None:
    with TestClient(create_app(model, ServerSettings(api_key="s3cret"))) as client:
        assert client.get("/health").status_code == 200
        for method, route in (("POST", "/embed"), ("GET", "/info"), ("GET", "/metrics"),
                              ("POST", "/v1/embeddings"), ("GET", "/nowhere")):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
                response = client.request(method, route, headers=headers, json={"inputs": "x"})
                assert response.status_code == 401, (route, headers)
                assert "API key" in _error(response)
        ok = client.post("/embed", json={"inputs": "x"},
                         headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200


def test_no_cors_unless_asked(model: BGEM3) -> None:
    origin = {"Origin": "https://example.org"}
    with TestClient(create_app(model)) as client:
        assert "access-control-allow-origin" not in client.get("/health", headers=origin).headers
    settings = ServerSettings(cors_origins=("https://example.org",))
    with TestClient(create_app(model, settings)) as client:
        headers = client.get("/health", headers=origin).headers
        assert headers["access-control-allow-origin"] == "https://example.org"


def test_a_full_queue_answers_429_with_retry_after(gated: Gated) -> None:
    with gated_client(gated, max_queued_requests=1) as client:
        batcher = client.app.state.server.batcher  # type: ignore[attr-defined]
        statuses: list[int] = []

        def post(text: str) -> threading.Thread:
            thread = threading.Thread(target=lambda: statuses.append(
                client.post("/embed", json={"inputs": [text]}).status_code))
            thread.start()
            return thread

        held = post("held")
        assert gated.entered.wait(10)  # the worker encodes "held" and waits at the gate
        waiting = post("waiting")
        deadline = time.monotonic() + 10
        while batcher.depth < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        refused = client.post("/embed", json={"inputs": ["one too many"]})
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        assert "overloaded" in _error(refused)
        gated.gate.set()
        held.join(10)
        waiting.join(10)
        assert sorted(statuses) == [200, 200]
        assert client.post(*GOOD[:1], json=GOOD[1]).status_code == 200


class _Failing(Gated):
    def encode_documents(self, texts: list[str], **options: Any) -> Any:
        raise RuntimeError("CUDA error: something deep inside /secret/path.py")


def test_an_internal_failure_is_a_500_without_a_trace(model: BGEM3) -> None:
    failing = _Failing(model)
    with TestClient(create_app(failing), raise_server_exceptions=False) as client:  # type: ignore[arg-type]
        response = client.post("/embed", json={"inputs": ["x"]})
        assert response.status_code == 500
        assert _error(response) == "internal server error"
        assert "secret" not in response.text
        assert client.get("/health").status_code == 200


def test_logs_hold_request_texts_only_when_asked(model: BGEM3,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    secret = "a confidential sentence about Paris"
    for log_texts in (False, True):
        caplog.clear()
        with caplog.at_level("DEBUG"), \
                TestClient(create_app(model, ServerSettings(log_texts=log_texts))) as client:
            assert client.post("/embed", json={"inputs": [secret]}).status_code == 200
        assert (secret in caplog.text) is log_texts
        assert "1 texts" in caplog.text or log_texts


def test_a_prefix_mounted_by_a_proxy_changes_nothing(model: BGEM3) -> None:
    # Ray Serve (and other proxies) pass the full path with the prefix as root_path
    app = create_app(model, ServerSettings(api_key="k"))
    with TestClient(app, root_path="/bgem3") as client:
        assert client.get("/bgem3/health").status_code == 200  # public under a prefix too
        refused = client.post("/bgem3/v1/embeddings", json={"input": "x"})
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "Unauthorized"  # OpenAI's shape there
        ok = client.post("/bgem3/embed", json={"inputs": "x"},
                         headers={"Authorization": "Bearer k"})
        assert ok.status_code == 200
        metrics = client.get("/bgem3/metrics", headers={"Authorization": "Bearer k"}).text
        assert 'route="/embed"' in metrics
