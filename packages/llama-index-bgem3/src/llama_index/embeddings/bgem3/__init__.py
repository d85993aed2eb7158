"""BGE-M3 dense embeddings for LlamaIndex (no model is loaded at import)."""

from llama_index.embeddings.bgem3.base import BGEM3Embedding

__all__ = ["BGEM3Embedding"]
