"""Hybrid search over BGE-M3 outputs: an embedded index and the same API on Qdrant.

``options`` declares every search option and its default, ``filters`` the metadata filter
language, ``state`` what an index holds, ``pool`` the candidate pool and its fusion,
``base`` the search API both backends share; ``embedded`` and ``qdrant`` are the backends.
"""

from __future__ import annotations

from typing import Any

from bgem3.index._persist import is_saved_index, read_manifest
from bgem3.index.base import SearchIndex
from bgem3.index.embedded import HybridIndex
from bgem3.index.options import DEFAULT_SEARCH, SearchOptions

__all__ = [
    "DEFAULT_SEARCH",
    "HybridIndex",
    "QdrantHybridIndex",
    "SearchIndex",
    "SearchOptions",
    "is_saved_index",
    "read_manifest",
]


def __getattr__(name: str) -> Any:
    # qdrant-client is optional: import the backend on first use only.
    if name == "QdrantHybridIndex":
        from bgem3.index.qdrant import QdrantHybridIndex

        return QdrantHybridIndex
    raise AttributeError(f"module 'bgem3.index' has no attribute {name!r}")
