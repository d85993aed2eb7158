"""The ways to run the backbone, each equal to the torch backend to 1e-5 (int8: close to it).

``BGEM3(compile=True)`` (torch.compile'd backbone) and ``BGEM3(backend="onnx")`` (the backbone
exported once, cached, run by ONNX Runtime); clear errors where either cannot run.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from bgem3 import BGEM3, CompileError
from bgem3.model import COMPILE_TESTED_TORCH
from bgem3.testing import build_tiny_checkpoint, random_texts

OLD_TORCH = torch.__version__ < COMPILE_TESTED_TORCH
HEADS = {"dense": True, "sparse": True, "colbert": True}


def _assert_same(a, b) -> None:  # type: ignore[no-untyped-def]
    np.testing.assert_allclose(a.dense, b.dense, atol=1e-5)
    for x, y in zip(a.colbert, b.colbert, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5)
    for x, y in zip(a.sparse, b.sparse, strict=True):
        np.testing.assert_array_equal(x.indices, y.indices)
        np.testing.assert_allclose(x.values, y.values, atol=1e-5)


# ----------------------------------------------------------------------------- compile=True
@pytest.fixture(scope="module")
def compiled(tiny_path: Path) -> BGEM3:
    if OLD_TORCH:  # transformers' code does not compile there: the user is told what to do
        with pytest.raises(CompileError, match="upgrade torch, or load it with compile=False"):
            BGEM3(tiny_path, device="cpu", dtype="float32", compile=True)
        pytest.skip(f"compile=True needs torch >= {COMPILE_TESTED_TORCH} (clear error checked)")
    return BGEM3(tiny_path, device="cpu", dtype="float32", compile=True)


def test_compiled_outputs_equal_the_eager_model(torch_model: BGEM3, compiled: BGEM3) -> None:
    import torch._inductor.config as inductor_config

    assert compiled.module.compiled and not torch_model.module.compiled
    # documents of mixed lengths (batches of several rows) and single queries (one row)
    documents = random_texts(40, min_words=3, max_words=60, seed=11) * 2
    _assert_same(compiled.encode_documents(documents, **HEADS),
                 torch_model.encode_documents(documents, **HEADS))
    assert compiled.last_stats.batches < len(set(documents))  # batches of several rows ran
    for query in random_texts(6, min_words=1, max_words=12, seed=12):
        _assert_same(compiled.encode_queries([query], **HEADS),
                     torch_model.encode_queries([query], **HEADS))
    # freezing is switched on around our calls only, never left on for the process
    assert inductor_config.freezing is False


def test_compiled_model_with_padded_batches_equals_eager(tiny_path: Path, torch_model: BGEM3,
                                                         compiled: BGEM3) -> None:
    texts = random_texts(24, min_words=2, max_words=30, seed=13)
    compiled.max_padding = torch_model.max_padding = 1.0  # rows of different lengths share a batch
    try:
        got = compiled.encode_documents(texts, **HEADS)
        assert compiled.last_stats.padding_waste > 0
        _assert_same(got, torch_model.encode_documents(texts, **HEADS))
    finally:
        compiled.max_padding = torch_model.max_padding = 0.0


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


def test_compile_is_off_by_default(torch_model: BGEM3) -> None:
    assert not torch_model.module.compiled
    assert getattr(torch_model.module.backbone, "_compiled_call_impl", None) is None


# ----------------------------------------------------------------------------- backend="onnx"
@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty bgem3 cache directory (where exports go); skips without onnxruntime/onnx."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    monkeypatch.setenv("BGEM3_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "onnx"


def test_onnx_outputs_equal_the_torch_backend(tiny_path: Path, torch_model: BGEM3, cache: Path
                                              ) -> None:
    onnx = BGEM3(tiny_path, backend="onnx")
    assert onnx.device.type == "cpu" and "backend='onnx'" in repr(onnx)
    documents = random_texts(40, min_words=3, max_words=60, seed=21) * 2
    _assert_same(onnx.encode_documents(documents, **HEADS),
                 torch_model.encode_documents(documents, **HEADS))
    assert onnx.last_stats.batches < len(set(documents))  # batches of several rows ran
    for query in random_texts(6, min_words=1, max_words=12, seed=22):
        _assert_same(onnx.encode_queries([query], **HEADS),
                     torch_model.encode_queries([query], **HEADS))
    # padded batches (accelerators allow some padding): the attention mask is honoured
    texts = random_texts(24, min_words=2, max_words=30, seed=23)
    onnx.max_padding = torch_model.max_padding = 1.0
    try:
        got = onnx.encode_documents(texts, **HEADS)
        assert onnx.last_stats.padding_waste > 0
        _assert_same(got, torch_model.encode_documents(texts, **HEADS))
    finally:
        torch_model.max_padding = 0.0
    pairs = [("paris city", "the city of paris"), ("a dog", "the cat sat")]
    got_scores, want = onnx.compute_score(pairs), torch_model.compute_score(pairs)
    for mode, values in want.items():
        np.testing.assert_allclose(got_scores[mode], values, atol=1e-5)


def test_export_is_cached_and_a_corrupt_cache_is_exported_again(
        tiny_path: Path, torch_model: BGEM3, cache: Path) -> None:
    BGEM3(tiny_path, backend="onnx")
    (entry,) = cache.iterdir()  # one export, nothing left from staging
    exported = entry / "backbone.onnx"
    stamp = exported.stat().st_mtime_ns
    BGEM3(tiny_path, backend="onnx")
    assert exported.stat().st_mtime_ns == stamp  # the second load used the cached export
    exported.write_bytes(b"not an onnx model")  # corrupt (or cut short) on disk
    again = BGEM3(tiny_path, backend="onnx")
    assert exported.stat().st_size > 1000 and [p.name for p in cache.iterdir()] == [entry.name]
    texts = random_texts(8, min_words=2, max_words=20, seed=24)
    _assert_same(again.encode(texts, **HEADS), torch_model.encode(texts, **HEADS))


def test_failed_export_is_a_clear_error_and_leaves_nothing(
        tiny_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bgem3._onnx as onnx_backend

    def interrupted(backbone, target: Path) -> None:  # type: ignore[no-untyped-def]
        (target / "backbone.onnx").write_bytes(b"half a file")
        raise RuntimeError("disk full")

    monkeypatch.setattr(onnx_backend, "_export", interrupted)
    with pytest.raises(CompileError, match=r"cannot export .* to ONNX.*disk full"):
        BGEM3(tiny_path, backend="onnx")
    assert list(cache.iterdir()) == []  # no half-written export to be picked up later


def test_an_export_of_other_weights_under_the_key_is_exported_again(
        tiny_path: Path, torch_model: BGEM3, cache: Path, tmp_path: Path) -> None:
    import onnx

    other_path = build_tiny_checkpoint(tmp_path / "other", seed=7)
    other = BGEM3(other_path, device="cpu", backend="torch")
    BGEM3(tiny_path, backend="onnx")
    (entry,) = cache.iterdir()
    assert torch_model.fingerprint in entry.name
    key = entry.name.replace(torch_model.fingerprint, other.fingerprint)
    shutil.copytree(entry, cache / key)  # a valid export, of the first model's weights
    with pytest.warns(UserWarning, match=rf"export in .*{key} was exported from .*"
                                         rf"{torch_model.fingerprint}.*exporting it again"):
        onnx_other = BGEM3(other_path, backend="onnx")
    texts = random_texts(8, min_words=2, max_words=20, seed=26)
    _assert_same(onnx_other.encode(texts, **HEADS), other.encode(texts, **HEADS))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # what is under the key now is stamped with it
        BGEM3(other_path, backend="onnx")
    # an export without the stamp (written before it existed) is not trusted either
    exported = cache / key / "backbone.onnx"
    unstamped = onnx.load(str(exported))
    del unstamped.metadata_props[:]
    onnx.save(unstamped, str(exported))
    with pytest.warns(UserWarning, match="does not say which weights"):
        BGEM3(other_path, backend="onnx")


def test_a_cache_directory_that_cannot_be_written_is_named(
        tiny_path: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a file where a directory must be: no user, root included, writes
    monkeypatch.setenv("BGEM3_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(OSError, match=r"cannot write its export of the backbone to the cache "
                                      r"directory .*a-file.*: make it a writable directory, or set "
                                      "BGEM3_CACHE_DIR to another directory") as info:
        BGEM3(tiny_path, backend="onnx")
    assert not isinstance(info.value, CompileError) and info.value.errno == errno.ENOTDIR
    if os.geteuid() != 0:  # root ignores permissions
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        monkeypatch.setenv("BGEM3_CACHE_DIR", str(locked))
        with pytest.raises(PermissionError, match=r"locked.*BGEM3_CACHE_DIR"):
            BGEM3(tiny_path, backend="onnx")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_full_disk_is_a_full_disk_not_an_export_failure(
        tiny_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_staging = tempfile.mkdtemp

    def staging_on_a_full_disk(*args, **kwargs):  # type: ignore[no-untyped-def]
        path = make_staging(*args, **kwargs)
        os.symlink("/dev/full", os.path.join(path, "backbone.onnx"))  # writes: ENOSPC
        return path

    monkeypatch.setattr(tempfile, "mkdtemp", staging_on_a_full_disk)
    with pytest.raises(OSError, match=r"cache directory .*No space left on device\): free "
                                      "space there, or set BGEM3_CACHE_DIR") as info:
        BGEM3(tiny_path, backend="onnx")
    assert not isinstance(info.value, CompileError) and info.value.errno == errno.ENOSPC
    assert list(cache.iterdir()) == []  # nothing half-written left behind


def test_onnx_backend_bad_options(tiny_path: Path, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # runs with or without onnxruntime installed (without it, as a user without the extra)
    monkeypatch.setenv("BGEM3_CACHE_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="backend must be 'auto', 'torch' or 'onnx'"):
        BGEM3(tiny_path, backend="tensorrt")
    with pytest.raises(ValueError, match="runs on the CPU in float32"):
        BGEM3(tiny_path, backend="onnx", dtype="bfloat16")
    with pytest.raises(ValueError, match="pick one"):
        BGEM3(tiny_path, backend="onnx", compile=True)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # not installed (if it is)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'bgem3\[onnx\]'"):
        BGEM3(tiny_path, backend="onnx")


def test_encode_pool_workers_run_the_onnx_backend_of_a_loaded_model(
        tiny_path: Path, torch_model: BGEM3, cache: Path) -> None:
    from bgem3 import EncodePool

    onnx = BGEM3(tiny_path, backend="onnx")
    shutil.rmtree(cache)  # the worker must export again: proof that it runs backend="onnx"
    texts = random_texts(20, min_words=2, max_words=30, seed=25)
    with EncodePool(onnx, devices=["cpu"], chunk_size=8) as pool:
        got = pool.encode(texts, **HEADS)
    _assert_same(got, torch_model.encode(texts, **HEADS))
    assert [p.name for p in cache.iterdir()] and (next(cache.iterdir()) / "backbone.onnx").is_file()


# ----------------------------------------------------------------------------- the default
def test_auto_is_onnx_runtime_on_a_cpu_in_float32_and_torch_elsewhere() -> None:
    from bgem3._placement import choose_backend

    assert choose_backend("auto", "cpu", "float32", compile=False) == "onnx"
    assert choose_backend("auto", "cpu", "int8", compile=False) == "onnx"
    assert choose_backend("auto", "cpu", "float32", compile=True) == "torch"
    assert choose_backend("auto", "cpu", "bfloat16", compile=False) == "torch"
    assert choose_backend("auto", "cuda", "float16", compile=False) == "torch"
    assert choose_backend("auto", "cuda:1", "float32", compile=False) == "torch"
    assert choose_backend("torch", "cpu", "float32", compile=False) == "torch"
    with pytest.raises(ValueError, match="dtype='int8' runs on the CPU in ONNX Runtime"):
        choose_backend("auto", "cuda", "int8", compile=False)


def test_the_device_is_settled_without_torch_where_no_gpu_can_exist(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import bgem3._placement as placement

    assert placement.dtype_name(torch.int8, "cpu") == "int8"
    asked: list[object] = []
    monkeypatch.setattr(placement, "resolve_device", lambda d: asked.append(d) or "cuda")
    monkeypatch.setattr(placement, "_torch_loaded", lambda: False)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(os.path, "exists", lambda path: False)  # no GPU driver's device node
    assert placement.device_name(None) == "cpu" and asked == []
    assert placement.device_name(" Cpu ") == "cpu" and asked == []
    monkeypatch.setattr(os.path, "exists", lambda path: path == "/dev/nvidiactl")
    assert placement.device_name(None) == "cuda" and asked == [None]  # torch decides
    assert placement.device_name("cuda:1") == "cuda" and asked == [None, "cuda:1"]
    assert placement.dtype_name("BF16", "cpu") == "bfloat16"
    assert placement.dtype_name(None, "cuda:0") == "float16"
    with pytest.raises(ValueError, match="dtype must be one of"):
        placement.dtype_name("int4", "cpu")


def test_default_backend_on_cpu_and_the_cached_load(
        tiny_path: Path, torch_model: BGEM3, cache: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from bgem3._onnx import OnnxModule
    from transformers import AutoModel

    first = BGEM3(tiny_path, device="cpu")
    assert first.backend == "onnx" and isinstance(first.module, OnnxModule)
    assert "backend='onnx'" in repr(first)
    # fused: one attention kernel per layer, and no mask, so that ONNX Runtime tiles it
    # (flash attention: an 8192-token text does not hold 16 x 8192 x 8192 scores per layer)
    import onnx

    (entry,) = cache.iterdir()
    graph = onnx.load(str(entry / "backbone.onnx"), load_external_data=False).graph
    fused = [node for node in graph.node if node.op_type == "MultiHeadAttention"]
    assert len(fused) == first.module.config.num_hidden_layers
    assert all(len(node.input) < 5 or node.input[4] == "" for node in fused)
    assert [value.name for value in graph.input] == ["input_ids"]
    assert not first.module.masked
    # once exported, a load opens the cached graph and reads no torch weights
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the torch weights were loaded")

    with monkeypatch.context() as patch:
        patch.setattr(AutoModel, "from_pretrained", refuse)
        cached = BGEM3(tiny_path)
    assert cached.backend == "onnx" and cached.device.type == "cpu"
    assert cached.module.config.hidden_size == cached.dense_dim == torch_model.dense_dim
    texts = random_texts(16, min_words=2, max_words=40, seed=27)
    _assert_same(cached.encode_documents(texts, **HEADS),
                 torch_model.encode_documents(texts, **HEADS))
    # without ONNX Runtime (it is an extra), the default is torch, silently
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert BGEM3(tiny_path, device="cpu").backend == "torch"


def test_a_cached_load_runs_without_torch(tiny_path: Path, torch_model: BGEM3,
                                         cache: Path) -> None:
    # the first load exports the graph and saves the heads beside it; a later process
    # encodes from those alone: neither torch nor transformers is imported (over a second
    # and ~200 MB at start-up), and the outputs are the torch backend's
    BGEM3(tiny_path, device="cpu")
    (entry,) = cache.iterdir()
    assert (entry / "heads.safetensors").is_file()
    texts = random_texts(12, min_words=2, max_words=40, seed=31)
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from bgem3 import BGEM3

        model = BGEM3({str(tiny_path)!r}, device="cpu")
        out = model.encode({texts!r}, dense=True, sparse=True, colbert=True)
        heavy = sorted(name for name in ("torch", "transformers") if name in sys.modules)
        print(model.backend, heavy or "none")
        np.save(sys.argv[1], np.concatenate([out.dense.ravel()]
                + [c.ravel() for c in out.colbert] + [s.values for s in out.sparse]))
    """)
    saved = cache.parent / "out.npy"

    def run() -> str:
        done = subprocess.run([sys.executable, "-c", script, str(saved)], capture_output=True,
                              text=True, timeout=300, env={**os.environ})
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert run() == "onnx none"
    want = torch_model.encode(texts, dense=True, sparse=True, colbert=True)
    flat = np.concatenate([want.dense.ravel()] + [c.ravel() for c in want.colbert]
                          + [s.values for s in want.sparse])
    np.testing.assert_allclose(np.load(saved), flat, atol=1e-5)
    # damaged heads are read from the checkpoint again (with torch) and saved anew
    (entry / "heads.safetensors").write_bytes(b"not safetensors")
    assert run() == "onnx ['torch']"
    np.testing.assert_allclose(np.load(saved), flat, atol=1e-5)
    assert run() == "onnx none"
    # so is a damaged tokenizer (with transformers), read while the session is made
    for entry in (cache.parent / "tokenizers").iterdir():
        entry.write_text("{", encoding="utf-8")
    rebuilt = run()
    assert rebuilt.startswith("onnx [") and "'transformers'" in rebuilt
    np.testing.assert_allclose(np.load(saved), flat, atol=1e-5)
    assert run() == "onnx none"


