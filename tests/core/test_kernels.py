"""The exhaustive-search kernels against plain numpy references."""

from __future__ import annotations

import numpy as np
import pytest
from bgem3._kernels import Rows, as_rows, dense_top, maxsim_all, query_block, row_ranges, top
from bgem3.scoring import colbert_scores

RNG = np.random.default_rng(3)


@pytest.fixture(autouse=True, params=["torch", "numpy"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every kernel test runs on both paths: torch (a local model runs) and numpy (none)."""
    if request.param == "numpy":
        import bgem3._kernels

        monkeypatch.setattr(bgem3._kernels, "_torch", lambda: None)
    return str(request.param)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_dense_top_equals_a_full_sort_with_masks_and_blocks(dtype: type) -> None:
    docs = RNG.normal(size=(300, 8)).astype(dtype)
    queries = RNG.normal(size=(7, 8)).astype(np.float32)
    mask = RNG.random(300) < 0.3
    blocks = Rows([docs[:100], docs[100:250], docs[250:]], (8,), docs.dtype)
    scores = queries @ docs.astype(np.float32).T
    for matrix in (docs, blocks):
        found = dense_top(matrix, queries, 10, mask, most_queries=2)  # several query blocks
        for q, (rows, values) in enumerate(found):
            allowed = np.flatnonzero(mask)
            expected = allowed[np.argsort(-scores[q, allowed], kind="stable")[:10]]
            assert rows.tolist() == expected.tolist()
            np.testing.assert_allclose(values, scores[q, rows], rtol=1e-2 if dtype == np.float16
                                       else 1e-5, atol=1e-2 if dtype == np.float16 else 1e-6)


def test_dense_top_returns_fewer_rows_when_few_are_allowed() -> None:
    docs = RNG.normal(size=(20, 4)).astype(np.float32)
    mask = np.zeros(20, bool)
    mask[[3, 11]] = True
    (rows, _), = dense_top(docs, docs[:1], 5, mask)
    assert sorted(rows.tolist()) == [3, 11]


def test_maxsim_all_equals_colbert_scores_in_any_chunking() -> None:
    lengths = RNG.integers(1, 9, size=40)
    packed = RNG.normal(size=(int(lengths.sum()), 6)).astype(np.float16)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    query = RNG.normal(size=(5, 6)).astype(np.float32)
    docs = np.array([0, 7, 39, 12, 3], dtype=np.int64)
    expected = colbert_scores(query, [packed[offsets[d]:offsets[d + 1]].astype(np.float32)
                                      for d in docs])
    for chunk in (1, 10, 1 << 18):
        got = maxsim_all(query, as_rows(packed), offsets, docs, chunk_vectors=chunk)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_top_and_block_sizes() -> None:
    scores = RNG.normal(size=1000)
    assert top(scores, 5).tolist() == np.argsort(-scores)[:5].tolist()
    assert top(scores[:3], 5).tolist() == np.argsort(-scores[:3]).tolist()
    assert query_block(0) == 256 and query_block(10**12) == 1
    assert row_ranges(np.array([2, 9]), np.array([4, 10])).tolist() == [2, 3, 9]
