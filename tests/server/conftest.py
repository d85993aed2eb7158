"""Server fixtures: the app in-process (Starlette's TestClient runs its lifespan) and a real
``bgem3 serve`` process on a free port of this machine."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from bgem3 import BGEM3, EncodeOutput
from bgem3.server import ServerSettings, create_app
from fastapi.testclient import TestClient


@pytest.fixture
def client(model: BGEM3) -> Iterator[TestClient]:
    with TestClient(create_app(model)) as test_client:
        yield test_client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class Served:
    """A ``bgem3 serve`` process: its base URL, and the process itself."""

    def __init__(self, tiny_path: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bgem3", "serve", "--model", str(tiny_path), "--device",
             "cpu", "--port", str(self.port), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"bgem3 serve exited: {self.process.stdout.read()}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("bgem3 serve did not start within 120 s")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return int(self.process.wait())


@pytest.fixture(scope="session")
def served(tiny_path: Path) -> Iterator[Served]:
    server = Served(tiny_path, "--api-key", "secret-key")
    yield server
    server.stop()


class Gated:
    """The tiny model behind a gate: its encode calls wait until the test opens the gate.

    Everything else is the model's own; the outputs are the model's own.
    """

    def __init__(self, model: BGEM3) -> None:
        self.model = model
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.calls: list[list[str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def encode_queries(self, texts: list[str], **options: Any) -> EncodeOutput:
        self.entered.set()
        self.gate.wait(30)
        self.calls.append(list(texts))
        return self.model.encode_queries(texts, **options)

    def encode_documents(self, texts: list[str], **options: Any) -> EncodeOutput:
        self.entered.set()
        self.gate.wait(30)
        self.calls.append(list(texts))
        return self.model.encode_documents(texts, **options)


@pytest.fixture
def gated(model: BGEM3) -> Gated:
    return Gated(model)


def gated_client(gated: Gated, **settings: Any) -> TestClient:
    return TestClient(create_app(gated, ServerSettings(**settings)))  # type: ignore[arg-type]