def test_default_falls_back_to_torch_when_the_cache_cannot_hold_the_export(
        tiny_path: Path, torch_model: BGEM3, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    monkeypatch.setenv("BGEM3_CACHE_DIR", str(blocked))  # e.g. a read-only home
    with pytest.warns(UserWarning, match=rf"runs in torch, not ONNX Runtime: .*{blocked}"):
        model = BGEM3(tiny_path, device="cpu")
    assert model.backend == "torch" and "backend" not in repr(model)
    texts = random_texts(6, min_words=2, max_words=20, seed=28)
    _assert_same(model.encode(texts, **HEADS), torch_model.encode(texts, **HEADS))
    with pytest.raises(OSError, match="cannot write its export"):  # asked for: an error
        BGEM3(tiny_path, backend="onnx")


# ----------------------------------------------------------------------------- dtype="int8"
def test_int8_runs_int8_products_close_to_float32(tiny_path: Path, torch_model: BGEM3,
                                                  cache: Path) -> None:
    import onnx

    model = BGEM3(tiny_path, dtype="int8")
    assert model.backend == "onnx" and model.dtype == torch.int8
    assert "dtype='int8', backend='onnx'" in repr(model)
    entries = {"-int8" in p.name: p for p in cache.iterdir()}
    assert sorted(entries) == [False, True]  # made from the float32 graph, both cached
    graph = onnx.load(str(entries[True] / "backbone.onnx"), load_external_data=False).graph
    ops = {node.op_type for node in graph.node}
    assert "MatMulIntegerToFloat" in ops and "MatMul" not in ops  # every product in int8
    texts = random_texts(40, min_words=2, max_words=60, seed=29)
    got, want = model.encode_documents(texts, **HEADS), torch_model.encode_documents(texts, **HEADS)
    assert got.dense is not None and want.dense is not None
    assert float((got.dense * want.dense).sum(1).min()) > 0.99  # a 6 x 32 random model
    assert not np.allclose(got.dense, want.dense, atol=1e-5)  # really another computation
    assert [x.shape for x in got.colbert] == [y.shape for y in want.colbert]
    pairs = zip(got.colbert, want.colbert, strict=True)
    tokens = np.concatenate([(x * y).sum(1) for x, y in pairs])
    assert float(tokens.mean()) > 0.99 and float(tokens.min()) > 0.8
    # one scale per token: a text's vectors do not depend on the other texts of its batch
    alone = np.stack([model.encode_documents([text]).dense[0] for text in texts[:8]])
    np.testing.assert_array_equal(alone, got.dense[:8])
    stamp = (entries[True] / "backbone.onnx").stat().st_mtime_ns
    again = BGEM3(tiny_path, dtype="int8")  # cached
    assert (entries[True] / "backbone.onnx").stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again.encode_documents(texts).dense, got.dense)


