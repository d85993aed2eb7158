"""Nodes and queries shared by the LlamaIndex adapter tests."""

from __future__ import annotations

from bgem3.testing import random_texts
from llama_index.core.schema import TextNode

TEXTS = list(dict.fromkeys(random_texts(40, max_words=25, seed=71, log_uniform=True)))[:30]
QUERIES = random_texts(4, max_words=5, seed=72)


def make_nodes() -> list[TextNode]:
    return [TextNode(id_=f"n{i}", text=t, metadata={"lang": ["en", "fr", "de"][i % 3], "n": i})
            for i, t in enumerate(TEXTS)]
