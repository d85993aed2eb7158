"""Scoring functions against brute-force definitions written out in the test."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from bgem3 import (
    BGEM3,
    HybridIndex,
    SparseVector,
    colbert_scores,
    dense_scores,
    fuse_scores,
    lexical_matching_score,
    maxsim,
    sparse_scores,
)
from bgem3.cli import main
from bgem3.scoring import packed_colbert_scores


def _random_sparse(rng: np.random.Generator, vocab: int = 40) -> SparseVector:
    ids = rng.choice(vocab, size=rng.integers(0, 12), replace=False)
    return SparseVector.from_dict({int(i): float(rng.uniform(0.01, 2)) for i in ids})


def _unit_rows(rng: np.random.Generator, n: int, d: int = 8) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_dense_scores_equal_pairwise_dots() -> None:
    rng = np.random.default_rng(0)
    q, d = _unit_rows(rng, 3), _unit_rows(rng, 5)
    expected = [[float(np.dot(a, b)) for b in d] for a in q]
    np.testing.assert_allclose(dense_scores(q, d), expected, atol=1e-6)


def test_dense_scores_reject_mismatched_widths() -> None:
    with pytest.raises(ValueError, match="shapes"):
        dense_scores(np.ones((2, 3)), np.ones((2, 4)))


def test_lexical_score_is_sum_over_shared_ids() -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        a, b = _random_sparse(rng), _random_sparse(rng)
        da, db = a.to_dict(), b.to_dict()
        expected = sum(w * db[k] for k, w in da.items() if k in db)
        assert lexical_matching_score(a, b) == pytest.approx(expected, abs=1e-6)


def test_sparse_scores_matrix_equals_pairwise_scores() -> None:
    rng = np.random.default_rng(2)
    queries = [_random_sparse(rng) for _ in range(4)]
    docs = [_random_sparse(rng) for _ in range(9)]
    expected = [[lexical_matching_score(q, d) for d in docs] for q in queries]
    np.testing.assert_allclose(sparse_scores(queries, docs), expected, atol=1e-5)
    assert sparse_scores([], docs).shape == (0, 9)


def test_colbert_scores_equal_brute_force_maxsim() -> None:
    rng = np.random.default_rng(3)
    query = _unit_rows(rng, 4)
    docs = [_unit_rows(rng, int(n)) for n in rng.integers(1, 12, size=7)]
    expected = [np.mean([max(float(np.dot(qv, dv)) for dv in doc) for qv in query])
                for doc in docs]
    np.testing.assert_allclose(colbert_scores(query, docs), expected, atol=1e-6)
    assert maxsim(query, docs[0]) == pytest.approx(expected[0], abs=1e-6)
    packed = np.concatenate(docs)
    lengths = np.array([len(d) for d in docs])
    np.testing.assert_allclose(packed_colbert_scores(query, packed, lengths), expected, atol=1e-6)


def test_colbert_keeps_negative_best_matches() -> None:
    # A query token whose best match is negative must count negatively (no clamp at 0).
    query = np.array([[1.0, 0.0]], dtype=np.float32)
    doc = np.array([[-0.6, 0.8], [-1.0, 0.0]], dtype=np.float32)
    assert maxsim(query, doc) == pytest.approx(-0.6)


def test_colbert_rejects_empty_documents() -> None:
    with pytest.raises(ValueError, match="at least one"):
        colbert_scores(np.ones((1, 2)), [np.ones((1, 2)), np.zeros((0, 2))])
    assert colbert_scores(np.ones((1, 2)), []).shape == (0,)


def test_fuse_scores_follows_flagembedding_formulas() -> None:
    d, s, c = np.array([0.5, 0.1]), np.array([0.2, 0.3]), np.array([0.9, -0.1])
    w = (0.4, 0.2, 0.4)
    np.testing.assert_allclose(fuse_scores(d, s, weights=w), (0.2 * s + 0.4 * d) / 0.6)
    np.testing.assert_allclose(fuse_scores(d, s, c, weights=w), (0.4 * c + 0.2 * s + 0.4 * d) / 1.0)


@pytest.mark.parametrize("weights", [(1.0, 1.0), (1.0, -1.0, 1.0), (0.0, 0.0, 0.0)])
def test_fuse_scores_rejects_bad_weights(weights: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="weights"):
        fuse_scores(1.0, 1.0, 1.0, weights=weights)


# -------------------------------------------- weights and shapes refused with a reason
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


def test_colbert_scores_explains_shapes() -> None:
    with pytest.raises(ValueError, match="one text's ColBERT vectors"):
        colbert_scores(np.zeros((2, 3, 4)), [np.zeros((2, 4))])
    with pytest.raises(ValueError, match="wrap it in a list"):
        colbert_scores(np.zeros((3, 4)), np.zeros((2, 4)))  # type: ignore[arg-type]


def test_colbert_scores_refuse_one_3d_array_of_documents() -> None:
    query, docs = np.eye(2, 4, dtype=np.float32), np.ones((3, 5, 4), dtype=np.float32)
    with pytest.raises(ValueError, match=r"one 3-d array of shape \(3, 5, 4\).*list\(documents\)"):
        colbert_scores(query, docs)  # type: ignore[arg-type]
    assert colbert_scores(query, list(docs)).tolist() == [1.0, 1.0, 1.0]
    objects = np.empty(2, dtype=object)
    objects[0], objects[1] = docs[0], docs[1, :2]
    assert colbert_scores(query, objects).tolist() == [1.0, 1.0]  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"got shape \(5, 4, 1\) \(document 1\)"):
        colbert_scores(query, [docs[0], docs[1][:, :, None]])


@pytest.mark.filterwarnings("error")  # no RuntimeWarning from a mean over nothing
def test_maxsim_refuses_an_empty_query() -> None:
    document = np.ones((3, 4), dtype=np.float32)
    for scorer in (lambda q: maxsim(q, document), lambda q: colbert_scores(q, [document]),
                   lambda q: packed_colbert_scores(q, document, np.array([3]))):
        with pytest.raises(ValueError, match="the query has no ColBERT vectors"):
            scorer(np.zeros((0, 4), dtype=np.float32))


def test_flagembedding_dicts_are_refused_with_the_conversion() -> None:
    flag = {"5": 0.5, "9": 1.0}  # FlagEmbedding's lexical_weights: str(token_id) keys
    vector = SparseVector.from_dict({9: 0.25})
    with pytest.raises(TypeError, match=r"query must be a SparseVector, got a dict.*from_dict"):
        lexical_matching_score(flag, vector)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"document must be a SparseVector"):
        lexical_matching_score(vector, flag)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"documents\[1\] must be a SparseVector, got a dict"):
        sparse_scores([vector], [vector, flag])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="wrap it in a list"):
        sparse_scores(vector, [vector])  # type: ignore[arg-type]
    assert lexical_matching_score(SparseVector.from_dict(flag), vector) == 0.25
