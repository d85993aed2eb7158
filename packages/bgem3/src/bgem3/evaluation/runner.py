"""Evaluate every retrieval mode and fusion of a BGE-M3 model on labelled data.

The corpus is encoded once into a :class:`~bgem3.HybridIndex` (saved and reused with
``index=``), the queries once; every row then comes from the same candidate pools that
:meth:`HybridIndex.search <bgem3.HybridIndex.search>` fuses, so the numbers describe what a
search returns. Weight tuning scores a whole grid of fusions from those pools at once.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bgem3._types import EncodeOutput
from bgem3.errors import IndexFormatError
from bgem3.evaluation.data import BeirData, load_beir
from bgem3.evaluation.metrics import Judgments, order_run
from bgem3.index._store import Snapshot, row_ranges
from bgem3.index.embedded import DEFAULT_WEIGHTS, RRF_K, CandidatePool, HybridIndex
from bgem3.scoring import rrf_fuse, segment_maxsim, weighted_fuse

__all__ = ["MODES", "EvalReport", "ModeResult", "TuningResult", "evaluate", "weight_grid"]

logger = logging.getLogger(__name__)

MODES = ("dense", "sparse", "colbert", "sparse+dense", "colbert+sparse+dense", "rrf")
RRF_GRID = (5, 10, 20, 40, 60, 100)
_BLOCK = 256  # queries scored together


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
        if self.colbert_ranking:
            where = ("the whole corpus" if self.colbert_ranking == "corpus"
                     else "the hybrid candidates")
            lines.append(f"colbert ranks {where}; fusions rank dense top-{self.candidates} "
                         f"and sparse top-{self.candidates} with weights "
                         f"{tuple(self.weights)} (RRF: k={RRF_K})")
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


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def _corpus_index(model: Any, data: BeirData, path: str | os.PathLike[str] | None,
                  batch_size: int, show_progress: bool | None) -> tuple[HybridIndex, bool]:
    """The corpus in a HybridIndex, loaded from ``path`` if it holds this corpus."""
    if path is not None and (Path(path) / "CURRENT").is_file():
        index = HybridIndex.load(path, model)
        snap = index.snapshot()
        stored = {i: t for i, t, alive in zip(snap.ids, snap.texts, snap.alive, strict=True)
                  if alive}
        if stored != dict(zip(data.corpus_ids, data.corpus_texts, strict=True)):
            raise IndexFormatError(f"the index at {path} holds other documents than "
                                   f"{data.path / 'corpus.jsonl'}; use another index directory")
        return index, True
    index = HybridIndex(model)
    index.add(data.corpus_texts, ids=data.corpus_ids, batch_size=batch_size,
              show_progress=show_progress)
    if path is not None:
        index.save(path)
    return index, False


def _padded(pools: Sequence[tuple[NDArray[np.int64], NDArray[np.float64]]]
            ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Ragged ``(docs, scores[..., g])`` per query -> ``docs [q, p]``, ``scores [q, g, p]``."""
    width = max((d.size for d, _ in pools), default=0) or 1
    grid = pools[0][1].shape[1]
    docs = np.full((len(pools), width), -1, dtype=np.int64)
    scores = np.full((len(pools), grid, width), -np.inf)
    for i, (d, s) in enumerate(pools):
        docs[i, : d.size] = d
        scores[i, :, : d.size] = s.reshape(d.size, grid).T
    return docs, scores


class _Scorer:
    """Turns scored candidates into metrics with trec_eval's ordering."""

    def __init__(self, data: BeirData, query_ids: Sequence[str], k: int, recall_at: int) -> None:
        self.doc_row = {d: i for i, d in enumerate(data.corpus_ids)}
        tiebreak = np.empty(len(data.corpus_ids), dtype=np.int64)
        tiebreak[np.argsort(np.asarray(data.corpus_ids, dtype=object), kind="stable")] = \
            np.arange(len(data.corpus_ids))
        self.tiebreak = tiebreak
        self.judgments = Judgments.build(data.qrels, query_ids, self.doc_row)
        self.k, self.recall_at = k, recall_at

    def measure(self, queries: NDArray[np.int64], docs: NDArray[np.int64],
                scores: NDArray[np.float64]) -> dict[str, NDArray[np.float64]]:
        """Metrics of ``scores [q, g, p]`` over ``docs [q, p]``, flattened to ``[q * g]``."""
        grid = scores.shape[1]
        docs_g = np.repeat(docs[:, None, :], grid, axis=1).reshape(-1, docs.shape[1])
        flat = scores.reshape(-1, scores.shape[2])
        tie = np.where(docs_g >= 0, self.tiebreak[np.maximum(docs_g, 0)], -1)
        order = order_run(flat, tie)
        ranked = np.take_along_axis(docs_g, order, axis=1)
        ranked[np.take_along_axis(flat, order, axis=1) == -np.inf] = -1
        return self.judgments.measure(np.repeat(queries, grid), ranked, self.k, self.recall_at)


