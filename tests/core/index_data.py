"""Documents shared by the embedded index's fault, write and HNSW tests."""

from __future__ import annotations

from bgem3 import BGEM3, HybridIndex
from bgem3.testing import random_texts

DOCS = list(dict.fromkeys(random_texts(40, min_words=3, max_words=30, seed=41)))[:30]
IDS = [f"d{i}" for i in range(len(DOCS))]


def numbered_index(model: BGEM3) -> HybridIndex:
    """An index of ``DOCS`` under ``IDS``, metadata ``{"i": position}``."""
    index = HybridIndex(model)
    index.add(DOCS, ids=IDS, metadata=[{"i": i} for i in range(len(DOCS))])
    return index
