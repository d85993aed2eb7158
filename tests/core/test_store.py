"""Block storage behind the embedded index: appends never copy, readers stay consistent."""

from __future__ import annotations

import numpy as np
import pytest
from bgem3.index._store import BlockArray


def test_block_array_matches_one_contiguous_array() -> None:
    rng = np.random.default_rng(0)
    store = BlockArray((3,), np.float16, block_rows=8)
    reference = np.zeros((0, 3), np.float16)
    for size, owned in [(1, False), (5, False), (2, True), (20, True), (3, False), (9, False),
                        (0, True), (4, True), (17, False)]:
        rows = rng.standard_normal((size, 3)).astype(np.float16)
        store.extend(rows, owned=owned)
        reference = np.concatenate([reference, rows])
        view = store.rows()
        assert view.shape == reference.shape and store.size == len(reference)
        assert np.array_equal(np.concatenate(view.blocks), reference)
        picks = rng.integers(0, len(reference), 50)
        assert np.array_equal(view.take(picks), reference[picks])
    assert view.nbytes == reference.nbytes
    assert len(view.blocks) > 3  # the test did exercise several blocks


def test_owned_large_arrays_are_kept_without_a_copy_and_small_ones_are_copied() -> None:
    store = BlockArray((2,), np.float32, block_rows=8)
    small = np.ones((1, 2), np.float32)
    store.extend(small, owned=True)  # below a quarter block: copied
    big = np.arange(20, dtype=np.float32).reshape(10, 2)
    store.extend(big, owned=True)
    foreign = np.zeros((10, 2), np.float32)
    store.extend(foreign)  # not owned: copied
    blocks = store.rows().blocks
    assert any(b is big for b in blocks)
    assert not any(np.shares_memory(b, small) or np.shares_memory(b, foreign) for b in blocks)


def test_a_snapshot_does_not_change_when_rows_are_appended_later() -> None:
    store = BlockArray((2,), np.float32, block_rows=4)
    store.extend(np.ones((3, 2), np.float32))
    before = store.rows()
    copy = np.concatenate(before.blocks).copy()
    for _ in range(5):  # grows the tail block, seals it, starts new ones
        store.extend(np.full((3, 2), 7, np.float32))
    assert before.shape == (3, 2)
    assert np.array_equal(np.concatenate(before.blocks), copy)
    assert store.rows().shape == (18, 2)


def test_of_bytes_sizes_blocks_by_bytes() -> None:
    assert BlockArray.of_bytes((1024,), np.float16, block_bytes=2**20).block_rows == 512
    assert BlockArray.of_bytes((1024,), np.float32, block_bytes=1).block_rows == 1
    with pytest.raises(ValueError, match="block_rows"):
        BlockArray((2,), np.float32, block_rows=0)
