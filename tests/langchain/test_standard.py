"""LangChain's own standard test suites, run on the tiny checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_bgem3 import BGEM3Embeddings, BGEM3HybridRetriever
from langchain_tests.integration_tests import EmbeddingsIntegrationTests, RetrieversIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests


class _TinyModel:
    """Points the suites' constructor parameters at the session's tiny checkpoint."""

    @pytest.fixture(autouse=True)
    def _tiny(self, tiny_path: Path) -> None:
        self.tiny_path = tiny_path

    @property
    def embeddings_class(self) -> type[BGEM3Embeddings]:
        return BGEM3Embeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model_name": str(self.tiny_path), "device": "cpu", "dtype": "float32"}


class TestBGEM3EmbeddingsUnit(_TinyModel, EmbeddingsUnitTests):
    pass


class TestBGEM3EmbeddingsIntegration(_TinyModel, EmbeddingsIntegrationTests):
    pass


class TestBGEM3HybridRetriever(RetrieversIntegrationTests):
    @pytest.fixture(autouse=True)
    def _index(self, lc_retriever: BGEM3HybridRetriever) -> None:
        self.index = lc_retriever.index

    @property
    def retriever_constructor(self) -> type[BGEM3HybridRetriever]:
        return BGEM3HybridRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"index": self.index, "k": 4}

    @property
    def retriever_query_example(self) -> str:
        return "paris city"
