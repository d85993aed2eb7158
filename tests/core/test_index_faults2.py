"""Stores that never accept what they cannot keep (issue 25): what ``add`` stores can always
be saved, first saves racing each other, HNSW graphs bound to their vectors, all-or-nothing
Parquet loads with exact counts, float16 storage of vectors of any norm, bools as ints."""


from __future__ import annotations

import datetime
import json
import os
import shutil
import threading
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bgem3 import BGEM3, EncodeOutput, HybridIndex
from bgem3._inputs import non_negative_int, positive_int
from bgem3.arrow import to_arrow
from bgem3.index import QdrantHybridIndex, SearchOptions
from bgem3.testing import random_texts
from qdrant_client import QdrantClient

from tests.core.index_data import DOCS, IDS

BACKENDS = ["embedded", "qdrant"]


def _index(model: BGEM3, backend: str) -> HybridIndex | QdrantHybridIndex:
    if backend == "embedded":
        return HybridIndex(model)
    return QdrantHybridIndex(model, QdrantClient(":memory:"))


def _contents(index: HybridIndex | QdrantHybridIndex, ids: list[str]
              ) -> list[tuple[str, str | None, dict[str, object]]]:
    return [(h.id, h.text, h.metadata) for h in index.get(ids)]


# ------------------------------------------------------------ add stores only what save keeps
@pytest.mark.parametrize("backend", BACKENDS)
def test_add_refuses_ids_and_metadata_no_saved_index_can_hold(model: BGEM3, backend: str
                                                              ) -> None:
    index = _index(model, backend)
    index.add(DOCS[:3], ids=IDS[:3], metadata=[{"i": i} for i in range(3)])
    before = _contents(index, IDS[:3])
    now = datetime.datetime(2024, 5, 1, tzinfo=datetime.timezone.utc)
    bad_calls = [
        (ValueError, r"ids\[1\] \('b\\udc80'\) holds an unpaired surrogate at position 1",
         {"ids": ["a", "b\udc80"]}),
        (TypeError, r"metadata\[1\]\['when'\] \(document 'b'\) is a datetime.*isoformat",
         {"metadata": [{}, {"when": now}]}),
        (TypeError, r"metadata\[0\]\['tags'\]\[1\] \(document 'a'\) is a set",
         {"metadata": [{"tags": ["x", {"y"}]}, {}]}),
        (ValueError, r"metadata\[1\]\['name'\] \(document 'b'\) holds an unpaired surrogate",
         {"metadata": [{}, {"name": "caf\udce9"}]}),
        (TypeError, r"metadata\[0\] \(document 'a'\) has the key 7 of type int",
         {"metadata": [{7: "seven"}, {}]}),
    ]
    for error, message, change in bad_calls:
        arguments = {"ids": ["a", "b"], "metadata": [{}, {}], **change}
        with pytest.raises(error, match=message):
            index.add(["first text", "second text"], **arguments)  # type: ignore[arg-type]
        assert len(index) == 3 and _contents(index, IDS[:3]) == before  # nothing changed
    looped: list[object] = []
    looped.append(looped)
    with pytest.raises(ValueError, match="nests lists or dicts more than 32 levels deep"):
        index.add(["a text"], ids=["loop"], metadata=[{"self": looped}])
    assert len(index) == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_texts_with_surrogates_are_stored_as_they_were_encoded(model: BGEM3, backend: str,
                                                               tmp_path: Path) -> None:
    index = _index(model, backend)
    text = "caf\udce9 au lait"  # a byte decoded with surrogateescape
    with pytest.warns(UnicodeWarning, match=r"1 text\(s\) held unpaired surrogates.*stored"):
        index.add(["plain text", text], ids=["plain", "odd"])
    assert index.get(["odd"])[0].text == "caf\ufffd au lait"
    with pytest.warns(UnicodeWarning):  # the encoder cleans its own copy
        emb = model.encode_documents([text, "x"], dense=True, sparse=True, colbert=True)
    with pytest.warns(UnicodeWarning, match="replaced with U\\+FFFD"):
        index.add([text, "x"], ids=["given", "x"], embeddings=emb)  # texts stored, not encoded
    assert index.get(["given"])[0].text == "caf\ufffd au lait"
    if isinstance(index, HybridIndex):
        index.save(tmp_path / "idx")
        loaded = HybridIndex.load(tmp_path / "idx", model)
        assert loaded.get(["odd", "given"])[0].text == "caf\ufffd au lait"


