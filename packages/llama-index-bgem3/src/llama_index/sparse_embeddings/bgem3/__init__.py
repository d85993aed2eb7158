"""BGE-M3 sparse embeddings for LlamaIndex (no model is loaded at import)."""

from llama_index.sparse_embeddings.bgem3.base import BGEM3SparseEmbedding

__all__ = ["BGEM3SparseEmbedding"]
