"""``SearchOptions``: every search option with its default, declared once and checked once.

Both index backends, evaluation, the command line and the framework adapters take their
defaults from here (``SearchOptions()``), so a default changes in one place.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from bgem3._inputs import positive_int
from bgem3.index.filters import check_filter
from bgem3.scoring import RRF_K, fuse_scores

__all__ = ["DEFAULT_SEARCH", "FUSIONS", "MODES", "Fusion", "Mode", "SearchKeywords",
           "SearchOptions"]

Mode = Literal["hybrid", "dense", "sparse"]
"""A search's ``mode`` (fused ``"hybrid"`` candidates, or one output's ranking alone)."""
Fusion = Literal["weighted", "rrf", "dbsf"]
"""How hybrid scores are combined (weighted sum, reciprocal rank fusion, or distribution-based
score fusion, Qdrant's DBSF)."""
MODES: tuple[str, ...] = ("hybrid", "dense", "sparse")
"""Every ``Mode``, in the order messages list them."""
FUSIONS: tuple[str, ...] = ("weighted", "rrf", "dbsf")
"""Every ``Fusion``, in the order messages list them."""


@dataclass(frozen=True)
class SearchOptions:
    """How a search finds, scores and fuses candidates; checked when made.

    Attributes:
        k: Hits per query (fewer if fewer documents match).
        mode: Candidate source: ``"hybrid"`` (dense and sparse top lists), ``"dense"``
            or ``"sparse"``.
        fusion: ``"weighted"``: FlagEmbedding's weighted average of the per-mode scores,
            ``sum(w_m * s_m) / sum(w_m)`` over the modes in use; ``"rrf"``: reciprocal
            rank fusion ``sum(1 / (rrf_k + rank_m))``, each mode ranking its own candidate
            list (ColBERT ranks the whole pool); ``"dbsf"``: Qdrant's distribution-based
            score fusion (the Qdrant backend only).
        weights: ``(w_dense, w_sparse, w_colbert)``; the BGE-M3 README's ``(0.4, 0.2, 0.4)``.
        candidates: Documents taken from each of the dense and sparse lists (at least
            ``k`` are taken).
        rerank: Score the candidates with ColBERT MaxSim; ``None`` means yes when the
            index stores ColBERT vectors.
        filter: Metadata conditions, all of which must hold, applied before top-k:
            ``{"lang": "en"}`` (equality) or ``{"year": [2023, 2024]}`` (any of them).
        rrf_k: The constant of reciprocal rank fusion (60, as in the RRF paper).

    Raises:
        ValueError: A non-positive ``k``, ``candidates`` or ``rrf_k``, an unknown mode or
            fusion, invalid weights or filter values.
        TypeError: A filter that is not a dict of string keys.

    Example:
        >>> options = SearchOptions(k=5, fusion="rrf")
        >>> options.weights, options.candidates
        ((0.4, 0.2, 0.4), 100)
        >>> options.replace(k=3).k
        3
        >>> SearchOptions(mode="bm25")
        Traceback (most recent call last):
        ...
        ValueError: mode must be 'hybrid', 'dense' or 'sparse', got 'bm25'
    """

    k: int = 10
    mode: Mode = "hybrid"
    fusion: Fusion = "weighted"
    weights: tuple[float, float, float] = (0.4, 0.2, 0.4)
    candidates: int = 100
    rerank: bool | None = None
    filter: Mapping[str, Any] | None = field(default=None, hash=False)
    rrf_k: int = RRF_K

    def __post_init__(self) -> None:
        positive_int(self.k, "k")
        positive_int(self.candidates, "candidates")
        positive_int(self.rrf_k, "rrf_k")
        if self.mode not in MODES:
            raise ValueError(f"mode must be 'hybrid', 'dense' or 'sparse', got {self.mode!r}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(map(repr, FUSIONS))}, got "
                             f"{self.fusion!r}")
        if self.rerank is not None and not isinstance(self.rerank, bool):
            raise TypeError(f"rerank must be True, False or None, got {self.rerank!r}")
        if isinstance(self.weights, (str, bytes)) or not hasattr(self.weights, "__len__"):
            raise ValueError(f"weights must be three numbers (dense, sparse, colbert), got "
                             f"{self.weights!r}")
        fuse_scores(0.0, 0.0, 0.0, self.weights)  # validates the weights
        object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))
        check_filter(self.filter)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in declaration order (what ``search`` accepts as keywords)."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **changes: Any) -> SearchOptions:
        """A copy with some options changed (and checked again).

        Raises:
            TypeError: An option that does not exist, named with the ones that do.
        """
        unknown = sorted(set(changes) - set(self.names()))
        if unknown:
            raise TypeError(f"unknown search options {unknown}; expected some of "
                            f"{list(self.names())}")
        return dataclasses.replace(self, **changes)

    def as_kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments of ``search`` / ``search_batch``."""
        return {name: getattr(self, name) for name in self.names()}


class SearchKeywords(TypedDict, total=False):
    """The keyword arguments of ``search`` / ``search_batch`` / ``search_encoded`` besides ``k``.

    The same fields as :class:`SearchOptions` (documented there); a type for ``**options``.
    """

    mode: Mode
    fusion: Fusion
    weights: Sequence[float]
    candidates: int
    rerank: bool | None
    filter: Mapping[str, Any] | None
    rrf_k: int


DEFAULT_SEARCH = SearchOptions()
"""The defaults every search, evaluation and adapter starts from."""
