"""What :func:`~bgem3.evaluation.evaluate` returns: one row per mode, tuning, the table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bgem3.index.options import DEFAULT_SEARCH

__all__ = ["MODES", "EvalReport", "ModeResult", "TuningResult"]

MODES = ("dense", "sparse", "colbert", "sparse+dense", "colbert+sparse+dense", "rrf")
"""The rows of a report, in order (three single modes, two weighted fusions, RRF)."""


@dataclass(frozen=True)
class ModeResult:
    """The metrics of one row.

    Attributes:
        mode: One of :data:`MODES`.
        metrics: Mean over the judged queries, e.g. ``{"ndcg@10": 0.91, ...}``.
        per_query: The same metrics per query, aligned with :attr:`EvalReport.query_ids`.
    """

    mode: str
    metrics: dict[str, float]
    per_query: dict[str, NDArray[np.float64]]


@dataclass(frozen=True)
class TuningResult:
    """Fusion weights and RRF constant chosen on held-out queries.

    Attributes:
        weights: The chosen ``(dense, sparse, colbert)`` weights (best on all tuning queries).
        score: nDCG@k of the weighted fusion on held-out queries: each query scored with the
            weights chosen without it (cross-validation), or on the evaluated split when
            the weights were chosen on ``tune_split``.
        in_sample_score: nDCG@k of :attr:`weights` on the queries that chose them (optimistic).
        rrf_k: The chosen RRF constant; :attr:`rrf_score` and :attr:`rrf_in_sample_score`
            as above.
        method: ``"5-fold cross-validation"`` or ``"chosen on split X"``.
        grid: ``[g, 3]`` every weight triple tried; :attr:`grid_scores` their in-sample
            nDCG@k (the weight landscape).
        rrf_grid: The RRF constants tried; :attr:`rrf_grid_scores` their in-sample nDCG@k.
    """

    weights: tuple[float, float, float]
    score: float
    in_sample_score: float
    rrf_k: int
    rrf_score: float
    rrf_in_sample_score: float
    method: str
    grid: NDArray[np.float64]
    grid_scores: NDArray[np.float64]
    rrf_grid: tuple[int, ...]
    rrf_grid_scores: NDArray[np.float64]


@dataclass(frozen=True)
class EvalReport:
    """What :func:`evaluate` measured.

    Attributes:
        model: The model name.
        dataset: The dataset directory name.
        split: The evaluated qrels split.
        query_ids: The evaluated (judged) queries, in the order of ``per_query`` arrays.
        documents: Corpus size.
        k: Cut-off of nDCG and MRR.
        recall_at: Cut-off of recall.
        candidates: Documents each of the dense and sparse lists contributes to the pool.
        weights: ``(dense, sparse, colbert)`` weights of the weighted fusions.
        results: One :class:`ModeResult` per row, in :data:`MODES` order.
        missing: Rows that could not be computed, with the reason.
        colbert_ranking: ``"corpus"`` (MaxSim over every document), ``"candidates"`` (over
            the hybrid pool), or ``None`` without ColBERT.
        tuned: The tuning result, with ``tune=True``.
        notes: Facts about the data worth knowing (unknown ids, queries without relevant
            documents).
        timings: Seconds spent per stage.
    """

    model: str
    dataset: str
    split: str
    query_ids: list[str]
    documents: int
    k: int
    recall_at: int
    candidates: int
    weights: tuple[float, float, float]
    results: list[ModeResult]
    missing: dict[str, str] = field(default_factory=dict)
    colbert_ranking: str | None = None
    tuned: TuningResult | None = None
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def row(self, mode: str) -> ModeResult:
        """The result of ``mode``.

        Raises:
            KeyError: The mode was not computed (see :attr:`missing`).
        """
        for result in self.results:
            if result.mode == mode:
                return result
        raise KeyError(f"no {mode!r} row: {self.missing.get(mode, 'unknown mode')}")

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (what ``bgem3 eval --json`` prints)."""
        out: dict[str, Any] = {
            "model": self.model, "dataset": self.dataset, "split": self.split,
            "queries": len(self.query_ids), "documents": self.documents,
            "k": self.k, "recall_at": self.recall_at, "candidates": self.candidates,
            "weights": list(self.weights),
            "results": [{"mode": r.mode, **r.metrics} for r in self.results],
            "colbert_ranking": self.colbert_ranking,
            "missing": dict(self.missing), "notes": list(self.notes),
        }
        if self.tuned is not None:
            t = self.tuned
            out["tuned"] = {
                "weights": list(t.weights), f"ndcg@{self.k}": t.score,
                f"in_sample_ndcg@{self.k}": t.in_sample_score, "method": t.method,
                "rrf_k": t.rrf_k, f"rrf_ndcg@{self.k}": t.rrf_score,
                f"rrf_in_sample_ndcg@{self.k}": t.rrf_in_sample_score,
            }
        out["timings"] = {name: round(seconds, 3) for name, seconds in self.timings.items()}
        return out

    def table(self) -> str:
        """A readable table of the rows, the tuning result and where the time went."""
        names = [f"ndcg@{self.k}", f"recall@{self.recall_at}", f"mrr@{self.k}"]
        lines = [f"{self.dataset} (split {self.split}): {len(self.query_ids)} queries, "
                 f"{self.documents} documents; model {self.model}", "",
                 f"{'mode':<22}" + "".join(f"{n:>12}" for n in names)]
        for r in self.results:
            lines.append(f"{r.mode:<22}" + "".join(f"{r.metrics[n]:>12.4f}" for n in names))
        for mode, reason in self.missing.items():
            lines.append(f"{mode:<22}  not computed: {reason}")
        lines.append("")
        fusions = (f"fusions rank dense top-{self.candidates} and sparse "
                   f"top-{self.candidates} with weights {tuple(self.weights)} (RRF: "
                   f"k={DEFAULT_SEARCH.rrf_k})")
        if self.colbert_ranking:
            where = ("the whole corpus" if self.colbert_ranking == "corpus"
                     else "the hybrid candidates")
            lines.append(f"colbert ranks {where}; {fusions}")
        elif any(r.mode not in ("dense", "sparse") for r in self.results):
            lines.append(fusions)
        if self.tuned is not None:
            t = self.tuned
            lines.append(f"tuned weights {t.weights}: nDCG@{self.k} {t.score:.4f} held out "
                         f"({t.method}), {t.in_sample_score:.4f} in-sample")
            lines.append(f"tuned RRF k={t.rrf_k}: nDCG@{self.k} {t.rrf_score:.4f} held out, "
                         f"{t.rrf_in_sample_score:.4f} in-sample")
        lines.extend(f"note: {n}" for n in self.notes)
        lines.append("time: " + ", ".join(f"{name} {s:.1f} s"
                                          for name, s in self.timings.items()))
        return "\n".join(lines)