def test_int8_bad_options(tiny_path: Path, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BGEM3_CACHE_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="dtype='int8' runs on the CPU in ONNX Runtime, not in "
                                         "torch"):
        BGEM3(tiny_path, dtype="int8", backend="torch")
    with pytest.raises(ValueError, match="pick one"):
        BGEM3(tiny_path, dtype="int8", compile=True)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ModuleNotFoundError, match=r"dtype='int8' needs onnxruntime"):
        BGEM3(tiny_path, dtype="int8")


def test_int8_without_int8_dot_products_uses_7_bit_weights(
        tiny_path: Path, torch_model: BGEM3, cache: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import bgem3._onnx as onnx_backend
    import onnx

    # an x86 CPU with AVX2 alone (no VNNI, no AMX) could saturate with 8-bit weights
    monkeypatch.setattr(onnx_backend, "int8_dot_products", lambda: False)
    model = BGEM3(tiny_path, dtype="int8")
    (entry,) = [p for p in cache.iterdir() if p.name.endswith("-int8-7bit")]
    graph = onnx.load(str(entry / "backbone.onnx")).graph
    assert "MatMulIntegerToFloat" in {node.op_type for node in graph.node}
    from onnx import numpy_helper

    weights = [numpy_helper.to_array(t) for t in graph.initializer
               if t.data_type == onnx.TensorProto.INT8]
    assert weights and max(int(np.abs(w.astype(np.int16)).max()) for w in weights) <= 63
    texts = random_texts(20, min_words=2, max_words=40, seed=30)
    got, want = model.encode_documents(texts), torch_model.encode_documents(texts)
    assert got.dense is not None and want.dense is not None
    assert float((got.dense * want.dense).sum(1).min()) > 0.99
