"""Saved indexes under fault: tampered, foreign or corrupt files, concurrent and killed saves,
indexes saved by older versions."""


from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from bgem3 import BGEM3, HybridIndex, IndexFormatError, SparseVector
from bgem3.index import embedded as embedded_module

from tests.core.index_data import DOCS, IDS, numbered_index


@pytest.fixture
def index(model: BGEM3) -> HybridIndex:
    return numbered_index(model)


def _version(root: Path) -> Path:
    return root / (root / "CURRENT").read_text().strip()


def _rewrite(root: Path, name: str, array: np.ndarray) -> None:
    np.save(_version(root) / f"{name}.npy", array, allow_pickle=False)


# ------------------------------------------------------------ 1. inconsistent arrays
@pytest.mark.parametrize(("name", "tamper", "message"), [
    ("sparse_indices", lambda a: np.where(np.arange(a.size) == 0, 10**6, a).astype(a.dtype),
     "token ids outside"),
    ("sparse_indices", lambda a: np.where(np.arange(a.size) == 1, -5, a).astype(a.dtype),
     "token ids outside"),
    ("sparse_indptr", lambda a: a[::-1].copy(), "sparse offsets"),
    ("sparse_indptr", lambda a: np.where(np.arange(a.size) == a.size - 1, a[-1] + 7, a),
     "sparse offsets"),
    ("colbert_offsets", lambda a: np.where(np.arange(a.size) == 3, a[5], a), "ColBERT offsets"),
    ("dense", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 7, np.nan, a)
     .astype(a.dtype), "NaN or infinite"),
    ("colbert", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 3, np.inf, a)
     .astype(a.dtype), "NaN or infinite"),
    ("sparse_values", lambda a: np.where(np.arange(a.size) == 0, np.nan, a).astype(a.dtype),
     "NaN or infinite"),
])
def test_load_refuses_inconsistent_arrays(index: HybridIndex, model: BGEM3, tmp_path: Path,
                                          name: str, tamper, message: str) -> None:  # type: ignore[no-untyped-def]
    index.save(tmp_path / "idx")
    original = np.load(_version(tmp_path / "idx") / f"{name}.npy")
    _rewrite(tmp_path / "idx", name, tamper(original))
    with pytest.raises(IndexFormatError, match=message):
        HybridIndex.load(tmp_path / "idx", model)


# ------------------------------------------------------------ 2. tampered files
def _edit_manifest(root: Path, change) -> None:  # type: ignore[no-untyped-def]
    path = _version(root) / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("change", [
    lambda m: m.pop("count"),
    lambda m: m.update(arrays=[1, 2]),
    lambda m: m.update(dense_dim="wide"),
    lambda m: m.update(store_colbert="yes"),
    lambda m: m["arrays"].pop("colbert"),
    lambda m: m["arrays"]["dense"].update(dtype="object"),
    lambda m: m.update(colbert_dim=-3),
])
def test_tampered_manifest_is_an_index_format_error(index: HybridIndex, model: BGEM3,
                                                    tmp_path: Path, change) -> None:  # type: ignore[no-untyped-def]
    index.save(tmp_path / "idx")
    _edit_manifest(tmp_path / "idx", change)
    with pytest.raises(IndexFormatError):
        HybridIndex.load(tmp_path / "idx", model)


def _write_documents(root: Path, documents: object, *, fix_checksum: bool) -> None:
    raw = json.dumps(documents).encode()
    (_version(root) / "documents.json").write_bytes(raw)
    if fix_checksum:  # as a buggy writer would: the checksum matches, the content is wrong
        _edit_manifest(root, lambda m: m.update(documents_sha256=hashlib.sha256(raw)
                                                .hexdigest()))


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["ids"].__setitem__(1, d["ids"][0]), "not unique"),
    (lambda d: d["ids"].__setitem__(2, 17), "non-empty strings"),
    (lambda d: d["texts"].__setitem__(0, {"x": 1}), "texts must be strings"),
    (lambda d: d["metadata"].__setitem__(0, [1]), "metadata entries must be objects"),
    (lambda d: d.pop("ids"), "corrupt"),
])
def test_wrong_documents_are_refused(index: HybridIndex, model: BGEM3, tmp_path: Path,
                                     change, message: str) -> None:  # type: ignore[no-untyped-def]
    index.save(tmp_path / "idx")
    documents = json.loads((_version(tmp_path / "idx") / "documents.json").read_text())
    change(documents)
    _write_documents(tmp_path / "idx", documents, fix_checksum=True)
    with pytest.raises(IndexFormatError, match=message):
        HybridIndex.load(tmp_path / "idx", model)


