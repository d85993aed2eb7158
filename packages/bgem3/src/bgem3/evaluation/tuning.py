"""Fusion tuning: every weight triple of a grid and every RRF constant, scored at once.

The candidate pools of the queries are fused under all grid points in one vectorized pass
(:func:`bgem3.scoring.weighted_fuse` with a ``[g, 3]`` weight matrix), so a grid point
scores exactly what a search with those weights returns. Weights are chosen on held-out
queries: by cross-validation over folds, or on another split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from bgem3.evaluation.data import BeirData
from bgem3.evaluation.report import TuningResult
from bgem3.evaluation.runs import RunScorer, measure_runs, pool_run
from bgem3.index.pool import MODE_NAMES, CandidatePool
from bgem3.scoring import rrf_fuse, weighted_fuse

__all__ = ["RRF_GRID", "cross_validate", "tune_fusion", "weight_grid"]

RRF_GRID = (5, 10, 20, 40, 60, 100)
"""The RRF constants tuning tries."""


def weight_grid(step: float = 0.1) -> NDArray[np.float64]:
    """Every ``(dense, sparse, colbert)`` triple on the simplex with the given step.

    Example:
        >>> weight_grid(0.5).tolist()
        [[0.0, 0.0, 1.0], [0.0, 0.5, 0.5], [0.0, 1.0, 0.0], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]
    """  # noqa: E501
    n = round(1 / step)
    if n < 1 or abs(n * step - 1) > 1e-9:
        raise ValueError(f"step must divide 1, got {step}")
    points = [(a, b, n - a - b) for a in range(n + 1) for b in range(n + 1 - a)]
    return np.asarray(points, dtype=np.float64) / n


def tune_fusion(pools: Sequence[CandidatePool], to_corpus: NDArray[np.int64],
                dataset: BeirData, tuning: BeirData | None, rows_of: Mapping[str, int],
                scorer: RunScorer, *, step: float, folds: int, seed: int,
                colbert: bool = True) -> TuningResult:
    """Grid-search the fusion weights and the RRF constant by nDCG@k; report held-out scores.

    Args:
        pools: The hybrid candidate pool of every query (evaluated and tuning queries),
            ColBERT-scored when ``colbert``.
        to_corpus: Index storage row to corpus row.
        dataset: The evaluated split.
        tuning: The split to choose on, or ``None`` to choose by cross-validation over
            ``dataset``'s queries.
        rows_of: Query id to its position in ``pools``.
        scorer: The scorer of ``dataset``'s queries (its ``k`` and ``recall_at`` apply to
            ``tuning`` as well).
        step: Grid step of the weights (see :func:`weight_grid`).
        folds: Cross-validation folds (at most the number of queries).
        seed: Seed of the fold assignment.
        colbert: Whether the pools hold ColBERT scores; without them the grid keeps the
            triples whose ColBERT weight is 0, and RRF fuses the dense and sparse lists.

    Raises:
        ValueError: Cross-validation with fewer than 2 judged queries.
    """
    grid = weight_grid(step)
    modes = list(MODE_NAMES)
    if not colbert:
        grid = grid[grid[:, MODE_NAMES.index("colbert")] == 0]
        modes.remove("colbert")
    columns = [MODE_NAMES.index(m) for m in modes]
    ks = np.asarray(RRF_GRID, dtype=np.float64)
    key = f"ndcg@{scorer.k}"

    def grid_runs(data: BeirData) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        chosen = [pools[rows_of[q]] for q in data.query_ids]
        local = (scorer if data is dataset
                 else RunScorer(data, data.query_ids, scorer.k, scorer.recall_at))
        weighted = [pool_run(to_corpus, p, weighted_fuse([p.scores[m] for m in modes],
                                                         grid[:, columns]))
                    for p in chosen]
        rrf = [pool_run(to_corpus, p, rrf_fuse([p.scores[m] for m in modes],
                                               [np.isin(p.rows, p.lists[m]) for m in modes],
                                               ks))
               for p in chosen]
        return (measure_runs(local, weighted)[key].reshape(len(chosen), -1),
                measure_runs(local, rrf)[key].reshape(len(chosen), -1))

    evaluated_w, evaluated_r = grid_runs(dataset)
    if tuning is None:
        n = evaluated_w.shape[0]
        n_folds = min(folds, n)
        if n_folds < 2:
            raise ValueError("cross-validated tuning needs at least 2 judged queries")
        fold = np.random.default_rng(seed).permutation(n) % n_folds
        held_w = cross_validate(evaluated_w, fold)
        held_r = cross_validate(evaluated_r, fold)
        choose_w, choose_r = evaluated_w, evaluated_r
        method = f"{n_folds}-fold cross-validation over queries"
    else:
        choose_w, choose_r = grid_runs(tuning)
        held_w = evaluated_w[:, int(np.argmax(choose_w.mean(axis=0)))]
        held_r = evaluated_r[:, int(np.argmax(choose_r.mean(axis=0)))]
        method = f"chosen on split {tuning.split!r}"
    best_w = int(np.argmax(choose_w.mean(axis=0)))
    best_r = int(np.argmax(choose_r.mean(axis=0)))
    triple = tuple(float(round(x, 6)) for x in grid[best_w])
    return TuningResult(
        weights=(triple[0], triple[1], triple[2]), score=float(held_w.mean()),
        in_sample_score=float(choose_w.mean(axis=0)[best_w]), rrf_k=int(ks[best_r]),
        rrf_score=float(held_r.mean()), rrf_in_sample_score=float(choose_r.mean(axis=0)[best_r]),
        method=method, grid=grid, grid_scores=choose_w.mean(axis=0),
        rrf_grid=RRF_GRID, rrf_grid_scores=choose_r.mean(axis=0))


def cross_validate(scores: NDArray[np.float64], fold: NDArray[np.int64]) -> NDArray[np.float64]:
    """Each query's score under the grid point chosen on the other folds (first best wins).

    Args:
        scores: ``[q, g]`` each query's score at each grid point.
        fold: ``[q]`` each query's fold.

    Returns:
        ``[q]`` held-out scores.

    Example:
        >>> cross_validate(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]),
        ...                np.array([0, 1, 1])).tolist()
        [1.0, 0.0, 1.0]
    """
    held = np.empty(scores.shape[0])
    for f in np.unique(fold):
        test = fold == f
        best = int(np.argmax(scores[~test].mean(axis=0)))
        held[test] = scores[test, best]
    return held
