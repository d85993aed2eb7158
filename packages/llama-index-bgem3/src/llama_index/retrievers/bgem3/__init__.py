"""BGE-M3 hybrid retrieval for LlamaIndex (no model is loaded at import)."""

from llama_index.retrievers.bgem3.base import BGEM3HybridRetriever

__all__ = ["BGEM3HybridRetriever"]
