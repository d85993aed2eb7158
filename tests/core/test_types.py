from __future__ import annotations

import math

import numpy as np
import pytest
from bgem3 import EncodeOutput, SparseVector, sparse_to_csr


def test_sparse_vector_round_trips_through_dict() -> None:
    vector = SparseVector.from_dict({10: 0.5, 2: 1.5, 7: 0.25})
    assert vector.indices.tolist() == [2, 7, 10]
    assert vector.indices.dtype == np.int64 and vector.values.dtype == np.float32
    back = vector.to_dict()
    assert back == {2: 1.5, 7: 0.25, 10: 0.5}
    assert all(type(k) is int and type(v) is float for k, v in back.items())
    assert len(vector) == 3


def test_sparse_vector_rejects_mismatched_arrays() -> None:
    with pytest.raises(ValueError, match="equal length"):
        SparseVector(np.array([1, 2]), np.array([0.5], dtype=np.float32))


def test_sparse_to_csr_rows_match_vectors() -> None:
    vectors = [SparseVector.from_dict({3: 1.0, 1: 2.0}), SparseVector.from_dict({}),
               SparseVector.from_dict({4: 0.5})]
    matrix = sparse_to_csr(vectors, 5)
    assert matrix.shape == (3, 5) and matrix.dtype == np.float32
    np.testing.assert_array_equal(
        matrix.toarray(), [[0, 2, 0, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0.5]]
    )
    assert sparse_to_csr([], 5).shape == (0, 5)


def test_sparse_to_csr_rejects_ids_outside_vocabulary() -> None:
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        sparse_to_csr([SparseVector.from_dict({5: 1.0})], 5)


def test_encode_output_is_frozen_and_sized() -> None:
    out = EncodeOutput(dense=np.zeros((4, 2), np.float32))
    assert len(out) == 4 and len(EncodeOutput()) == 0
    with pytest.raises(AttributeError):
        out.dense = None  # type: ignore[misc]


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
