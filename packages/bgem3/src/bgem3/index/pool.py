"""``CandidatePool``: the documents one search scores, their per-mode scores, and fusion.

Both index backends rank through it, and evaluation fuses the same pools under many
weights at once, so a grid point ranks documents exactly as a search with those weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from bgem3._kernels import top
from bgem3.index.options import DEFAULT_SEARCH
from bgem3.scoring import rrf_fuse, weighted_fuse

__all__ = ["MODE_NAMES", "CandidatePool"]

MODE_NAMES = ("dense", "sparse", "colbert")
"""The per-mode score names, in the order of the fusion weights."""


@dataclass(frozen=True)
class CandidatePool:
    """The documents one search scores, with the exact scores that search fuses.

    Attributes:
        rows: Storage rows of the pool, ascending (the union of the candidate lists).
        ids: Their document ids.
        scores: ``float32`` per-mode scores of the pool: ``"dense"`` and ``"sparse"``
            always, ``"colbert"`` when the search reranks.
        lists: The rows each mode in use contributed (its own ranking for RRF); ColBERT,
            when used, ranks the whole pool.

    Example:
        >>> pool = CandidatePool(rows=np.array([0, 1]), ids=["a", "b"],
        ...     scores={"dense": np.array([0.9, 0.2], np.float32),
        ...             "sparse": np.array([0.0, 0.5], np.float32)},
        ...     lists={"dense": np.array([0, 1]), "sparse": np.array([1])})
        >>> pool.fuse("weighted", (0.4, 0.2, 0.4)).round(3).tolist()
        [0.6, 0.3]
        >>> pool.best(pool.fuse("rrf", (1, 1, 1)), 1).tolist()
        [1]
    """

    rows: NDArray[np.int64]
    ids: list[str]
    scores: dict[str, NDArray[np.float32]]
    lists: dict[str, NDArray[np.int64]]

    @classmethod
    def empty(cls) -> CandidatePool:
        """A pool without documents (a filter that matches nothing)."""
        return cls(np.zeros(0, np.int64), [], {}, {})

    def fuse(self, fusion: str, weights: Sequence[float] = DEFAULT_SEARCH.weights,
             rrf_k: float = DEFAULT_SEARCH.rrf_k) -> NDArray[np.float64]:
        """Fused scores of the pool, as a search ranks them (``"weighted"`` or ``"rrf"``)."""
        if self.rows.size == 0:
            return np.zeros(0)
        names = [m for m in MODE_NAMES if m in self.lists]
        values = [self.scores[m] for m in names]
        if fusion == "rrf":
            members = [np.isin(self.rows, self.lists[m]) for m in names]
            return rrf_fuse(values, members, rrf_k)
        w = dict(zip(MODE_NAMES, weights, strict=True))
        return weighted_fuse(values, [w[m] for m in names])

    @staticmethod
    def best(fused: NDArray[np.floating], k: int) -> NDArray[np.int64]:
        """Positions in the pool of the ``k`` best fused scores, best first."""
        return top(fused, k)
