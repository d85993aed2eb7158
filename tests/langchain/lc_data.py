"""Texts, metadata and queries shared by the LangChain adapter tests."""

from __future__ import annotations

from bgem3.testing import random_texts

TEXTS = list(dict.fromkeys(random_texts(40, max_words=25, seed=51, log_uniform=True)))[:30]
META = [{"lang": ["en", "fr", "de"][i % 3], "n": i} for i in range(len(TEXTS))]
QUERIES = random_texts(4, max_words=5, seed=52)
