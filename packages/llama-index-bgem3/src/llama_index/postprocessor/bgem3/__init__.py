"""BGE-M3 ColBERT reranking for LlamaIndex (no model is loaded at import)."""

from llama_index.postprocessor.bgem3.base import BGEM3ColbertRerank

__all__ = ["BGEM3ColbertRerank"]
