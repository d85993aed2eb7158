"""Evaluate every retrieval mode and fusion of a BGE-M3 model on labelled data.

The corpus is encoded once into a :class:`~bgem3.HybridIndex` (saved and reused with
``index=``), the queries once; every row then comes from the same candidate pools that
:meth:`HybridIndex.search <bgem3.HybridIndex.search>` fuses, so the numbers describe what a
search returns. Weight tuning scores a whole grid of fusions from those pools at once.

The parts: :mod:`~bgem3.evaluation.report` (what is returned),
:mod:`~bgem3.evaluation.runs` (runs from pools and exhaustive search, and their metrics),
:mod:`~bgem3.evaluation.tuning` (the weight grid and held-out choice); this module runs them.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from bgem3._inputs import positive_int
from bgem3._types import EncodeOutput, Encoder
from bgem3.errors import IndexFormatError
from bgem3.evaluation.data import BeirData, load_beir
from bgem3.evaluation.report import MODES, EvalReport, ModeResult, TuningResult
from bgem3.evaluation.runs import (
    QUERY_BLOCK,
    Run,
    RunScorer,
    colbert_runs,
    dense_runs,
    measure_runs,
    pool_run,
)
from bgem3.evaluation.tuning import RRF_GRID as RRF_GRID
from bgem3.evaluation.tuning import tune_fusion, weight_grid
from bgem3.index import HybridIndex, is_saved_index
from bgem3.index.options import DEFAULT_SEARCH
from bgem3.index.pool import CandidatePool
from bgem3.scoring import weighted_fuse

__all__ = ["MODES", "EvalReport", "ModeResult", "TuningResult", "evaluate", "weight_grid"]

logger = logging.getLogger(__name__)


def evaluate(
    model: Encoder | str | os.PathLike[str],
    data: str | os.PathLike[str] | BeirData,
    *,
    split: str = "test",
    k: int = 10,
    recall_at: int = 100,
    candidates: int = DEFAULT_SEARCH.candidates,
    weights: Sequence[float] = DEFAULT_SEARCH.weights,
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
    Checkpoints without heads give the dense row only; an ``index`` saved without ColBERT
    vectors gives every row but ``colbert`` and ``colbert+sparse+dense`` (the report's
    ``missing`` says why), RRF then fusing the dense and sparse lists as its searches do.

    Args:
        model: A :class:`~bgem3.BGEM3` (or another encoder, such as an
            :class:`~bgem3.EncodePool`), or a hub id / checkpoint directory to load
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
        positive_int(value, name)
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

            encoder: Encoder = load_model(model, device=device, dtype=dtype)
        else:
            encoder = model
    depth = max(k, recall_at)
    query_ids = list(dataset.query_ids)
    texts = dict(zip(dataset.query_ids, dataset.query_texts, strict=True))
    if tuning is not None:
        texts.update(zip(tuning.query_ids, tuning.query_texts, strict=True))
    all_ids = list(texts)
    notes = list(dataset.notes)
    missing: dict[str, str] = {}
    results: list[ModeResult] = []
    scorer = RunScorer(dataset, query_ids, k, recall_at)
    rows_of = {q: i for i, q in enumerate(all_ids)}
    evaluated = np.asarray([rows_of[q] for q in query_ids], dtype=np.int64)

    def add_row(mode: str, runs: list[Run]) -> None:
        values = measure_runs(scorer, [runs[i] for i in evaluated])
        results.append(ModeResult(mode, {n: float(v.mean()) for n, v in values.items()},
                                  values))

    if not encoder.has_heads:
        with timer("encode corpus"):
            corpus = encoder.encode_documents(dataset.corpus_texts, dense=True,
                                              batch_size=batch_size,
                                              show_progress=show_progress)
        with timer("encode queries"):
            queries = encoder.encode_queries([texts[q] for q in all_ids], dense=True,
                                             batch_size=batch_size, show_progress=show_progress)
        if corpus.dense is None or queries.dense is None:
            raise ValueError("the model returned no dense vectors")
        with timer("score"):
            add_row("dense", dense_runs(corpus.dense, queries.dense, depth))
        reason = "the checkpoint has no sparse and ColBERT heads (dense_only)"
        missing.update({m: reason for m in MODES if m != "dense"})
        if index is not None:
            notes.append("a dense-only model is not indexed: the index directory was not used")
        if tune:
            notes.append("tuning needs all three outputs: skipped")
        return EvalReport(model=str(encoder.name), dataset=dataset.name, split=dataset.split,
                          query_ids=query_ids, documents=len(dataset.corpus_ids), k=k,
                          recall_at=recall_at, candidates=candidates, weights=w,
                          results=results, missing=missing, notes=notes,
                          timings=timer.seconds)

    with timer("encode corpus"):
        corpus_index, reused = _corpus_index(encoder, dataset, index, batch_size, show_progress)
    if reused:
        notes.append(f"corpus encoding loaded from {index}")
    colbert = corpus_index.store_colbert
    if not colbert:  # only a saved index can lack them: one built here stores them
        reason = (f"the index at {index} stores no ColBERT vectors (built with "
                  "store_colbert=False or `bgem3 index --no-colbert`); evaluate with another "
                  "index directory, or none, for these rows")
        missing.update({m: reason for m in MODES if "colbert" in m})
        notes.append("rrf fuses the dense and sparse lists only, as a search of this index does")
    with timer("encode queries"):
        queries = encoder.encode_queries([texts[q] for q in all_ids], dense=True, sparse=True,
                                         colbert=colbert, batch_size=batch_size,
                                         show_progress=show_progress)
    snap = corpus_index.snapshot()
    to_corpus = np.asarray([scorer.doc_row.get(i, -1) for i in snap.ids], dtype=np.int64)
    total_vectors = 0 if snap.colbert_offsets is None else int(snap.colbert_offsets[-1])
    colbert_ranking = (None if not colbert else "corpus" if total_vectors <= colbert_corpus_limit
                       else "candidates")
    runs: dict[str, list[Run]] = {m: [] for m in MODES}
    pools: list[CandidatePool] = []
    with timer("score"), _progress(len(all_ids), show_progress, len(snap.ids)) as bar:
        for start in range(0, len(all_ids), QUERY_BLOCK):
            block = _slice(queries, start, start + QUERY_BLOCK)
            for p in corpus_index.score_candidates(block, depth, mode="dense",
                                                   candidates=depth, rerank=False):
                runs["dense"].append(pool_run(to_corpus, p, p.scores["dense"]))
            for p in corpus_index.score_candidates(block, depth, mode="sparse",
                                                   candidates=depth, rerank=False):
                runs["sparse"].append(pool_run(to_corpus, p, p.scores["sparse"]))
            hybrid = corpus_index.score_candidates(block, depth, mode="hybrid",
                                                   candidates=candidates, rerank=colbert)
            if colbert_ranking == "corpus":
                runs["colbert"] += colbert_runs(snap, to_corpus, block.colbert or [], depth)
            elif colbert_ranking == "candidates":
                runs["colbert"] += [pool_run(to_corpus, p, p.scores["colbert"]) for p in hybrid]
            for p in hybrid:
                dense_sparse = weighted_fuse([p.scores["dense"], p.scores["sparse"]], w[:2])
                runs["sparse+dense"].append(pool_run(to_corpus, p, dense_sparse))
                if colbert:
                    runs["colbert+sparse+dense"].append(pool_run(to_corpus, p,
                                                                 p.fuse("weighted", w)))
                runs["rrf"].append(pool_run(to_corpus, p, p.fuse("rrf", w)))
            pools += hybrid
            bar.update(len(block))
        for mode in MODES:
            if mode not in missing:
                add_row(mode, runs[mode])
    tuned = None
    if tune:
        with timer("tune"):
            tuned = tune_fusion(pools, to_corpus, dataset, tuning, rows_of, scorer, step=step,
                                folds=folds, seed=seed, colbert=colbert)
        if not colbert:
            notes.append("tuning chose among weights with a ColBERT weight of 0 (the index "
                         "stores no ColBERT vectors)")
    return EvalReport(model=str(encoder.name), dataset=dataset.name, split=dataset.split,
                      query_ids=query_ids, documents=len(dataset.corpus_ids), k=k,
                      recall_at=recall_at, candidates=candidates, weights=w, results=results,
                      missing=missing, colbert_ranking=colbert_ranking, tuned=tuned,
                      notes=notes, timings=timer.seconds)


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


def _corpus_index(model: Encoder, data: BeirData, path: str | os.PathLike[str] | None,
                  batch_size: int, show_progress: bool | None) -> tuple[HybridIndex, bool]:
    """The corpus in a HybridIndex, loaded from ``path`` if it holds this corpus."""
    if path is not None and is_saved_index(path):
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


