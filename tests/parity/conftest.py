from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def flag_model(tiny_path: Path) -> Any:
    """FlagEmbedding's reference model on the same files, fp32 on CPU."""
    from FlagEmbedding import BGEM3FlagModel

    return BGEM3FlagModel(str(tiny_path), use_fp16=False, devices="cpu")


@pytest.fixture(scope="session", params=["torch", "onnx"])
def model(request: pytest.FixtureRequest, tiny_path: Path) -> Any:
    """Ours on the same files, fp32 on CPU, in each backend (ONNX Runtime is the default)."""
    from bgem3 import BGEM3

    if request.param == "onnx":
        pytest.importorskip("onnxruntime")
    return BGEM3(tiny_path, device="cpu", dtype="float32", backend=request.param)
