"""Issue 14, the index: tampered files, concurrent and killed saves, half-applied changes,
filter semantics on both backends, compaction, natural inputs that were cryptic."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from bgem3 import BGEM3, EncodeOutput, HybridIndex, IndexFormatError, SparseVector
from bgem3.index import QdrantHybridIndex
from bgem3.index import embedded as embedded_module
from bgem3.testing import build_tiny_checkpoint, random_texts
from qdrant_client import QdrantClient

DOCS = list(dict.fromkeys(random_texts(40, min_words=3, max_words=30, seed=41)))[:30]
IDS = [f"d{i}" for i in range(len(DOCS))]


@pytest.fixture
def index(model: BGEM3) -> HybridIndex:
    idx = HybridIndex(model)
    idx.add(DOCS, ids=IDS, metadata=[{"i": i} for i in range(len(DOCS))])
    return idx


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


# ------------------------------------------------------------ 6. pickling
def test_pickle_and_deepcopy_say_what_to_use(index: HybridIndex) -> None:
    for attempt in (pickle.dumps, copy.deepcopy, copy.copy):
        with pytest.raises(TypeError, match=r"index.save\(path\).*HybridIndex.load"):
            attempt(index)


# ------------------------------------------------------------ 7, 8. no half-applied changes
def test_deleting_an_id_twice_in_one_call(index: HybridIndex, model: BGEM3,
                                          tmp_path: Path) -> None:
    index.delete(["d0", "d0"])
    assert "d0" not in index and len(index) == len(DOCS) - 1
    assert all(h.id != "d0" for h in index.search(DOCS[0], k=len(DOCS)))
    index.save(tmp_path / "idx")
    assert "d0" not in HybridIndex.load(tmp_path / "idx", model)
    with pytest.raises(KeyError, match="nothing deleted"):
        index.delete(["d1", "nope"])
    assert "d1" in index


def test_odd_metadata_values_never_break_the_index(index: HybridIndex) -> None:
    index.add(["odd metadata"], ids=["odd"], metadata=[{"x": (1, [2]), "y": {"a": 1},
                                                        "z": 0.5}])
    assert [h.id for h in index.search("odd metadata", k=1, filter={"x": 1})] == ["odd"]
    assert index.search(DOCS[0], k=3)  # still searchable
    with pytest.raises(ValueError, match="cannot be matched"):
        index.search("odd", filter={"z": 0.5})


# ------------------------------------------------------------ 16. one filter semantics
META = [{"flag": True}, {"flag": 1}, {"flag": 1.0}, {"tags": ["a", "b"]}, {"tags": "b"},
        {"n": "3"}, {"n": 3}]


@pytest.fixture(scope="module")
def both(model: BGEM3) -> tuple[HybridIndex, QdrantHybridIndex]:
    texts = [f"document number {i}" for i in range(len(META))]
    ids = [f"m{i}" for i in range(len(META))]
    emb = model.encode_documents(texts, dense=True, sparse=True, colbert=True)
    embedded, qdrant = HybridIndex(model), QdrantHybridIndex(model, QdrantClient(":memory:"))
    embedded.add(texts, ids=ids, metadata=META, embeddings=emb)
    qdrant.add(texts, ids=ids, metadata=META, embeddings=emb)
    return embedded, qdrant


@pytest.mark.parametrize(("where", "expected"), [
    ({"flag": True}, {"m0"}),
    ({"flag": 1}, {"m1"}),
    ({"flag": [True, 1]}, {"m0", "m1"}),
    ({"tags": "a"}, {"m3"}),
    ({"tags": "b"}, {"m3", "m4"}),
    ({"n": "3"}, {"m5"}),
    ({"n": 3}, {"m6"}),
    ({"tags": []}, set()),
])
def test_filters_mean_the_same_on_both_backends(both, where: dict, expected: set) -> None:  # type: ignore[no-untyped-def]
    for backend in both:
        found = {h.id for h in backend.search("document", k=len(META), filter=where)}
        assert found == expected, (type(backend).__name__, where)


def test_unmatchable_filters_are_refused_on_both_backends(both) -> None:  # type: ignore[no-untyped-def]
    for backend in both:
        with pytest.raises(ValueError, match="cannot be matched"):
            backend.search("document", filter={"flag": 1.0})
        with pytest.raises(TypeError, match="filter must be a dict"):
            backend.search("document", filter=["flag", True])  # type: ignore[arg-type]


# ------------------------------------------------------------ 18. fp16 storage
def test_fp16_dense_storage_refuses_vectors_beyond_its_range(model: BGEM3) -> None:
    emb = model.encode_documents(DOCS[:2], dense=True, sparse=True, colbert=True)
    big = EncodeOutput(dense=emb.dense * 1e6, sparse=emb.sparse, colbert=emb.colbert)
    index = HybridIndex(model, dense_dtype="float16")
    with pytest.raises(ValueError, match="float16 range"):
        index.add(DOCS[:2], embeddings=big)
    assert len(index) == 0


# ------------------------------------------------------------ 20. compaction
def test_upserts_and_deletes_compact(model: BGEM3, monkeypatch: pytest.MonkeyPatch,
                                     tmp_path: Path) -> None:
    monkeypatch.setattr(embedded_module, "COMPACT_MIN_DEAD", 20)
    index = HybridIndex(model)
    emb = model.encode_documents(DOCS, dense=True, sparse=True, colbert=True)
    for _ in range(6):
        index.add(DOCS, ids=IDS, embeddings=emb)
    assert len(index) == len(DOCS)
    assert len(index._ids) <= 2 * len(DOCS)  # storage bounded, not 6 x
    before = [(h.id, round(h.score, 5)) for h in index.search(DOCS[3], k=5)]
    index.delete(IDS[:5])
    freed = index.compact()
    assert freed == len(index._ids) - len(index) or freed > 0
    assert len(index._ids) == len(index) == len(DOCS) - 5
    after = [(h.id, round(h.score, 5)) for h in index.search(DOCS[3], k=5)]
    assert [x for x in before if x[0] not in IDS[:5]] == [x for x in after][: len(
        [x for x in before if x[0] not in IDS[:5]])]
    index.save(tmp_path / "idx")
    assert len(HybridIndex.load(tmp_path / "idx", model)) == len(DOCS) - 5


# ------------------------------------------------------------ 25, 28. natural inputs
def test_natural_mistakes_get_clear_errors(model: BGEM3, index: HybridIndex,
                                           tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"HybridIndex.load\(path, model\)"):
        HybridIndex(str(tmp_path))  # type: ignore[arg-type]
    dense_only = BGEM3(build_tiny_checkpoint(tmp_path / "d", heads=False), device="cpu",
                       dense_only=True)
    with pytest.raises(ValueError, match="dense_only"):
        HybridIndex(dense_only, store_colbert=False)
    queries = model.encode_queries(["a query"], dense=True, sparse=True, colbert=True)
    wrong = EncodeOutput(dense=np.zeros((1, 7), np.float32), sparse=queries.sparse,
                         colbert=queries.colbert)
    with pytest.raises(ValueError, match=r"shape \(m, 32\)"):
        index.search_encoded(wrong)
    short = EncodeOutput(dense=np.concatenate([queries.dense] * 2), sparse=queries.sparse,
                         colbert=queries.colbert)
    with pytest.raises(ValueError, match="2 query SparseVectors"):
        index.search_encoded(short)
    emb = model.encode_documents(["x y"], dense=True, sparse=True, colbert=True)
    flag_style = EncodeOutput(dense=emb.dense, sparse=[{"5": 0.3}], colbert=emb.colbert)  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"SparseVector\.from_dict"):
        index.add(["x y"], ids=["fe"], embeddings=flag_style)


def test_add_takes_numpy_arrays_and_generators(model: BGEM3) -> None:
    index = HybridIndex(model)
    index.add(np.array(DOCS[:3]), ids=np.array(IDS[:3]))
    index.add((t for t in DOCS[3:6]), ids=(i for i in IDS[3:6]))
    assert len(index) == 6 and index.get(["d4"])[0].text == DOCS[4]
    with pytest.raises(TypeError, match="list of strings"):
        index.add("just one text")  # type: ignore[arg-type]


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


# ------------------------------------------------------------ issue 16: the HNSW graph
def test_hnsw_dense_candidates_persist_filter_and_follow_deletes(model: BGEM3,
                                                                 tmp_path: Path) -> None:
    docs = list(dict.fromkeys(random_texts(500, min_words=5, max_words=30, seed=9)))[:300]
    ids = [f"h{i}" for i in range(len(docs))]
    meta = [{"even": i % 2 == 0} for i in range(len(docs))]
    emb = model.encode_documents(docs, dense=True, sparse=True, colbert=True)
    exact = HybridIndex(model, dense_search="exact")
    exact.add(docs, ids=ids, metadata=meta, embeddings=emb)
    graph = HybridIndex(model, dense_search="hnsw", ef_search=256)
    graph.add(docs, ids=ids, metadata=meta, embeddings=emb)
    queries = random_texts(20, min_words=3, max_words=10, seed=10)
    for q in queries:  # a small index: the graph finds the exact neighbours
        assert ([h.id for h in graph.search(q, k=10, mode="dense", rerank=False)]
                == [h.id for h in exact.search(q, k=10, mode="dense", rerank=False)])
    assert all(h.metadata["even"] for h in graph.search(queries[0], k=10,
                                                        filter={"even": True}))
    graph.delete(["h0"])
    assert "h0" not in {h.id for h in graph.search(docs[0], k=10, mode="dense",
                                                   rerank=False)}
    graph.save(tmp_path / "idx")  # compacts first: the saved graph numbers live rows
    loaded = HybridIndex.load(tmp_path / "idx", model)
    assert loaded.dense_search == "hnsw" and loaded._graph is not None
    assert len(loaded._graph) == len(loaded) == len(docs) - 1
    assert ([h.id for h in loaded.search(queries[1], k=5)]
            == [h.id for h in graph.search(queries[1], k=5)])


def test_auto_switches_to_the_graph_past_the_threshold(model: BGEM3,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded_module, "HNSW_MIN_DOCUMENTS", 25)
    index = HybridIndex(model)
    index.add(DOCS[:20], ids=IDS[:20])
    assert index._graph is None
    index.add(DOCS[20:], ids=IDS[20:])
    assert index._graph is not None and len(index._graph) == len(DOCS)
    with pytest.raises(ValueError, match="dense_search must be"):
        HybridIndex(model, dense_search="ivf")