def evaluate(
    model: Any,
    data: str | os.PathLike[str] | BeirData,
    *,
    split: str = "test",
    k: int = 10,
    recall_at: int = 100,
    candidates: int = 100,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    tune: bool = False,
    tune_split: str | None = None,
    folds: int = 5,
    step: float = 0.1,
    seed: int = 0,
    index: str | os.PathLike[str] | None = None,
    colbert_corpus_limit: int = 4_000_000,
    batch_size: int = 256,
    device: str | None = None,
    dtype: str | None = None,
    show_progress: bool | None = None,
) -> EvalReport:
    """Measure dense, sparse, ColBERT and their fusions on a labelled dataset.

    Rows (:data:`MODES`): ``dense`` and ``sparse`` each rank the whole corpus;
    ``colbert`` ranks it by MaxSim when the corpus holds at most ``colbert_corpus_limit``
    ColBERT vectors, else the hybrid candidate pool; ``sparse+dense``,
    ``colbert+sparse+dense`` (weighted, FlagEmbedding's formula) and ``rrf`` rank the pool
    of ``HybridIndex.search`` (dense top-``candidates`` and sparse top-``candidates``).
    Checkpoints without heads give the dense row only.

    Args:
        model: A :class:`~bgem3.BGEM3`, or a hub id / checkpoint directory to load
            (``dense_only`` when it has no head files).
        data: A BEIR-layout directory, or :class:`~bgem3.evaluation.BeirData`.
        split: The qrels split to evaluate.
        k: Cut-off of nDCG and MRR (and of the ``candidates`` floor).
        recall_at: Cut-off of recall.
        candidates: Documents from each of the dense and sparse lists.
        weights: ``(dense, sparse, colbert)`` weights of the weighted rows.
        tune: Choose fusion weights (the ``step`` grid on the simplex) and the RRF
            constant by nDCG@k: by ``folds``-fold cross-validation over queries, or on
            ``tune_split`` when given.
        tune_split: Choose on this split's queries and report on ``split``'s.
        folds: Cross-validation folds (at most the number of queries).
        step: Grid step of the weights.
        seed: Seed of the fold assignment.
        index: A directory for the corpus encoding: loaded when it holds an index of
            this corpus and model, else written after encoding.
        colbert_corpus_limit: Most ColBERT vectors for the exhaustive ``colbert`` row.
        batch_size: Encoding batch size.
        device: Device of a model loaded here.
        dtype: Dtype of a model loaded here.
        show_progress: Progress bars (``None``: for large inputs).

    Returns:
        An :class:`EvalReport`.

    Raises:
        DatasetError: Missing or malformed data files (named with the line).
        IndexFormatError: ``index`` holds another corpus or was built by another model.
        ValueError: Bad arguments.

    Example:
        >>> import tempfile, bgem3
        >>> from bgem3.testing import build_tiny_checkpoint, write_beir_dataset
        >>> model = bgem3.BGEM3(build_tiny_checkpoint(tempfile.mkdtemp()), device="cpu")
        >>> report = evaluate(model, write_beir_dataset(tempfile.mkdtemp()))
        >>> report.row("dense").metrics["ndcg@10"]
        1.0
    """
    for name, value in (("k", k), ("recall_at", recall_at), ("candidates", candidates),
                        ("folds", folds), ("colbert_corpus_limit", colbert_corpus_limit)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    w = tuple(float(x) for x in weights)
    if len(w) != 3:
        raise ValueError(f"weights must be (dense, sparse, colbert), got {weights!r}")
    weighted_fuse([np.zeros(1)] * 3, w)  # validates the weights
    timer = _Timer()
    with timer("load data"):
        dataset = data if isinstance(data, BeirData) else load_beir(data, split)
        tuning = (load_beir(dataset.path, tune_split) if tune and tune_split is not None
                  else None)
    with timer("load model"):
        if isinstance(model, (str, os.PathLike)):
            from bgem3.encoder import load_model

            model = load_model(model, device=device, dtype=dtype)
    depth = max(k, recall_at)
    query_ids = list(dataset.query_ids)
    texts = dict(zip(dataset.query_ids, dataset.query_texts, strict=True))
    if tuning is not None:
        texts.update(zip(tuning.query_ids, tuning.query_texts, strict=True))
    all_ids = list(texts)
    notes = list(dataset.notes)
    missing: dict[str, str] = {}
    results: list[ModeResult] = []
    scorer = _Scorer(dataset, query_ids, k, recall_at)
    rows_of = {q: i for i, q in enumerate(all_ids)}
    evaluated = np.asarray([rows_of[q] for q in query_ids], dtype=np.int64)

    def add_row(mode: str, runs: list[tuple[NDArray[np.int64], NDArray[np.float64]]]) -> None:
        values = _measure_runs(scorer, [runs[i] for i in evaluated])
        results.append(ModeResult(mode, {n: float(v.mean()) for n, v in values.items()},
                                  values))

    if not model.has_heads:
        with timer("encode corpus"):
            corpus = model.encode_documents(dataset.corpus_texts, dense=True,
                                            batch_size=batch_size, show_progress=show_progress)
        with timer("encode queries"):
            queries = model.encode_queries([texts[q] for q in all_ids], dense=True,
                                           batch_size=batch_size, show_progress=show_progress)
        if corpus.dense is None or queries.dense is None:
            raise ValueError("the model returned no dense vectors")
        with timer("score"):
            add_row("dense", _dense_only_runs(corpus.dense, queries.dense, depth))
        reason = "the checkpoint has no sparse and ColBERT heads (dense_only)"
        missing.update({m: reason for m in MODES if m != "dense"})
        if index is not None:
            notes.append("a dense-only model is not indexed: the index directory was not used")
        if tune:
            notes.append("tuning needs all three outputs: skipped")
        return EvalReport(model=str(model.name), dataset=dataset.name, split=dataset.split,
                          query_ids=query_ids, documents=len(dataset.corpus_ids), k=k,
                          recall_at=recall_at, candidates=candidates, weights=w,
                          results=results, missing=missing, notes=notes,
                          timings=timer.seconds)

    with timer("encode corpus"):
        corpus_index, reused = _corpus_index(model, dataset, index, batch_size, show_progress)
    if reused:
        notes.append(f"corpus encoding loaded from {index}")
    with timer("encode queries"):
        queries = model.encode_queries([texts[q] for q in all_ids], dense=True, sparse=True,
                                       colbert=True, batch_size=batch_size,
                                       show_progress=show_progress)
    snap = corpus_index.snapshot()
    to_corpus = np.asarray([scorer.doc_row.get(i, -1) for i in snap.ids], dtype=np.int64)
    total_vectors = 0 if snap.colbert_offsets is None else int(snap.colbert_offsets[-1])
    colbert_ranking = "corpus" if total_vectors <= colbert_corpus_limit else "candidates"
    runs: dict[str, list[tuple[NDArray[np.int64], NDArray[np.float64]]]] = {m: [] for m in MODES}
    pools: list[CandidatePool] = []
    with timer("score"), _progress(len(all_ids), show_progress, len(snap.ids)) as bar:
        for start in range(0, len(all_ids), _BLOCK):
            block = _slice(queries, start, start + _BLOCK)
            for p in corpus_index.score_candidates(block, depth, mode="dense",
                                                   candidates=depth, rerank=False):
                runs["dense"].append(_run(to_corpus, p, p.scores["dense"]))
            for p in corpus_index.score_candidates(block, depth, mode="sparse",
                                                   candidates=depth, rerank=False):
                runs["sparse"].append(_run(to_corpus, p, p.scores["sparse"]))
            hybrid = corpus_index.score_candidates(block, depth, mode="hybrid",
                                                   candidates=candidates, rerank=True)
            if colbert_ranking == "corpus":
                runs["colbert"] += _colbert_corpus_runs(snap, to_corpus, block.colbert or [],
                                                        depth)
            else:
                runs["colbert"] += [_run(to_corpus, p, p.scores["colbert"]) for p in hybrid]
            for p in hybrid:
                dense_sparse = weighted_fuse([p.scores["dense"], p.scores["sparse"]], w[:2])
                runs["sparse+dense"].append(_run(to_corpus, p, dense_sparse))
                runs["colbert+sparse+dense"].append(_run(to_corpus, p, p.fuse("weighted", w)))
                runs["rrf"].append(_run(to_corpus, p, p.fuse("rrf", w)))
            pools += hybrid
            bar.update(len(block))
        for mode in MODES:
            add_row(mode, runs[mode])
    tuned = None
    if tune:
        with timer("tune"):
            tuned = _tune(pools, to_corpus, dataset, tuning, rows_of, k, recall_at, step,
                          folds, seed, scorer)
    return EvalReport(model=str(model.name), dataset=dataset.name, split=dataset.split,
                      query_ids=query_ids, documents=len(dataset.corpus_ids), k=k,
                      recall_at=recall_at, candidates=candidates, weights=w, results=results,
                      missing=missing, colbert_ranking=colbert_ranking, tuned=tuned,
                      notes=notes, timings=timer.seconds)


def _run(to_corpus: NDArray[np.int64], pool: CandidatePool, scores: NDArray[np.floating]
         ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """A pool's corpus rows and ``scores`` as one run (``[p, 1]`` scores)."""
    return to_corpus[pool.rows], np.asarray(scores, dtype=np.float64)[:, None]


def _slice(output: EncodeOutput, start: int, stop: int) -> EncodeOutput:
    return EncodeOutput(
        dense=None if output.dense is None else output.dense[start:stop],
        sparse=None if output.sparse is None else output.sparse[start:stop],
        colbert=None if output.colbert is None else output.colbert[start:stop])


def _progress(total: int, show: bool | None, documents: int) -> Any:
    """A tqdm bar over queries; ``None`` shows it for large evaluations."""
    from tqdm.auto import tqdm

    if show is None:
        show = total * documents >= 10**8
    return tqdm(total=total, disable=not show, unit="query", desc="bgem3 eval")


def _measure_runs(scorer: _Scorer, runs: Sequence[tuple[NDArray[np.int64], NDArray[np.float64]]]
                  ) -> dict[str, NDArray[np.float64]]:
    """Per-query metrics of runs ``(corpus rows, scores [p, g])`` -> ``{metric: [q, g]}``."""
    if not runs:
        raise ValueError("no queries to evaluate")
    grid = runs[0][1].shape[1]
    parts: list[dict[str, NDArray[np.float64]]] = []
    for start in range(0, len(runs), _BLOCK):
        block = runs[start : start + _BLOCK]
        docs, scores = _padded(block)
        parts.append(scorer.measure(np.arange(start, start + len(block)), docs, scores))
    out = {name: np.concatenate([p[name] for p in parts]).reshape(len(runs), grid)
           for name in parts[0]}
    return {name: v[:, 0] if grid == 1 else v for name, v in out.items()}


def _top_rows(scores: NDArray[np.floating], depth: int) -> NDArray[np.int64]:
    """The columns of the ``depth`` best scores of each row (unordered)."""
    if scores.shape[1] <= depth:
        every: NDArray[np.int64] = np.tile(np.arange(scores.shape[1]), (scores.shape[0], 1))
        return every
    top: NDArray[np.int64] = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
    return top


def _dense_only_runs(corpus: NDArray[np.float32], queries: NDArray[np.float32], depth: int
                     ) -> list[tuple[NDArray[np.int64], NDArray[np.float64]]]:
    """Exact dense top ``depth`` of the whole corpus per query (a model without heads)."""
    import torch

    docs = torch.from_numpy(np.ascontiguousarray(corpus, dtype=np.float32))
    block = max(1, min(_BLOCK, (1 << 26) // max(len(corpus), 1)))  # <= 256 MB of scores
    runs = []
    for start in range(0, len(queries), block):
        q = torch.from_numpy(np.ascontiguousarray(queries[start : start + block],
                                                  dtype=np.float32))
        scores = (q @ docs.T).numpy()
        top = _top_rows(scores, depth)
        for i in range(top.shape[0]):
            runs.append((top[i], scores[i, top[i]].astype(np.float64)[:, None]))
    return runs


def _colbert_corpus_runs(snap: Snapshot, to_corpus: NDArray[np.int64],
                         queries: Sequence[NDArray[np.float32]], depth: int,
                         chunk_vectors: int = 1 << 18
                         ) -> list[tuple[NDArray[np.int64], NDArray[np.float64]]]:
    """MaxSim of every query against every live document, top ``depth`` kept."""
    import torch

    offsets = snap.colbert_offsets
    colbert = snap.colbert
    if offsets is None or colbert is None:
        raise ValueError("the index stores no ColBERT vectors")
    alive = np.flatnonzero(snap.alive)
    lengths = offsets[alive + 1] - offsets[alive]
    # documents in chunks of about chunk_vectors ColBERT vectors
    bounds = np.searchsorted(np.cumsum(lengths), np.arange(chunk_vectors, lengths.sum(),
                                                            chunk_vectors))
    chunks = np.split(np.arange(alive.size), np.unique(bounds))
    runs = []
    for query in queries:
        q = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32))
        scores = np.empty(alive.size, dtype=np.float32)
        for part in chunks:
            if part.size == 0:
                continue
            rows = alive[part]
            vectors = torch.from_numpy(colbert.take(row_ranges(offsets[rows],
                                                               offsets[rows + 1]))).float()
            scores[part] = segment_maxsim((q @ vectors.T).numpy(), lengths[part])
        top = _top_rows(scores[None, :], depth)[0]
        runs.append((to_corpus[alive[top]], scores[top].astype(np.float64)[:, None]))
    return runs


def _tune(pools: list[CandidatePool], to_corpus: NDArray[np.int64], dataset: BeirData,
          tuning: BeirData | None, rows_of: dict[str, int], k: int, recall_at: int,
          step: float, folds: int, seed: int, scorer: _Scorer) -> TuningResult:
    """Grid-search the weights and the RRF constant; report held-out scores."""
    grid = weight_grid(step)
    ks = np.asarray(RRF_GRID, dtype=np.float64)
    names = ("dense", "sparse", "colbert")

    def grid_runs(data: BeirData) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        rows = [rows_of[q] for q in data.query_ids]
        local = _Scorer(data, data.query_ids, k, recall_at) if data is not dataset else scorer
        weighted = [(to_corpus[pools[r].rows],
                     weighted_fuse([pools[r].scores[m] for m in names], grid)) for r in rows]
        rrf = []
        for r in rows:
            p = pools[r]
            members = [np.isin(p.rows, p.lists[m]) for m in names]
            rrf.append((to_corpus[p.rows], rrf_fuse([p.scores[m] for m in names], members, ks)))
        key = f"ndcg@{k}"
        return (_measure_runs(local, weighted)[key].reshape(len(rows), -1),
                _measure_runs(local, rrf)[key].reshape(len(rows), -1))

    evaluated_w, evaluated_r = grid_runs(dataset)
    if tuning is None:
        n = evaluated_w.shape[0]
        n_folds = min(folds, n)
        if n_folds < 2:
            raise ValueError("cross-validated tuning needs at least 2 judged queries")
        fold = np.random.default_rng(seed).permutation(n) % n_folds
        held_w = _cross_validate(evaluated_w, fold)
        held_r = _cross_validate(evaluated_r, fold)
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


def _cross_validate(scores: NDArray[np.float64], fold: NDArray[np.int64]) -> NDArray[np.float64]:
    """Each query's score under the grid point chosen on the other folds (first best wins)."""
    held = np.empty(scores.shape[0])
    for f in np.unique(fold):
        test = fold == f
        best = int(np.argmax(scores[~test].mean(axis=0)))
        held[test] = scores[test, best]
    return held
