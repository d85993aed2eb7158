"""``BGEM3ColbertRerank``: rerank nodes by BGE-M3 ColBERT MaxSim, with the real ColBERT head."""

from __future__ import annotations

import numpy as np
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
from llama_index.embeddings.bgem3.fields import BGEM3Fields
from pydantic import Field

from bgem3.shared import check_query, rerank_scores

__all__ = ["BGEM3ColbertRerank"]


class BGEM3ColbertRerank(BGEM3Fields, BaseNodePostprocessor):
    """Rerank nodes by BGE-M3's ColBERT score (or the dense+sparse+ColBERT combination).

    All node texts are encoded in one call with the ColBERT projection head. The result is
    new ``NodeWithScore`` objects, best first, holding the same nodes with the score in
    ``NodeWithScore.score``: no metadata is written, and the incoming objects are never
    changed.

    Example:
        .. code-block:: python

            from llama_index.postprocessor.bgem3 import BGEM3ColbertRerank

            engine = index.as_query_engine(similarity_top_k=20,
                                           node_postprocessors=[BGEM3ColbertRerank(top_n=3)])
    """

    top_n: int = Field(strict=True, default=3, gt=0, description="Nodes to return.")
    weights: tuple[float, float, float] | None = Field(
        default=None, description="None: ColBERT alone; (dense, sparse, colbert): weighted.")

    @classmethod
    def class_name(cls) -> str:
        """The name LlamaIndex serialises this class under."""
        return "BGEM3ColbertRerank"

    def _postprocess_nodes(self, nodes: list[NodeWithScore],
                           query_bundle: QueryBundle | None = None) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("reranking needs a query: pass query_bundle or query_str")
        query = check_query(query_bundle.query_str)
        if not nodes:
            return []
        texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
        fused, _ = rerank_scores(self.bgem3, query, texts, weights=self.weights)
        best = np.argsort(-fused, kind="stable")[: self.top_n].tolist()
        return [NodeWithScore(node=nodes[i].node, score=float(fused[i])) for i in best]
