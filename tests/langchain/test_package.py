"""The package surface: pinned exports, no torch at import, a clear error without Milvus."""

from __future__ import annotations

import subprocess
import sys

import langchain_bgem3
import pytest


def test_public_api_is_pinned() -> None:
    assert sorted(langchain_bgem3.__all__) == [
        "BGEM3ColbertReranker", "BGEM3Embeddings", "BGEM3HybridRetriever",
        "BGEM3SparseEmbeddings", "__version__"]


def test_importing_the_package_does_not_import_torch() -> None:
    code = "import sys, langchain_bgem3; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_missing_langchain_milvus_says_how_to_install(model, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from langchain_bgem3 import BGEM3SparseEmbeddings

    monkeypatch.setitem(sys.modules, "langchain_milvus.utils.sparse", None)
    monkeypatch.delitem(sys.modules, "langchain_bgem3.milvus", raising=False)
    with pytest.raises(ImportError, match=r'pip install "langchain-bgem3\[milvus\]"'):
        BGEM3SparseEmbeddings(model=model).for_milvus()
