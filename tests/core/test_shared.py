"""bgem3.shared: one model per checkpoint, a bounded output cache, reranker scores."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import bgem3
import numpy as np
import pytest
from bgem3 import BGEM3
from bgem3.shared import (
    LiveIndexMixin,
    ModelReference,
    OutputCache,
    SharedModelMixin,
    model_reference,
    output_cache,
    rerank_scores,
    resolve_model,
    resolve_reference,
    shared_model,
    with_scores,
)
from bgem3.testing import random_texts
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr  # qdrant-client's dependency

TEXTS = random_texts(12, max_words=20, seed=61)


class Settings(SharedModelMixin, BaseModel):
    """The smallest adapter base: the model fields as an adapter declares them, one setting."""

    model_config = ConfigDict(extra="forbid")
    model_name: str = "BAAI/bge-m3"
    model: Any = Field(default=None, exclude=True, repr=False)
    device: str | None = None
    dtype: str | None = None
    base_url: str | None = None
    api_key: Any = None
    top_n: int = 3
    _bgem3: Any = PrivateAttr(default=None)


class Retriever(LiveIndexMixin):
    rebuild_with: ClassVar[str] = "Retriever(index={})"

    def __init__(self, index: object) -> None:
        self.index = index


def check_pickles_by_reference(cls: Any, model: Any, name: Path | dict[str, Any],
                               same_results: Callable[[Any, Any], bool],
                               **settings: Any) -> None:
    """What every class built on ``SharedModelMixin`` guarantees, checked on ``cls``.

    Pickles carry the settings and the model by reference: built from ``model=`` or from
    a name, an object unpickles (twice: onto one model) onto the shared model of its
    reference and gives the same results; a deep copy shares the model. The framework
    tests call it on each of their classes with the tiny checkpoint's path as ``name``;
    ``tests/server/test_adapters_remote.py`` with a server's client as ``model`` and
    ``{"base_url": ..., "api_key": ...}`` as ``name``.
    """
    by_name = (cls(model_name=str(name), device="cpu", dtype="float32", **settings)
               if isinstance(name, Path) else cls(**name, **settings))
    with_model = cls(model=model, **settings)
    for obj in (with_model, by_name):
        data = pickle.dumps(obj)
        assert len(data) < 4096  # the tiny checkpoint alone is 2.6 MB
        assert b"secret" not in data  # a server's key never travels
        first, second = pickle.loads(data), pickle.loads(data)
        reference = model_reference(obj.bgem3)
        assert first.bgem3 is second.bgem3 is resolve_reference(reference)
        assert (first.model_name, first.device, first.dtype, first.base_url) == reference
        assert first.api_key is None
        assert {k: getattr(first, k) for k in settings} == settings
        assert same_results(first, obj)
    assert pickle.loads(pickle.dumps(by_name)).bgem3 is by_name.bgem3
    clone = copy.deepcopy(with_model)
    assert clone.bgem3 is model and clone is not with_model and same_results(clone, with_model)


def _same_queries(a: Settings, b: Settings) -> bool:
    return bool(np.array_equal(a.outputs.queries(TEXTS[:3]).dense,  # type: ignore[arg-type]
                               b.outputs.queries(TEXTS[:3]).dense))  # type: ignore[arg-type]


def test_shared_model_classes_pickle_and_deep_copy_by_reference(model: BGEM3,
                                                                  tiny_path: Path) -> None:
    check_pickles_by_reference(Settings, model, tiny_path, _same_queries, top_n=2)


def test_shared_model_classes_load_at_construction(model: BGEM3, tiny_path: Path) -> None:
    with_model = Settings(model=model)
    assert with_model.bgem3 is model and with_model.model_name == model.name
    assert with_model.outputs is output_cache(model)
    by_name = Settings(model_name=str(tiny_path), device="cpu", dtype="float32")
    assert by_name.bgem3 is shared_model(str(tiny_path), device="cpu", dtype="float32")
    assert by_name.model_name == str(tiny_path)
    with pytest.raises(TypeError, match=r"bgem3\.BGEM3, a bgem3\.remote\.RemoteBGEM3 or "
                       r"another bgem3\.Encoder, got str"):
        Settings(model="BAAI/bge-m3")


def test_a_live_index_refuses_pickle_and_deep_copy_and_says_what_to_do() -> None:
    retriever = Retriever(object())
    for copy_it in (pickle.dumps, copy.deepcopy):
        with pytest.raises(TypeError) as error:
            copy_it(retriever)
        assert str(error.value) == (
            "a Retriever cannot be pickled or deep-copied: it holds a live index. Share the "
            "retriever (searches may run in several threads), or save the index with "
            "retriever.index.save(path) and build a new retriever with "
            "Retriever(index=HybridIndex.load(path, model)); over Qdrant, the data stays in "
            "the collection: Retriever(index=QdrantHybridIndex(model, client, collection))")
    assert copy.copy(retriever).index is retriever.index  # a shallow copy shares it


def test_cached_outputs_equal_fresh_ones_and_the_cache_is_bounded(model: BGEM3) -> None:
    cache = OutputCache(model, max_items=5)
    first = cache.documents(TEXTS[:4] + TEXTS[:2])  # duplicates are encoded once
    assert (cache.hits, cache.misses) == (2, 4)
    fresh = model.encode_documents(TEXTS[:4] + TEXTS[:2], dense=True, sparse=True)
    assert np.allclose(first.dense, fresh.dense, atol=1e-6)  # type: ignore[arg-type]
    assert [v.indices.tolist() for v in first.sparse] == [  # type: ignore[union-attr]
        v.indices.tolist() for v in fresh.sparse]  # type: ignore[union-attr]
    again = cache.documents(TEXTS[:4])
    assert (cache.hits, cache.misses) == (6, 4) and np.array_equal(again.dense, first.dense[:4])  # type: ignore[index]
    cache.documents(TEXTS[4:8])  # 8 texts seen, 5 kept: the least recently used go
    cache.documents(TEXTS[:3])
    assert cache.misses == 11
    assert cache.documents([]).dense.shape == (0, model.dense_dim)  # type: ignore[union-attr]


def test_queries_documents_and_lengths_are_kept_apart(model: BGEM3) -> None:
    cache = OutputCache(model)
    text = " ".join(["paris"] * 40)
    doc = cache.documents([text]).dense
    query = cache.queries([text]).dense
    with pytest.warns(bgem3.TruncationWarning):
        short = cache.queries([text], max_length=8).dense
    assert cache.misses == 3
    assert np.allclose(doc, query, atol=1e-6)  # type: ignore[arg-type]
    assert not np.allclose(query, short, atol=1e-3)  # type: ignore[arg-type]
    with_colbert = cache.documents([text], colbert=True)
    assert with_colbert.colbert is not None and cache.misses == 4
    with pytest.raises(TypeError, match="list of strings"):
        cache.documents(text)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"texts\[0\]"):
        cache.documents([None])  # type: ignore[list-item]


def test_one_model_per_checkpoint(tiny_path: Path, model: BGEM3) -> None:
    a = shared_model(str(tiny_path), device="cpu", dtype="float32")
    assert shared_model(str(tiny_path), device="cpu", dtype="float32") is a
    assert resolve_model(None, str(tiny_path), device="cpu", dtype="float32") is a
    assert resolve_model(model) is model
    assert model_reference(a) == ModelReference(str(tiny_path), "cpu", "float32")
    assert resolve_reference(model_reference(a)) is a
    by_default = shared_model(str(tiny_path))
    assert model_reference(by_default) == (str(tiny_path), None, None, None)  # its registry key
    assert model_reference(model) == (str(tiny_path), "cpu", "float32", None)  # not registered
    with pytest.raises(ValueError, match="model_name"):
        resolve_model(None, None)
    with pytest.raises(TypeError, match="BGEM3"):
        resolve_model("BAAI/bge-m3")  # type: ignore[arg-type]


def test_what_goes_with_a_server_is_checked_before_connecting(model: BGEM3) -> None:
    for kwargs, message in [
        ({"model": model, "base_url": "http://127.0.0.1:1"}, "not both"),
        ({"base_url": "http://127.0.0.1:1", "device": "cpu"}, "are the server's"),
        ({"model_name": "BAAI/bge-m3", "api_key": "k"}, "with base_url="),
        ({"base_url": " "}, "base_url must be a server's URL"),
    ]:
        with pytest.raises(ValueError, match=message):
            resolve_model(**kwargs)


def test_rerank_scores_equal_the_scoring_functions(model: BGEM3) -> None:
    q = model.encode_queries([TEXTS[0]], dense=True, sparse=True, colbert=True)
    d = model.encode_documents(TEXTS, dense=True, sparse=True, colbert=True)
    colbert = bgem3.colbert_scores(q.colbert[0], d.colbert)  # type: ignore[index,arg-type]
    fused, per_mode = rerank_scores(model, TEXTS[0], TEXTS)
    assert set(per_mode) == {"colbert"} and np.allclose(fused, colbert, atol=1e-6)
    fused, per_mode = rerank_scores(model, TEXTS[0], TEXTS, weights=(0.4, 0.2, 0.4))
    want = bgem3.fuse_scores(bgem3.dense_scores(q.dense, d.dense)[0],  # type: ignore[arg-type]
                             bgem3.sparse_scores(q.sparse, d.sparse)[0], colbert,  # type: ignore[arg-type]
                             (0.4, 0.2, 0.4))
    assert np.allclose(fused, want, atol=1e-6) and set(per_mode) == {"dense", "sparse", "colbert"}
    with pytest.raises(TypeError, match="query must be a str"):
        rerank_scores(model, None, TEXTS)  # type: ignore[arg-type]


def test_scores_never_replace_metadata_values() -> None:
    metadata = {"relevance_score": "high", "previous_relevance_score": 1, "lang": "en"}
    out = with_scores(metadata, {"relevance_score": 0.5, "colbert_score": 0.25})
    assert out == {"relevance_score": 0.5, "previous_relevance_score": "high",
                   "previous_previous_relevance_score": 1, "lang": "en", "colbert_score": 0.25}
    assert metadata == {"relevance_score": "high", "previous_relevance_score": 1, "lang": "en"}
    assert with_scores({}, {"dense_score": 1.0}) == {"dense_score": 1.0}


def test_the_cache_runs_any_encoder(model: BGEM3) -> None:
    class Remote:  # the Encoder protocol and nothing else
        def __init__(self) -> None:
            self.name, self.fingerprint = model.name, model.fingerprint
            self.dense_dim, self.colbert_dim = model.dense_dim, model.colbert_dim
            self.vocab_size, self.has_heads = model.vocab_size, model.has_heads
            self.query_max_length = model.query_max_length
            self.document_max_length = model.document_max_length
            self.encode_queries, self.encode_documents = (model.encode_queries,
                                                          model.encode_documents)

    remote = Remote()
    assert isinstance(remote, bgem3.Encoder)
    cache = OutputCache(remote)
    first = cache.queries(TEXTS[:3])
    assert np.array_equal(cache.queries(TEXTS[:3]).dense, first.dense)  # type: ignore[arg-type]
    assert (cache.hits, cache.misses) == (3, 3)
    np.testing.assert_allclose(first.dense, model.encode_queries(TEXTS[:3]).dense, atol=1e-6)  # type: ignore[arg-type]
    fused, _ = rerank_scores(remote, TEXTS[0], TEXTS[:4], weights=(0.4, 0.2, 0.4))  # type: ignore[arg-type]
    np.testing.assert_allclose(fused, rerank_scores(model, TEXTS[0], TEXTS[:4],
                                                    weights=(0.4, 0.2, 0.4))[0], atol=1e-6)
    settings = Settings(model=remote)  # any encoder runs a component...
    assert settings.bgem3 is remote and settings.model_name == model.name
    assert copy.deepcopy(settings).bgem3 is remote
    with pytest.raises(TypeError, match=r"a Remote cannot be pickled or serialised by "
                       r"reference: only a bgem3\.BGEM3"):
        pickle.dumps(settings)  # ...but only a model or a server has a reference