def test_metadata_is_stored_as_the_saved_index_reads_it_back(model: BGEM3,
                                                             tmp_path: Path) -> None:
    index = HybridIndex(model)
    tags = ["a", "b"]
    meta = {"n": np.int64(3), "x": np.float32(0.5), "ok": np.bool_(True), "pair": (1, 2),
            "tags": tags, "nested": {"deep": [np.int32(1)]}}
    index.add(["numpy metadata"], ids=["np"], metadata=[meta])
    tags.append("changed later")  # the caller's objects never reach the index
    stored = index.get(["np"])[0].metadata
    expected = {"n": 3, "x": 0.5, "ok": True, "pair": [1, 2], "tags": ["a", "b"],
                "nested": {"deep": [1]}}
    assert stored == expected and type(stored["n"]) is int and type(stored["ok"]) is bool
    assert [h.id for h in index.search("numpy metadata", k=1, filter={"n": 3})] == ["np"]
    index.save(tmp_path / "idx")
    assert HybridIndex.load(tmp_path / "idx", model).get(["np"])[0].metadata == expected
    state = index.state()
    bad = type(state)(**{**state.__dict__, "metadata": [{"when": datetime.date(2024, 1, 1)}]})
    with pytest.raises(ValueError, match=r"metadata\[0\]\['when'\] \(document 'np'\)"):
        HybridIndex.from_state(model, bad)


# ------------------------------------------------------------ first saves racing each other
@pytest.mark.skipif(os.name == "nt", reason="holds the writer lock with fcntl")
def test_a_first_save_waits_for_another_saves_half_made_directory(model: BGEM3,
                                                                  tmp_path: Path) -> None:
    import fcntl

    index = HybridIndex(model)
    index.add(DOCS[:5], ids=IDS[:5])
    root = tmp_path / "idx"
    root.mkdir()
    half_made = root / ("v-" + "ab" * 16)  # what another first save has written so far
    half_made.mkdir()
    (half_made / "dense.npy").write_bytes(b"\x93NUMPY")
    errors: list[BaseException] = []

    def save() -> None:
        try:
            index.save(root)
        except BaseException as exc:
            errors.append(exc)

    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other save holds the writer lock
        saver = threading.Thread(target=save)
        saver.start()
        saver.join(timeout=0.5)
        assert saver.is_alive() and errors == []  # it waits its turn instead of refusing
    saver.join(timeout=30)
    assert not saver.is_alive() and errors == []
    assert len(HybridIndex.load(root, model)) == 5
    assert not half_made.exists()  # the next save removes what another one left


def test_threads_racing_to_save_a_new_index(model: BGEM3, tmp_path: Path) -> None:
    index = HybridIndex(model)
    index.add(DOCS, ids=IDS)
    errors: list[BaseException] = []
    for attempt in range(6):
        root = tmp_path / f"new-{attempt}"
        start = threading.Barrier(4)

        def save(target: Path = root, barrier: threading.Barrier = start) -> None:
            barrier.wait()
            try:
                index.save(target)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=save) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert len(HybridIndex.load(root, model)) == len(DOCS)
        assert len([p for p in root.iterdir() if p.is_dir()]) == 1


# ------------------------------------------------------------ HNSW graphs bound to their vectors
def _hnsw_index(model: BGEM3, seed: int) -> tuple[HybridIndex, list[str]]:
    pytest.importorskip("faiss")
    docs = list(dict.fromkeys(random_texts(200, min_words=4, max_words=20, seed=seed)))[:120]
    index = HybridIndex(model, dense_search="hnsw")
    index.add(docs, ids=[f"s{seed}-{i}" for i in range(len(docs))])
    return index, docs


