"""Fixtures for the LangChain adapters: texts with metadata and a built retriever."""

from __future__ import annotations

import pytest
from bgem3 import BGEM3
from lc_data import META, TEXTS


@pytest.fixture(scope="session")
def lc_retriever(model: BGEM3):  # type: ignore[no-untyped-def]
    from langchain_bgem3 import BGEM3HybridRetriever

    return BGEM3HybridRetriever.from_texts(TEXTS, model=model, k=4, metadatas=META,
                                           ids=[f"t{i}" for i in range(len(TEXTS))])
