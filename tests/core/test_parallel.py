"""Data-parallel encoding with two CPU worker processes equals the single-process result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from bgem3 import BGEM3, EncodePool, Encoder, HybridIndex, TruncationWarning
from bgem3.testing import random_texts

TEXTS = random_texts(90, max_words=80, seed=4, log_uniform=True) + ["", "🙂"]


def test_two_processes_equal_one(model: BGEM3, tiny_path: Path) -> None:
    expected = model.encode(TEXTS, dense=True, sparse=True, colbert=True)
    with EncodePool(tiny_path, devices=["cpu", "cpu"], chunk_size=16) as pool:
        out = pool.encode(TEXTS, dense=True, sparse=True, colbert=True)
        queries = pool.encode_queries(TEXTS[:5], sparse=True)
        empty = pool.encode_documents([], colbert=True)
        with pytest.warns(TruncationWarning, match="2 of 2"):
            pool.encode(["the " * 40, "city " * 40], max_length=16)
        with pytest.raises(TypeError, match="single str"):
            pool.encode("not a list")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="max_length"):  # raised in a worker, re-raised
            pool.encode(["dog"], max_length=1)
        after_error = pool.encode(TEXTS[:3])  # the pool still works after an error
    np.testing.assert_allclose(out.dense, expected.dense, atol=1e-6)  # type: ignore[arg-type]
    for a, b in zip(out.sparse, expected.sparse, strict=True):  # type: ignore[arg-type]
        assert a.indices.tolist() == b.indices.tolist()
        np.testing.assert_allclose(a.values, b.values, atol=1e-6)
    for a, b in zip(out.colbert, expected.colbert, strict=True):  # type: ignore[arg-type]
        np.testing.assert_allclose(a, b, atol=1e-6)
    single_q = model.encode_queries(TEXTS[:5], sparse=True)
    np.testing.assert_allclose(queries.dense, single_q.dense, atol=1e-6)  # type: ignore[arg-type]
    assert empty.colbert == [] and empty.dense.shape == (0, model.dense_dim)  # type: ignore[union-attr]
    np.testing.assert_allclose(after_error.dense, expected.dense[:3], atol=1e-6)  # type: ignore[arg-type,index]


def test_a_pool_is_an_encoder_and_feeds_an_index(model: BGEM3, tiny_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    corpus, queries = TEXTS[:40], TEXTS[40:44]
    reference = HybridIndex(model)
    reference.add(corpus, ids=[str(i) for i in range(len(corpus))])
    with EncodePool(tiny_path, devices=["cpu", "cpu"], chunk_size=8) as pool:
        assert isinstance(pool, Encoder)
        for name in ("name", "fingerprint", "dense_dim", "colbert_dim", "vocab_size",
                     "has_heads", "query_max_length", "document_max_length"):
            assert getattr(pool, name) == getattr(model, name), name
        index = HybridIndex(pool)
        index.add(corpus, ids=[str(i) for i in range(len(corpus))])
        capsys.readouterr()
        pool.encode_documents(corpus, show_progress=True)
        assert "40/40" in capsys.readouterr().err  # one bar over the chunks
        pool.encode_documents(corpus, show_progress=False)
        assert "40/40" not in capsys.readouterr().err
        for query in queries:
            ours, theirs = index.search(query, k=5), reference.search(query, k=5)
            assert [h.id for h in ours] == [h.id for h in theirs]
            np.testing.assert_allclose([h.score for h in ours], [h.score for h in theirs],
                                       atol=1e-5)


def test_pool_from_a_loaded_model_and_closing(model: BGEM3) -> None:
    pool = EncodePool(model, devices=["cpu"])
    np.testing.assert_allclose(pool.encode(TEXTS[:4]).dense, model.encode(TEXTS[:4]).dense,  # type: ignore[arg-type]
                               atol=1e-6)
    pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        pool.encode(["dog"])


def test_worker_load_failure_is_raised(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        EncodePool(tmp_path / "missing", devices=["cpu"])
    with pytest.raises(ValueError, match="devices"):
        EncodePool(tmp_path, devices="cpu")  # type: ignore[arg-type]
