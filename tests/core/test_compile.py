"""``BGEM3(compile=True)``: torch.compile'd backbone, same outputs, clear error when it cannot."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from bgem3 import BGEM3, CompileError
from bgem3.encoder import _COMPILE_TESTED_TORCH
from bgem3.testing import random_texts

OLD_TORCH = (tuple(int(p) for p in torch.__version__.split(".")[:2])
             < tuple(int(p) for p in _COMPILE_TESTED_TORCH.split(".")))


@pytest.fixture(scope="module")
def compiled(tiny_path: Path) -> BGEM3:
    if OLD_TORCH:  # transformers' code does not compile there: the user is told what to do
        with pytest.raises(CompileError, match="upgrade torch, or load it with compile=False"):
            BGEM3(tiny_path, device="cpu", dtype="float32", compile=True)
        pytest.skip(f"compile=True needs torch >= {_COMPILE_TESTED_TORCH} (clear error checked)")
    return BGEM3(tiny_path, device="cpu", dtype="float32", compile=True)


def _assert_same(a, b) -> None:  # type: ignore[no-untyped-def]
    np.testing.assert_allclose(a.dense, b.dense, atol=1e-5)
    for x, y in zip(a.colbert, b.colbert, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5)
    for x, y in zip(a.sparse, b.sparse, strict=True):
        np.testing.assert_array_equal(x.indices, y.indices)
        np.testing.assert_allclose(x.values, y.values, atol=1e-5)


def test_compiled_outputs_equal_the_eager_model(model: BGEM3, compiled: BGEM3) -> None:
    import torch._inductor.config as inductor_config

    assert compiled._module.compiled and not model._module.compiled
    # documents of mixed lengths (batches of several rows) and single queries (one row)
    documents = random_texts(40, min_words=3, max_words=60, seed=11) * 2
    heads = {"dense": True, "sparse": True, "colbert": True}
    _assert_same(compiled.encode_documents(documents, **heads),
                 model.encode_documents(documents, **heads))
    assert compiled.last_stats.batches < len(set(documents))  # batches of several rows ran
    for query in random_texts(6, min_words=1, max_words=12, seed=12):
        _assert_same(compiled.encode_queries([query], **heads),
                     model.encode_queries([query], **heads))
    # freezing is switched on around our calls only, never left on for the process
    assert inductor_config.freezing is False


def test_compiled_model_with_padded_batches_equals_eager(tiny_path: Path, model: BGEM3,
                                                         compiled: BGEM3) -> None:
    texts = random_texts(24, min_words=2, max_words=30, seed=13)
    compiled.max_padding = model.max_padding = 1.0  # rows of different lengths share a batch
    try:
        heads = {"dense": True, "sparse": True, "colbert": True}
        got = compiled.encode_documents(texts, **heads)
        assert compiled.last_stats.padding_waste > 0
        _assert_same(got, model.encode_documents(texts, **heads))
    finally:
        compiled.max_padding = model.max_padding = 0.0


def test_compile_failure_is_a_clear_error(tiny_path: Path, tmp_path: Path) -> None:
    # A fresh process with an empty inductor cache and no usable C++ compiler: the
    # situation of a machine without one (every compiled kernel must be built).
    script = textwrap.dedent(f"""
        import torch._inductor.config as inductor_config
        inductor_config.cpp.cxx = (None, {str(tmp_path / "no-such-c++")!r})
        import bgem3
        try:
            bgem3.BGEM3({str(tiny_path)!r}, device="cpu", compile=True)
        except bgem3.CompileError as exc:
            assert isinstance(exc, RuntimeError) and isinstance(exc, bgem3.BGEM3Error)
            print("CompileError:", exc)
        else:
            print("compiled")
    """)
    env = {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"), "PATH": "/usr/bin:/bin",
           "HF_HUB_OFFLINE": "1", "TORCHINDUCTOR_COMPILE_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("CompileError: compile=True: torch.compile cannot compile")
    assert "load it with compile=False" in done.stdout  # what to do about it
    assert ("upgrade torch" in done.stdout) is OLD_TORCH
    if not OLD_TORCH:  # (an old torch fails earlier, inside transformers' code)
        assert "no-such-c++" in done.stdout  # and torch's reason


def test_compile_is_off_by_default(model: BGEM3) -> None:
    assert not model._module.compiled
    assert getattr(model._module.backbone, "_compiled_call_impl", None) is None
