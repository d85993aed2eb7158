"""``bgem3 eval``: retrieval quality of every mode and fusion on labelled data."""

from __future__ import annotations

import argparse
import json

from bgem3.cli._shared import Commands, add_model_options, env_model, model_name
from bgem3.index.options import DEFAULT_SEARCH

__all__ = ["add_commands"]


def add_commands(commands: Commands) -> None:
    """Add ``eval``."""
    p = commands.add_parser("eval", help="retrieval quality of every mode and fusion on "
                                         "labelled data (BEIR layout)")
    p.add_argument("data", metavar="DATA_DIR",
                   help="corpus.jsonl, queries.jsonl and qrels/<split>.tsv")
    p.add_argument("--split", default="test", help="qrels split to evaluate (default: test)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--tune", action="store_true",
                   help="choose fusion weights and the RRF k, scored on held-out queries")
    p.add_argument("--tune-split", help="choose on this split instead of cross-validating")
    p.add_argument("--k", type=int, default=10, help="cut-off of nDCG and MRR (default: 10)")
    p.add_argument("--recall-at", type=int, default=100, help="cut-off of recall (default: 100)")
    p.add_argument("--candidates", type=int, default=DEFAULT_SEARCH.candidates,
                   help="documents from each of the dense and sparse lists (default: "
                        "%(default)s)")
    p.add_argument("--weights", type=float, nargs=3, default=DEFAULT_SEARCH.weights,
                   metavar=("DENSE", "SPARSE", "COLBERT"),
                   help="weights of the sparse+dense and colbert+sparse+dense rows (default: "
                        "%(default)s)")
    p.add_argument("--index", help="directory to save the corpus encoding in, or reuse it from")
    p.add_argument("--batch-size", type=int, default=256,
                   help="most texts in one forward batch (default: %(default)s)")
    add_model_options(p, env_model())
    p.set_defaults(run=run_eval)


def run_eval(args: argparse.Namespace) -> None:
    """``bgem3 eval``."""
    from transformers.utils import logging as hf_logging

    from bgem3.encoder import load_model
    from bgem3.evaluation import evaluate

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    model = load_model(model_name(args.model), device=args.device, dtype=args.dtype,
                       backend=args.backend)
    report = evaluate(model, args.data, split=args.split, k=args.k,
                      recall_at=args.recall_at, candidates=args.candidates,
                      weights=tuple(args.weights), tune=args.tune or args.tune_split is not None,
                      tune_split=args.tune_split, index=args.index, batch_size=args.batch_size)
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        print(report.table())
