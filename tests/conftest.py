"""Session fixtures: one tiny seeded checkpoint, built on the fly, shared by every test."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# Tests never touch the network: the hub client must only ever look at its cache.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# fingerprint digests of the test checkpoints stay out of the user's cache, and go at exit
if "BGEM3_CACHE_DIR" not in os.environ:
    os.environ["BGEM3_CACHE_DIR"] = tempfile.mkdtemp(prefix="bgem3-cache-")
    atexit.register(shutil.rmtree, os.environ["BGEM3_CACHE_DIR"], ignore_errors=True)

from pathlib import Path

import pytest
from bgem3.testing import build_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-bge-m3")
    # Its random weights depend on the transformers version that initialises them:
    # `make test-lowest` builds it with the locked versions, for the same weights as `make test`
    prebuilt = os.environ.get("BGEM3_TEST_CHECKPOINT")
    if prebuilt:
        return Path(shutil.copytree(prebuilt, path, dirs_exist_ok=True))
    return build_tiny_checkpoint(path)


@pytest.fixture(scope="session")
def model(tiny_path: Path):  # type: ignore[no-untyped-def]
    from bgem3 import BGEM3

    return BGEM3(tiny_path, device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def torch_model(tiny_path: Path):  # type: ignore[no-untyped-def]
    """The tiny model in torch (the default on CPU is ONNX Runtime where it is installed)."""
    from bgem3 import BGEM3

    return BGEM3(tiny_path, device="cpu", dtype="float32", backend="torch")
