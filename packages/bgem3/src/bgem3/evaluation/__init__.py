"""Retrieval quality on labelled data: every mode and fusion, metrics as trec_eval defines them.

Modules: ``data`` (BEIR-layout datasets), ``metrics`` (trec_eval's metrics), ``runs`` (runs
from candidate pools and exhaustive search), ``tuning`` (fusion weights chosen on held-out
queries), ``report`` (what is returned) and ``runner`` (:func:`evaluate`, which runs them).

Example:
    >>> import tempfile, bgem3
    >>> from bgem3.testing import build_tiny_checkpoint, write_beir_dataset
    >>> model = bgem3.BGEM3(build_tiny_checkpoint(tempfile.mkdtemp()), device="cpu")
    >>> report = bgem3.evaluate(model, write_beir_dataset(tempfile.mkdtemp()), tune=True)
    >>> [r.mode for r in report.results][:3], sorted(report.to_dict()["tuned"])[:2]
    (['dense', 'sparse', 'colbert'], ['in_sample_ndcg@10', 'method'])
"""

from __future__ import annotations

from bgem3.evaluation.data import BeirData, load_beir
from bgem3.evaluation.metrics import evaluate_run
from bgem3.evaluation.report import MODES, EvalReport, ModeResult, TuningResult
from bgem3.evaluation.runner import evaluate

__all__ = [
    "MODES",
    "BeirData",
    "EvalReport",
    "ModeResult",
    "TuningResult",
    "evaluate",
    "evaluate_run",
    "load_beir",
]
