"""BGE-M3 for LangChain: dense and sparse embeddings, ColBERT reranking, hybrid retrieval.

Importing this package loads no model and does not import torch; each class loads (or
reuses) its model when it is built.
"""

from __future__ import annotations

from importlib import metadata

from langchain_bgem3.compressors import BGEM3ColbertReranker
from langchain_bgem3.embeddings import BGEM3Embeddings
from langchain_bgem3.retrievers import BGEM3HybridRetriever
from langchain_bgem3.sparse import BGEM3SparseEmbeddings

try:
    __version__ = metadata.version("langchain-bgem3")
    """The installed version of ``langchain-bgem3`` (``"0.0.0"`` in an uninstalled source tree)."""
except metadata.PackageNotFoundError:  # pragma: no cover - source tree without install
    __version__ = "0.0.0"

__all__ = [
    "BGEM3ColbertReranker",
    "BGEM3Embeddings",
    "BGEM3HybridRetriever",
    "BGEM3SparseEmbeddings",
    "__version__",
]
