"""SparseVector invariants.

Moved from tests/core/test_hardening.py unchanged; tests/core/test_types.py is not
this session's file: merge these tests into it and delete this file.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from bgem3 import SparseVector


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
