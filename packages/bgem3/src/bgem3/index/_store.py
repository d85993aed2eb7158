"""Append-only columnar storage behind the embedded index.

Rows are never changed in place: adds append, deletes and upserts flip a tombstone in a
fresh copy of the ``alive`` mask. A reader that took a :class:`Snapshot` therefore keeps
seeing a consistent index while a writer appends: appends only write past the rows a
snapshot covers, and a buffer that grows is reallocated, never freed under a reader.

The large matrices (dense and ColBERT vectors) live in a :class:`BlockArray`: fixed-size
blocks, so that growing a multi-gigabyte index never copies what is stored already.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

from bgem3._kernels import Rows, row_ranges

__all__ = ["BlockArray", "GrowingArray", "Rows", "row_ranges"]


class GrowingArray:
    """A numpy array with amortised O(1) appends along axis 0.

    Example:
        >>> g = GrowingArray((2,), np.float32)
        >>> g.extend(np.ones((3, 2), np.float32))
        >>> g.view().shape
        (3, 2)
    """

    def __init__(self, row_shape: tuple[int, ...], dtype: DTypeLike, capacity: int = 64) -> None:
        self._data = np.zeros((capacity, *row_shape), dtype=dtype)
        self.size = 0

    def extend(self, rows: NDArray[Any]) -> None:
        """Append ``rows`` (cast to this array's dtype)."""
        needed = self.size + rows.shape[0]
        if needed > self._data.shape[0]:
            capacity = max(needed, 2 * self._data.shape[0])
            grown = np.zeros((capacity, *self._data.shape[1:]), dtype=self._data.dtype)
            grown[: self.size] = self._data[: self.size]
            self._data = grown  # readers holding the old buffer keep a valid view
        self._data[self.size : needed] = rows
        self.size = needed

    def view(self) -> NDArray[Any]:
        """The filled part (a view: valid until rows past it are appended)."""
        return self._data[: self.size]


class BlockArray:
    """Rows appended into blocks, so that growing never copies what is stored already.

    Small appends are copied into a tail block that doubles up to ``block_rows``; a
    large array the caller hands over (``owned=True``) becomes a block as it is, without
    a copy. Growing a multi-gigabyte index thus writes each byte once.

    Example:
        >>> b = BlockArray((3,), np.float16, block_rows=4)
        >>> b.extend(np.ones((6, 3), np.float16)); b.extend(np.zeros((1, 3), np.float16))
        >>> b.size, [len(x) for x in b.rows().blocks]
        (7, [4, 3])
    """

    def __init__(self, row_shape: tuple[int, ...], dtype: DTypeLike, block_rows: int) -> None:
        if block_rows < 1:
            raise ValueError(f"block_rows must be at least 1, got {block_rows}")
        self.row_shape = row_shape
        self.dtype = np.dtype(dtype)
        self.block_rows = block_rows
        self._sealed: list[NDArray[Any]] = []
        self._tail: NDArray[Any] | None = None
        self._tail_fill = 0
        self.size = 0

    @classmethod
    def of_bytes(cls, row_shape: tuple[int, ...], dtype: DTypeLike,
                 block_bytes: int = 256 * 2**20) -> BlockArray:
        """A block array whose copied blocks grow to about ``block_bytes``."""
        row_bytes = np.dtype(dtype).itemsize * int(np.prod(row_shape, dtype=np.int64))
        return cls(row_shape, dtype, max(1, block_bytes // max(1, row_bytes)))

    def extend(self, rows: NDArray[Any], *, owned: bool = False) -> None:
        """Append ``rows`` (cast to this array's dtype).

        Args:
            rows: The rows to append.
            owned: The caller gives up ``rows`` (it will never change them): a large
                contiguous array of the right dtype is then kept as a block, not copied.
        """
        n = rows.shape[0]
        if (owned and n >= max(1, self.block_rows // 4) and rows.dtype == self.dtype
                and rows.flags.c_contiguous):
            self._seal()
            self._sealed.append(rows)
            self.size += n
            return
        done = 0
        while done < n:
            if self._tail is None or self._tail_fill == self.block_rows:
                self._seal()
                capacity = min(self.block_rows, max(n - done, 64))
                self._tail = np.empty((capacity, *self.row_shape), dtype=self.dtype)
            elif self._tail_fill == self._tail.shape[0]:  # a small tail: double it
                capacity = min(self.block_rows,
                               max(2 * self._tail_fill, self._tail_fill + n - done))
                grown = np.empty((capacity, *self.row_shape), dtype=self.dtype)
                grown[: self._tail_fill] = self._tail[: self._tail_fill]
                self._tail = grown  # readers keep the old buffer alive
            step = min(self._tail.shape[0] - self._tail_fill, n - done)
            self._tail[self._tail_fill : self._tail_fill + step] = rows[done : done + step]
            self._tail_fill += step
            done += step
        self.size += n

    def _seal(self) -> None:
        if self._tail is not None and self._tail_fill:
            self._sealed.append(self._tail[: self._tail_fill])
        self._tail, self._tail_fill = None, 0

    def rows(self) -> Rows:
        """A read-only view of the rows appended so far."""
        tail = [self._tail[: self._tail_fill]] if self._tail is not None and self._tail_fill else []
        return Rows([*self._sealed, *tail], self.row_shape, self.dtype)