def test_documents_from_another_index_and_bad_encodings(index: HybridIndex, model: BGEM3,
                                                        tmp_path: Path) -> None:
    index.save(tmp_path / "a")
    other = HybridIndex(model)
    other.add(DOCS[::-1], ids=IDS[::-1])
    other.save(tmp_path / "b")
    (_version(tmp_path / "a") / "documents.json").write_bytes(
        (_version(tmp_path / "b") / "documents.json").read_bytes())
    with pytest.raises(IndexFormatError, match="does not belong to this index"):
        HybridIndex.load(tmp_path / "a", model)
    (_version(tmp_path / "b") / "documents.json").write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(IndexFormatError):
        HybridIndex.load(tmp_path / "b", model)
    (_version(tmp_path / "b") / "manifest.json").write_bytes(b"\xff")
    with pytest.raises(IndexFormatError, match="unreadable manifest"):
        HybridIndex.load(tmp_path / "b", model)


# ------------------------------------------------------------ 5, 9. concurrent and killed saves
def _versions(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir())


def test_concurrent_saves_from_threads_and_a_reader(index: HybridIndex, model: BGEM3,
                                                   tmp_path: Path) -> None:
    root = tmp_path / "idx"
    index.save(root)
    errors: list[BaseException] = []
    stop = threading.Event()

    def save() -> None:
        try:
            for _ in range(8):
                index.save(root)
        except BaseException as exc:
            errors.append(exc)

    def load() -> None:
        loads = 0
        while not stop.is_set() or loads == 0:
            try:
                assert len(HybridIndex.load(root, model)) == len(DOCS)
            except BaseException as exc:
                errors.append(exc)
            loads += 1

    reader = threading.Thread(target=load)
    reader.start()
    writers = [threading.Thread(target=save) for _ in range(3)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    reader.join()
    assert errors == []
    assert len(_versions(root)) == 1


def test_a_pointer_to_a_missing_version_and_orphans_are_cleaned(index: HybridIndex,
                                                                 model: BGEM3,
                                                                 tmp_path: Path) -> None:
    root = tmp_path / "idx"
    index.save(root)
    orphan = root / ("v-" + "ab" * 16)
    orphan.mkdir()
    for file in _version(root).iterdir():
        (orphan / file.name).write_bytes(file.read_bytes())
    (root / ".CURRENT.leftover").write_text("v-x")
    (root / "CURRENT").write_text("v-" + "cd" * 16)  # names a version that does not exist
    index.save(root)  # commits, and does not raise afterwards
    assert len(HybridIndex.load(root, model)) == len(DOCS)
    assert _versions(root) == [_version(root).name]
    assert not (root / ".CURRENT.leftover").exists()


SAVER = """
import sys, time
from bgem3 import BGEM3, HybridIndex
from bgem3.testing import random_texts
model = BGEM3(sys.argv[1], device="cpu")
index = HybridIndex(model)
index.add(random_texts(400, max_words=40, seed=3), ids=[str(i) for i in range(400)])
index.save(sys.argv[2])  # one committed version before any kill, however slow the machine
print("ready", flush=True)
while True:
    index.save(sys.argv[2])
"""


def test_killed_saves_lose_nothing_and_leave_no_orphans(index: HybridIndex, model: BGEM3,
                                                         tiny_path: Path, tmp_path: Path) -> None:
    root = tmp_path / "idx"
    rng = np.random.default_rng(0)
    for _ in range(5):
        process = subprocess.Popen([sys.executable, "-c", SAVER, str(tiny_path), str(root)],
                                   stdout=subprocess.PIPE, text=True,
                                   env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.05, 0.6)))
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert len(HybridIndex.load(root, model)) == 400  # the last committed version
    index.save(root)  # the next save clears what the killed ones left
    assert _versions(root) == [_version(root).name]
    assert not [p for p in root.iterdir() if p.name.startswith(".CURRENT.")]
    assert len(HybridIndex.load(root, model)) == len(DOCS)


def test_state_round_trip(index: HybridIndex, model: BGEM3) -> None:
    index.delete(["d2"])
    state = index.state()
    again = HybridIndex.from_state(model, state)
    assert again.state().ids == state.ids
    for q in DOCS[:3]:
        assert ([(h.id, h.score) for h in again.search(q, k=4)]
                == [(h.id, h.score) for h in index.search(q, k=4)])
    bad = embedded_module.IndexState(**{**state.__dict__, "ids": state.ids[:-1]})
    with pytest.raises(ValueError, match="ids but"):
        HybridIndex.from_state(model, bad)
    assert isinstance(state.metadata[0], dict) and isinstance(SparseVector, type)


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
