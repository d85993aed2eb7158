"""Writing to the embedded index: deletes, upserts and compaction, odd metadata, fp16
storage, natural inputs and mistakes, copying."""


from __future__ import annotations

import copy
import pickle
from pathlib import Path

import numpy as np
import pytest
from bgem3 import BGEM3, EncodeOutput, HybridIndex
from bgem3.index import embedded as embedded_module
from bgem3.testing import build_tiny_checkpoint

from tests.core.index_data import DOCS, IDS, numbered_index


@pytest.fixture
def index(model: BGEM3) -> HybridIndex:
    return numbered_index(model)


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