def _dense_ids(index: HybridIndex, queries: list[str]) -> list[list[str]]:
    return [[h.id for h in index.search(q, k=10, mode="dense", rerank=False)] for q in queries]


def test_a_foreign_hnsw_graph_is_rebuilt_from_the_index_vectors(model: BGEM3,
                                                                 tmp_path: Path) -> None:
    mine, docs = _hnsw_index(model, seed=3)
    other, _ = _hnsw_index(model, seed=4)
    mine.save(tmp_path / "mine")
    other.save(tmp_path / "other")
    version = tmp_path / "mine" / (tmp_path / "mine" / "CURRENT").read_text()
    foreign = tmp_path / "other" / (tmp_path / "other" / "CURRENT").read_text()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a graph of its own loads without a word
        assert HybridIndex.load(tmp_path / "mine", model)._graph is not None
    exact = HybridIndex(model, dense_search="exact")
    exact.add(docs, ids=[f"s3-{i}" for i in range(len(docs))])
    queries = [d[:40] for d in docs[:8]]
    expected = _dense_ids(exact, queries)
    shutil.copyfile(foreign / "dense_hnsw.npy", version / "dense_hnsw.npy")
    manifest = json.loads((version / "manifest.json").read_text())
    theirs = json.loads((foreign / "manifest.json").read_text())
    manifest["arrays"]["dense_hnsw"] = theirs["arrays"]["dense_hnsw"]  # the same byte count
    for checksum in ("kept", "forged"):  # a checksum rewritten to fit: the vectors differ
        if checksum == "forged":
            manifest["hnsw"]["sha256"] = theirs["hnsw"]["sha256"]
        (version / "manifest.json").write_text(json.dumps(manifest))
        with pytest.warns(RuntimeWarning, match="HNSW graph does not belong to this index"):
            loaded = HybridIndex.load(tmp_path / "mine", model)
        assert loaded._graph is not None and len(loaded._graph) == len(docs)
        assert _dense_ids(loaded, queries) == expected


