"""Loading real checkpoint layouts, and every way a checkpoint can be wrong."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from bgem3 import BGEM3, CheckpointError, CheckpointNotFoundError, HybridIndex, IndexFormatError
from bgem3.checkpoint import _BIN_PATTERNS, _HUB_PATTERNS, _SAFETENSORS_PATTERNS
from bgem3.cli import main
from bgem3.model import torch_load_refusal
from bgem3.testing import build_tiny_checkpoint

TEXTS = ["the city of paris", "dog and cat", ""]


def _copy(src: Path, dst: Path, *, drop: tuple[str, ...] = ()) -> Path:
    shutil.copytree(src, dst)
    for name in drop:
        (dst / name).unlink()
    return dst


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match="does not exist") as info:
        BGEM3(str(tmp_path / "nope"))
    assert isinstance(info.value, FileNotFoundError)


def test_file_instead_of_directory(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(CheckpointNotFoundError, match="is a file"):
        BGEM3(tmp_path / "model.bin")


def test_unknown_hub_id_offline_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match="Hugging Face cache"):
        BGEM3("no-such-org/no-such-model", cache_dir=tmp_path)


def test_invalid_hub_id(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match="valid Hugging Face hub id"):
        BGEM3("not a repo id!", cache_dir=tmp_path)


@pytest.mark.parametrize("name", [None, 3, ""])
def test_model_argument_type(name: object) -> None:
    with pytest.raises((TypeError, CheckpointNotFoundError)):
        BGEM3(name)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        (("colbert_linear.pt",), r"missing colbert_linear\.pt"),
        (("sparse_linear.pt", "colbert_linear.pt"), "dense_only=True"),
        (("tokenizer.json",), "no tokenizer"),
        (("model.safetensors", "pytorch_model.bin"), "no weights"),
        (("config.json",), r"no config\.json"),
    ],
)
def test_missing_files_are_named(tiny_path: Path, tmp_path: Path, drop: tuple[str, ...],
                                 message: str) -> None:
    path = _copy(tiny_path, tmp_path / "ckpt", drop=drop)
    with pytest.raises(CheckpointNotFoundError, match=message) as info:
        BGEM3(path)
    assert str(path) in str(info.value)


def test_unreadable_config(tiny_path: Path, tmp_path: Path) -> None:
    path = _copy(tiny_path, tmp_path / "ckpt")
    (path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json is not readable JSON"):
        BGEM3(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"weight": torch.zeros(32, 16), "bias": torch.zeros(32)}, r"expected \[any, 32\]"),
        ({"weight": torch.zeros(32, 32)}, "nn.Linear state dict"),
        ([1, 2, 3], "nn.Linear state dict"),
        (b"garbage", "cannot read head file"),
    ],
)
def test_malformed_colbert_head(tiny_path: Path, tmp_path: Path, content: object,
                                message: str) -> None:
    path = _copy(tiny_path, tmp_path / "ckpt")
    if isinstance(content, bytes):
        (path / "colbert_linear.pt").write_bytes(content)
    else:
        torch.save(content, path / "colbert_linear.pt")
    with pytest.raises(CheckpointError, match=message):
        BGEM3(path)


def test_sparse_head_must_have_one_output(tiny_path: Path, tmp_path: Path) -> None:
    path = _copy(tiny_path, tmp_path / "ckpt")
    torch.save({"weight": torch.zeros(2, 32), "bias": torch.zeros(2)}, path / "sparse_linear.pt")
    with pytest.raises(CheckpointError, match=r"expected \[1, 32\]"):
        BGEM3(path)


class _Payload:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (print, ("this must never run",))


def test_head_files_are_loaded_without_unpickling_code(tiny_path: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = _copy(tiny_path, tmp_path / "ckpt")
    torch.save({"weight": _Payload(), "bias": torch.zeros(1)}, path / "sparse_linear.pt")
    with pytest.raises(CheckpointError, match="cannot read head file"):
        BGEM3(path)
    assert "must never run" not in capsys.readouterr().out


def test_bin_only_checkpoint_equals_safetensors(tmp_path: Path) -> None:
    st = BGEM3(build_tiny_checkpoint(tmp_path / "st", weights=["safetensors"]), device="cpu")
    bin_only = build_tiny_checkpoint(tmp_path / "bin", weights=["bin"])
    if torch_load_refusal():  # transformers' reason reaches the user in our error
        with pytest.raises(CheckpointError, match=r"cannot load the backbone.*torch"):
            BGEM3(bin_only, device="cpu")
        pytest.skip("transformers refuses pytorch_model.bin on torch < 2.6")
    bn = BGEM3(bin_only, device="cpu")
    a = st.encode(TEXTS, sparse=True, colbert=True)
    b = bn.encode(TEXTS, sparse=True, colbert=True)
    np.testing.assert_array_equal(a.dense, b.dense)  # type: ignore[arg-type]
    for x, y in zip(a.colbert, b.colbert, strict=True):  # type: ignore[arg-type]
        np.testing.assert_array_equal(x, y)


def test_colbert_dim_comes_from_the_head_file(tmp_path: Path) -> None:
    model = BGEM3(build_tiny_checkpoint(tmp_path / "c16", colbert_dim=16), device="cpu")
    assert model.colbert_dim == 16 and model.dense_dim == 32
    out = model.encode(TEXTS, colbert=True)
    assert [a.shape for a in out.colbert] == [(5, 16), (4, 16), (1, 16)]  # type: ignore[union-attr]


def test_dense_only_checkpoint_without_heads(tmp_path: Path) -> None:
    path = build_tiny_checkpoint(tmp_path / "noheads", heads=False)
    with pytest.raises(CheckpointNotFoundError, match=r"colbert_linear\.pt and sparse_linear\.pt"):
        BGEM3(path)
    assert BGEM3(path, dense_only=True).encode(TEXTS).dense.shape == (3, 32)  # type: ignore[union-attr]


def test_short_position_table_sets_the_limit(tmp_path: Path) -> None:
    model = BGEM3(build_tiny_checkpoint(tmp_path / "short", max_position_embeddings=66))
    assert model.max_length == 64 and model.document_max_length == 64
    assert model.query_max_length == 64
    with pytest.raises(ValueError, match="limit of 64"):
        model.encode(["dog"], max_length=65)


def test_hub_id_resolves_from_the_hf_cache_offline(tiny_path: Path, tmp_path: Path) -> None:
    # The layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<sha>/...}
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--tiny-org--bge-m3-tiny"
    shutil.copytree(tiny_path, repo / "snapshots" / sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    model = BGEM3("tiny-org/bge-m3-tiny", cache_dir=tmp_path / "hub", device="cpu")
    assert model.name == "tiny-org/bge-m3-tiny"
    local = BGEM3(tiny_path, device="cpu")
    np.testing.assert_array_equal(model.encode(TEXTS).dense, local.encode(TEXTS).dense)  # type: ignore[arg-type]


def test_hub_patterns_skip_the_onnx_folder() -> None:
    from huggingface_hub.utils import filter_repo_objects

    # The file list of BAAI/bge-m3 on the hub
    files = [
        ".gitattributes", "1_Pooling/config.json", "README.md", "colbert_linear.pt",
        "config.json", "config_sentence_transformers.json", "imgs/bm25.jpg",
        "long.jpg", "modules.json", "onnx/Constant_7_attr__value", "onnx/config.json",
        "onnx/model.onnx", "onnx/model.onnx_data", "onnx/sentencepiece.bpe.model",
        "onnx/special_tokens_map.json", "onnx/tokenizer.json", "onnx/tokenizer_config.json",
        "pytorch_model.bin", "sentence_bert_config.json", "sentencepiece.bpe.model",
        "sparse_linear.pt", "special_tokens_map.json", "tokenizer.json",
        "tokenizer_config.json",
    ]
    patterns = [*_HUB_PATTERNS, *_SAFETENSORS_PATTERNS, *_BIN_PATTERNS]
    chosen = set(filter_repo_objects(files, allow_patterns=patterns))
    assert not any(f.startswith(("onnx/", "imgs/", "1_Pooling/")) for f in chosen)
    assert {"config.json", "pytorch_model.bin", "colbert_linear.pt", "sparse_linear.pt",
            "tokenizer.json", "sentencepiece.bpe.model"} <= chosen


# ------------------------------------------------------------ unreadable weights, fingerprints
def test_unreadable_weights_are_a_checkpoint_error(tiny_path: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for file in tiny_path.iterdir():
        if file.name != "pytorch_model.bin":
            (broken / file.name).write_bytes(file.read_bytes())
    (broken / "model.safetensors").write_bytes(b"\x10\x00not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot load the backbone"):
        BGEM3(broken, device="cpu")
    assert main(["encode", "x", "--model", str(broken)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bgem3: error: cannot load the backbone")


def test_a_change_deep_in_the_weights_changes_the_fingerprint(model: BGEM3, tmp_path: Path
                                                              ) -> None:
    index = HybridIndex(model)
    index.add(["a text", "another"], ids=["a", "b"])
    index.save(tmp_path / "idx")
    tuned = build_tiny_checkpoint(tmp_path / "tuned")
    weights = tuned / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-8:] = bytes(8)  # the last weights only: far past the first MiB
    weights.write_bytes(bytes(data))
    (tuned / "pytorch_model.bin").unlink()
    other = BGEM3(tuned, device="cpu")
    assert other.fingerprint != model.fingerprint
    with pytest.raises(IndexFormatError, match="encode the documents again"):
        HybridIndex.load(tmp_path / "idx", other)
