"""Issue 14 beyond the index: devices, weights, text input, scoring, CLI contracts."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from bgem3 import (
    BGEM3,
    CheckpointError,
    HybridIndex,
    IndexFormatError,
    SparseVector,
    TruncationWarning,
    colbert_scores,
    fuse_scores,
)
from bgem3.batching import tokenize
from bgem3.cli import main
from bgem3.testing import build_tiny_checkpoint, random_texts


# ------------------------------------------------------------ 3. devices and weights
@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_unavailable_devices_are_value_errors(tiny_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="CUDA is not available"):
        BGEM3(tiny_path, device="cuda")
    if not torch.backends.mps.is_available():
        with pytest.raises(ValueError, match="MPS is not available"):
            BGEM3(tiny_path, device="mps")
    with pytest.raises(ValueError, match="device must be"):
        BGEM3(tiny_path, device="tpu")
    assert BGEM3(tiny_path, device="CPU").device.type == "cpu"  # case does not matter
    capsys.readouterr()
    assert main(["encode", "x", "--model", str(tiny_path), "--device", "cuda"]) == 1
    assert capsys.readouterr().err.startswith("bgem3: error: device 'cuda'")


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


def test_tampered_index_is_one_line_in_the_cli(model: BGEM3, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    index = HybridIndex(model)
    index.add(random_texts(20, min_words=10, seed=4), ids=[str(i) for i in range(20)])
    index.save(tmp_path / "idx")
    version = (tmp_path / "idx" / (tmp_path / "idx" / "CURRENT").read_text())
    assert np.load(version / "sparse_indices.npy").size > 0
    np.save(version / "sparse_indices.npy",
            np.full_like(np.load(version / "sparse_indices.npy"), 10**6), allow_pickle=False)
    assert main(["search", str(tmp_path / "idx"), "text", "--model", str(model.path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "token ids outside" in err[0]


# ------------------------------------------------------------ 4. unpaired surrogates
def test_unpaired_surrogates_are_replaced_everywhere(model: BGEM3, tiny_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.warns(UnicodeWarning, match="unpaired surrogates.*item 1"):
        out = model.encode(["fine text", "bad \ud800 text"], sparse=True)
    expected = model.encode(["fine text", "bad \ufffd text"], sparse=True)
    np.testing.assert_array_equal(out.dense, expected.dense)
    assert out.sparse == expected.sparse
    assert main(["encode", "argv \udcff bytes", "--model", str(tiny_path)]) == 0
    assert json.loads(capsys.readouterr().out)["text"].startswith("argv")


# ------------------------------------------------------------ 11, 12, 22. the index command
def test_index_refuses_an_existing_index_unless_told(tiny_path: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"id": "a", "text": "first text", "source": "my-own-source"}\n'
                    '{"id": null, "text": "second text"}\n')
    out = tmp_path / "idx"
    assert main(["index", str(docs), "--out", str(out), "--model", str(tiny_path)]) == 0
    capsys.readouterr()
    assert main(["index", str(docs), "--out", str(out), "--model", str(tiny_path)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    more = tmp_path / "more.jsonl"
    more.write_text('{"id": "c", "text": "third text"}\n')
    assert main(["index", str(more), "--out", str(out), "--append"]) == 0
    assert "added 1 documents" in capsys.readouterr().out
    index = HybridIndex.load(out, BGEM3(tiny_path, device="cpu"))
    assert sorted(h.id for h in index.get(["a", "c", "docs.jsonl:2"])) == [
        "a", "c", "docs.jsonl:2"]  # a null id is generated, not "None"
    assert index.get(["a"])[0].metadata["source"] == "my-own-source"
    assert index.get(["c"])[0].metadata["source"] == str(more)
    assert main(["index", str(more), "--out", str(out), "--overwrite", "--model",
                 str(tiny_path)]) == 0
    assert len(HybridIndex.load(out, BGEM3(tiny_path, device="cpu"))) == 1


def test_a_relative_model_path_is_recorded_absolute(tiny_path: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    docs = tmp_path / "docs.txt"
    docs.write_text("a paragraph about paris\n\nanother about berlin")
    monkeypatch.chdir(tiny_path.parent)
    assert main(["index", str(docs), "--out", str(tmp_path / "idx"), "--model",
                 f"./{tiny_path.name}"]) == 0
    monkeypatch.chdir(tmp_path)
    assert main(["search", "idx", "paris", "-k", "1"]) == 0


# ------------------------------------------------------------ 15, 26. weights
def test_non_finite_weights_are_refused_everywhere(model: BGEM3, tiny_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ((math.nan, 0.2, 0.4), (0.4, math.inf, 0.4), (0.4, 0.2, -1.0)):
        with pytest.raises(ValueError, match="finite non-negative"):
            fuse_scores(1.0, 1.0, 1.0, bad)
        with pytest.raises(ValueError, match="finite"):
            model.compute_score([("q", "p")], weights=bad)
    index = HybridIndex(model)
    index.add(["a text"], ids=["a"])
    with pytest.raises(ValueError, match="finite"):
        index.search("text", weights=(math.nan, 0.2, 0.4))
    assert main(["score", "q", "p", "--weights", "nan", "0.2", "0.4", "--model",
                 str(tiny_path)]) == 1
    assert "finite" in capsys.readouterr().err


def test_compute_score_takes_colbert_only_weights(model: BGEM3) -> None:
    pairs = [("what is paris", "paris is a city"), ("a dog", "the cat")]
    with pytest.warns(UserWarning, match="sparse\\+dense mode is undefined"):
        scores = model.compute_score(pairs, weights=(0, 0, 1))
    assert scores["colbert+sparse+dense"] == pytest.approx(scores["colbert"])
    assert all(math.isnan(x) for x in scores["sparse+dense"])


# ------------------------------------------------------------ 17. valid JSON
def test_search_json_is_valid_json_with_nan_metadata(model: BGEM3, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    index = HybridIndex(model)
    index.add(["paris is a city"], ids=["p"], metadata=[{"population": math.nan}])
    index.save(tmp_path / "idx")
    assert main(["search", str(tmp_path / "idx"), "paris", "--json"]) == 0

    def refuse(token: str) -> None:
        raise AssertionError(f"not JSON: {token}")

    row = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert row["metadata"]["population"] is None


# ------------------------------------------------------------ 19. SparseVector invariants
def test_sparse_vector_invariants() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        SparseVector(np.array([3, 3]), np.array([0.5, 0.5], np.float32))
    with pytest.raises(ValueError, match="strictly increasing"):
        SparseVector(np.array([5, 3]), np.array([0.5, 0.5], np.float32))
    with pytest.raises(ValueError, match="same token id appears twice"):
        SparseVector.from_dict({"3": 0.5, 3: 0.25})
    with pytest.raises(TypeError, match="token ids must be ints"):
        SparseVector.from_dict({1.5: 0.5})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="integer token ids"):
        SparseVector(np.array([1.5]), np.array([0.5], np.float32))
    with pytest.raises(ValueError, match="finite"):
        SparseVector.from_dict({1: math.nan})
    a, b = SparseVector.from_dict({7: 0.5, 3: 0.25}), SparseVector.from_dict({"3": 0.25, 7: 0.5})
    assert a == b and a != SparseVector.from_dict({3: 0.25})


# ------------------------------------------------------------ 21. long texts
def test_a_huge_text_is_tokenized_only_as_far_as_needed(model: BGEM3) -> None:
    seen: list[int] = []

    class Recording:
        def __init__(self, backend: object) -> None:
            self.backend = backend

        def encode_batch(self, texts: list[str], add_special_tokens: bool = False):  # type: ignore[no-untyped-def]
            seen.extend(len(t) for t in texts)
            return self.backend.encode_batch(texts, add_special_tokens=add_special_tokens)  # type: ignore[attr-defined]

    huge = " ".join(random_texts(20000, min_words=20, max_words=40, seed=2))  # ~4 MB
    bounded = tokenize(Recording(model._backend), [huge, "short"], model._spec, 512)
    assert max(seen) < 20 * 512 * 2
    full = model._backend.encode_batch([huge], add_special_tokens=False)[0].ids[:510]
    assert bounded.ids[0][1:-1].tolist() == full and bounded.n_truncated == 1
    spaces = "word " + " " * 100000 + "end " * 600  # long whitespace: the cut is undone
    assert tokenize(model._backend, [spaces], model._spec, 512).ids[0][1:-1].tolist() == \
        model._backend.encode_batch([spaces], add_special_tokens=False)[0].ids[:510]


# ------------------------------------------------------------ 25. natural mistakes
def test_colbert_scores_explains_shapes() -> None:
    with pytest.raises(ValueError, match="one text's ColBERT vectors"):
        colbert_scores(np.zeros((2, 3, 4)), [np.zeros((2, 4))])
    with pytest.raises(ValueError, match="wrap it in a list"):
        colbert_scores(np.zeros((3, 4)), np.zeros((2, 4)))  # type: ignore[arg-type]


# ------------------------------------------------------------ 27, 28. warnings and small ones
def test_truncation_warns_on_every_call(model: BGEM3) -> None:
    long_text = " ".join(["paris"] * 40)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(3):
            model.encode([long_text], max_length=8)
    assert [w.category for w in caught] == [TruncationWarning] * 3


@pytest.mark.filterwarnings("default::bgem3.errors.TruncationWarning")
def test_cli_warnings_are_one_line(tiny_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    long_query = " ".join(["paris"] * 600)
    assert main(["encode", long_query, "--queries", "--model", str(tiny_path)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["bgem3: warning: 1 of 1 texts were longer than max_length=512 tokens and "
                   "were truncated"]


def test_broken_pipe_is_quiet(tiny_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        f"{sys.executable} -m bgem3 encode {' '.join(['word'] * 400)} --model {tiny_path}"
        " | head -c 20", shell=True, capture_output=True, text=True, env=env, check=True)
    assert len(done.stdout) == 20 and "Broken pipe" not in done.stderr
    assert "Traceback" not in done.stderr


def test_last_stats_belong_to_each_thread(model: BGEM3) -> None:
    seen: dict[int, int] = {}

    def work(n: int) -> None:
        for _ in range(5):
            model.encode(random_texts(n, seed=n))
            seen[n] = model.last_stats.texts

    threads = [threading.Thread(target=work, args=(n,)) for n in (3, 11)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {3: 3, 11: 11}


def test_lax_inputs_are_refused(model: BGEM3) -> None:
    with pytest.raises(TypeError, match="dense must be True or False"):
        model.encode(["x"], dense="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="order is not the order"):
        model.encode({"a text": 1})  # type: ignore[arg-type]


# ------------------------------------------------------------ 14. fingerprints
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


def test_indexes_saved_with_the_old_fingerprint_still_load(model: BGEM3, tmp_path: Path) -> None:
    from bgem3.checkpoint import legacy_fingerprint

    index = HybridIndex(model)
    index.add(["a text"], ids=["a"])
    index.save(tmp_path / "idx")
    manifest_path = (tmp_path / "idx" / (tmp_path / "idx" / "CURRENT").read_text()
                     / "manifest.json")
    manifest = json.loads(manifest_path.read_text())
    del manifest["fingerprint_version"]
    del manifest["documents_sha256"]
    manifest["model_fingerprint"] = legacy_fingerprint(model.path)
    manifest_path.write_text(json.dumps(manifest))
    assert len(HybridIndex.load(tmp_path / "idx", model)) == 1
