"""Saving and loading the embedded index: round trips, atomicity, corrupt and foreign files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from bgem3 import BGEM3, HybridIndex, IndexFormatError
from bgem3.testing import build_tiny_checkpoint, random_texts

DOCS = random_texts(30, max_words=30, seed=12)


@pytest.fixture
def index(model: BGEM3) -> HybridIndex:
    idx = HybridIndex(model)
    idx.add(DOCS, ids=[f"d{i}" for i in range(len(DOCS))],
            metadata=[{"i": i, "tag": "even" if i % 2 == 0 else "odd"} for i in range(len(DOCS))])
    idx.delete(["d3"])
    idx.add(["replaced text"], ids=["d4"])
    return idx


def _results(idx: HybridIndex) -> list[list[tuple[str, float]]]:
    return [[(h.id, round(h.score, 5)) for h in idx.search(q, k=5, filter={"tag": "even"})]
            for q in DOCS[:4]]


def test_round_trip(index: HybridIndex, model: BGEM3, tmp_path: Path) -> None:
    index.save(tmp_path / "idx")
    loaded = HybridIndex.load(tmp_path / "idx", model)
    assert len(loaded) == len(index) == len(DOCS) - 1
    assert _results(loaded) == _results(index)
    assert loaded.get(["d4"])[0].text == "replaced text"
    assert loaded.get(["d0"])[0].metadata == {"i": 0, "tag": "even"}
    assert "d3" not in loaded
    files = {p.suffix for p in (tmp_path / "idx").rglob("*") if p.is_file()}
    assert files <= {".npy", ".json", ""}  # arrays, JSON and the CURRENT pointer: no pickle
    for npy in (tmp_path / "idx").rglob("*.npy"):
        np.load(npy, allow_pickle=False)


def test_saving_again_replaces_the_previous_version(index: HybridIndex, model: BGEM3,
                                                    tmp_path: Path) -> None:
    index.save(tmp_path / "idx")
    index.add(["a brand new document"], ids=["new"])
    index.save(tmp_path / "idx")
    assert "new" in HybridIndex.load(tmp_path / "idx", model)
    versions = [p for p in (tmp_path / "idx").iterdir() if p.is_dir()]
    assert len(versions) == 1  # the superseded version was removed


@pytest.mark.parametrize("fail_at", ["numpy", "pointer"])
def test_a_failed_save_leaves_the_previous_index_loadable(
        index: HybridIndex, model: BGEM3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        fail_at: str) -> None:
    index.save(tmp_path / "idx")
    before = _results(index)
    index.add(["not saved"], ids=["lost"])

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    import bgem3.index._persist as persist
    if fail_at == "numpy":
        monkeypatch.setattr(persist.np, "save", boom)
    else:
        monkeypatch.setattr(persist.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        index.save(tmp_path / "idx")
    monkeypatch.undo()
    loaded = HybridIndex.load(tmp_path / "idx", model)
    assert "lost" not in loaded and _results(loaded) == before
    assert len([p for p in (tmp_path / "idx").iterdir() if p.is_dir()]) == 1


def test_refuses_to_write_into_a_foreign_directory(index: HybridIndex, tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a bgem3 index"):
        index.save(tmp_path / "mine")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError):
        index.save(tmp_path / "file")


def test_metadata_must_be_json(model: BGEM3, tmp_path: Path) -> None:
    idx = HybridIndex(model)
    with pytest.raises(TypeError, match=r"metadata\[0\]\['when'\] \(document 'x'\).*JSON"):
        idx.add(["x"], ids=["x"], metadata=[{"when": object()}])
    assert len(idx) == 0  # refused when added: what an index holds can always be saved
    idx.save(tmp_path / "idx")
    assert len(HybridIndex.load(tmp_path / "idx", model)) == 0


def _current(root: Path) -> Path:
    return root / (root / "CURRENT").read_text()


@pytest.mark.parametrize("damage", ["truncate_npy", "garbage_manifest", "foreign_format",
                                    "future_version", "shape_mismatch", "missing_documents",
                                    "no_pointer"])
def test_corrupt_or_foreign_files_raise_clear_errors(index: HybridIndex, model: BGEM3,
                                                      tmp_path: Path, damage: str) -> None:
    root = tmp_path / "idx"
    index.save(root)
    version = _current(root)
    manifest = json.loads((version / "manifest.json").read_text())
    if damage == "truncate_npy":
        data = (version / "dense.npy").read_bytes()
        (version / "dense.npy").write_bytes(data[: len(data) // 2])
    elif damage == "garbage_manifest":
        (version / "manifest.json").write_text("{{{")
    elif damage == "foreign_format":
        (version / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    elif damage == "future_version":
        (version / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    elif damage == "shape_mismatch":
        np.save(version / "dense.npy", np.zeros((3, 3), np.float32))
    elif damage == "missing_documents":
        (version / "documents.json").unlink()
    elif damage == "no_pointer":
        (root / "CURRENT").unlink()
    with pytest.raises(IndexFormatError):
        HybridIndex.load(root, model)


def test_load_refuses_another_model(index: HybridIndex, tmp_path: Path) -> None:
    index.save(tmp_path / "idx")
    other = BGEM3(build_tiny_checkpoint(tmp_path / "other", seed=1), device="cpu")
    with pytest.raises(IndexFormatError, match="built with model"):
        HybridIndex.load(tmp_path / "idx", other)
    with pytest.raises(FileNotFoundError):
        HybridIndex.load(tmp_path / "nothing-here", other)


def test_is_saved_index_tells_an_index_from_anything_else(index: HybridIndex,
                                                          tmp_path: Path) -> None:
    from bgem3.index import is_saved_index, read_manifest

    assert not is_saved_index(tmp_path / "missing")
    assert not is_saved_index(tmp_path)  # an empty directory
    (tmp_path / "file").write_text("x")
    assert not is_saved_index(tmp_path / "file")
    index.save(tmp_path / "idx")
    assert is_saved_index(tmp_path / "idx")
    assert read_manifest(tmp_path / "idx")["count"] == len(index)