# ------------------------------------------------------------ add_parquet: all or nothing
def _write(model: BGEM3, folder: Path, name: str, texts: list[str], ids: list[str],
           **columns: pa.Array) -> None:
    out = model.encode_documents(texts, dense=True, sparse=True, colbert=True)
    table = to_arrow(out, ids, texts=texts, model=model)
    for column, values in columns.items():
        table = table.append_column(column, values)
    folder.mkdir(exist_ok=True)
    pq.write_table(table, folder / name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_add_parquet_adds_nothing_when_a_later_file_is_bad(model: BGEM3, backend: str,
                                                           tmp_path: Path) -> None:
    index = _index(model, backend)
    index.add(DOCS[:2], ids=IDS[:2])
    good = tmp_path / "good"
    _write(model, good, "a.parquet", DOCS[2:8], IDS[2:8])
    repeated = tmp_path / "repeated"  # the second file repeats an id of the first
    _write(model, repeated, "a.parquet", DOCS[2:8], IDS[2:8])
    _write(model, repeated, "b.parquet", DOCS[8:12], [*IDS[8:11], IDS[4]])
    nan = tmp_path / "nan"  # the second file holds a NaN vector
    _write(model, nan, "a.parquet", DOCS[2:8], IDS[2:8])
    _write(model, nan, "b.parquet", DOCS[8:12], IDS[8:12])
    table = pq.read_table(nan / "b.parquet")
    dense = table.column("dense").to_pylist()
    dense[2][0] = float("nan")
    table = table.set_column(table.schema.get_field_index("dense"), table.schema.field("dense"),
                             pa.array(dense, table.schema.field("dense").type))
    pq.write_table(table, nan / "b.parquet")
    dates = tmp_path / "dates"  # the second file's metadata column holds timestamps
    _write(model, dates, "a.parquet", DOCS[2:8], IDS[2:8], when=pa.array(["2024"] * 6))
    _write(model, dates, "b.parquet", DOCS[8:12], IDS[8:12],
           when=pa.array([datetime.datetime(2024, 1, 1)] * 4, pa.timestamp("s")))
    cases = [(repeated, {}, ValueError, r"ids \['d4'\] occur more than once"),
             (nan, {}, ValueError, "NaN"),
             (dates, {"metadata_columns": ["when"]}, TypeError,
              r"dates: metadata\[0\]\['when'\] \(document 'd8'\) is a datetime")]
    for folder, options, error, message in cases:
        with pytest.raises(error, match=message):
            index.add_parquet(folder, batch_rows=4, **options)  # type: ignore[arg-type]
        assert len(index) == 2, folder.name  # the first file was not added either
    assert index.add_parquet(good, batch_rows=4) == 6 and len(index) == 8


@pytest.mark.parametrize("backend", BACKENDS)
def test_add_parquet_counts_additions_and_replacements(model: BGEM3, backend: str,
                                                       tmp_path: Path) -> None:
    index = _index(model, backend)
    index.add(DOCS[:4], ids=IDS[:4])
    _write(model, tmp_path / "v", "a.parquet", DOCS[2:6], IDS[2:6])
    _write(model, tmp_path / "v", "b.parquet", DOCS[6:9], IDS[6:9])
    load = index.add_parquet(tmp_path / "v", batch_rows=3)
    assert (load, load.added, load.replaced, load.rows) == (5, 5, 2, 7)
    assert len(index) == 4 + load == 9
    again = index.add_parquet(tmp_path / "v")
    assert (again, again.replaced, len(index)) == (0, 7, 9)
    assert repr(again) == "ParquetLoad(added=0, replaced=7)"


# ------------------------------------------------------------ float16 storage of any norm
def test_fp16_storage_of_long_vectors_keeps_the_best_match(model: BGEM3) -> None:
    n, dim = 60, model.dense_dim
    rng = np.random.default_rng(5)
    direction = rng.normal(size=dim)
    dense = direction + 0.15 * rng.normal(size=(n, dim))  # close to each other: high scores
    dense = (300 * dense / np.linalg.norm(dense, axis=1, keepdims=True)).astype(np.float32)
    texts = [f"document {i}" for i in range(n)]
    encoded = model.encode_documents(texts, dense=True, sparse=True, colbert=True)
    emb = EncodeOutput(dense=dense, sparse=encoded.sparse, colbert=encoded.colbert)
    half, full = HybridIndex(model, dense_dtype="float16"), HybridIndex(model)
    for index in (half, full):
        index.add(texts, ids=[f"v{i}" for i in range(n)], embeddings=emb)
    queries = model.encode_queries(texts[:1], dense=True, sparse=True, colbert=True)
    for target in (n - 1, n - 7, n // 2):  # |q . d| ~ 90000: beyond float16 before scaling
        asked = EncodeOutput(dense=dense[target : target + 1], sparse=queries.sparse,
                             colbert=queries.colbert)
        options = SearchOptions(k=1, mode="dense", rerank=False, candidates=3).as_kwargs()
        assert [h.id for h in full.search_encoded(asked, **options)[0]] == [f"v{target}"]
        hits = half.search_encoded(asked, **options)[0]
        assert [h.id for h in hits] == [f"v{target}"] and np.isfinite(hits[0].score)


# ------------------------------------------------------------ bools are not ints
def test_bools_are_not_counts(model: BGEM3, tiny_path: Path) -> None:
    for check in (positive_int, non_negative_int):
        for flag in (True, False, np.bool_(True)):
            with pytest.raises(ValueError, match=r"must be .*int.*got (np\.)?(True|False)"):
                check(flag, "batch_tokens")
    assert non_negative_int(0, "n") == 0 and positive_int(np.int64(3), "k") == 3
    with pytest.raises(ValueError, match="batch_tokens must be a positive int, got True"):
        BGEM3(tiny_path, device="cpu", batch_tokens=True)
    with pytest.raises(ValueError, match="ef_search must be a positive int, got True"):
        HybridIndex(model, ef_search=True)
    with pytest.raises(ValueError, match="k must be a positive int, got True"):
        SearchOptions(k=True)
