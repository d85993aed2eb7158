"""BGE-M3 sparse vectors for ``langchain_milvus.Milvus`` (extra: ``langchain-bgem3[milvus]``)."""

from __future__ import annotations

from langchain_qdrant import SparseEmbeddings

try:
    from langchain_milvus.utils.sparse import BaseSparseEmbedding
except ImportError as exc:
    raise ImportError(
        'BGE-M3 sparse vectors for Milvus need langchain-milvus: '
        'pip install "langchain-bgem3[milvus]"'
    ) from exc

__all__ = ["BGEM3MilvusSparseEmbedding"]


class BGEM3MilvusSparseEmbedding(BaseSparseEmbedding):
    """BGE-M3 lexical weights as Milvus sparse vectors (``{token_id: weight}``).

    Milvus Lite wants explicit sparse parameters: ``{"index_type": "SPARSE_INVERTED_INDEX",
    "metric_type": "IP", "params": {"drop_ratio_build": 0.0}}`` as the sparse field's index
    params and ``{"metric_type": "IP", "params": {}}`` as its search params (it rejects
    ``AUTOINDEX`` and non-zero drop ratios). Milvus
    also rejects an empty sparse vector, which a text gets when all its token weights are 0.

    Args:
        sparse: The :class:`~langchain_bgem3.BGEM3SparseEmbeddings` to adapt (any
            ``langchain_qdrant.SparseEmbeddings`` works).
    """

    def __init__(self, sparse: SparseEmbeddings) -> None:
        self.sparse = sparse

    def embed_query(self, query: str) -> dict[int, float]:
        """Sparse vector of one query."""
        vector = self.sparse.embed_query(query)
        return dict(zip(vector.indices, vector.values, strict=True))

    def embed_documents(self, texts: list[str]) -> list[dict[int, float]]:
        """Sparse vectors of documents."""
        return [dict(zip(v.indices, v.values, strict=True))
                for v in self.sparse.embed_documents(texts)]
