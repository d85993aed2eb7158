"""``bgem3 mine-negatives`` and ``bgem3 finetune`` (flags generated from the settings)."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from typing import Any

from bgem3.cli._fields import add_field_flags, from_args
from bgem3.cli._shared import DEFAULT_MODEL, CLIError, Commands, add_model_options, env_model

__all__ = ["add_commands"]


def add_commands(commands: Commands) -> None:
    """Add ``mine-negatives`` and ``finetune``."""
    from bgem3.train import FinetuneSettings

    p = commands.add_parser("mine-negatives", help="add hard negatives to training data "
                                                   "(FlagEmbedding's JSONL)")
    p.add_argument("train_data", nargs="+", metavar="TRAIN.jsonl",
                   help="training files or directories")
    p.add_argument("--output", required=True, help="JSONL to write")
    p.add_argument("--range", default="10-210", metavar="START-END",
                   help="retrieval ranks to draw negatives from (default: 10-210)")
    p.add_argument("--num", type=int, default=15, help="negatives per query (default: 15)")
    p.add_argument("--mode", choices=["dense", "hybrid"], default="dense",
                   help="retrieval used for mining (default: dense)")
    p.add_argument("--candidate-pool", help="JSONL with a 'text' per line to mine from "
                                            "(default: every passage of the training data)")
    p.add_argument("--query-instruction", help="prepended to queries without a 'prompt'")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the negatives drawn from the range (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=256,
                   help="most texts in one forward batch (default: %(default)s)")
    add_model_options(p, env_model())
    p.set_defaults(run=run_mine)

    p = commands.add_parser("finetune", help="fine-tune dense, sparse and ColBERT together "
                                             "(transformers' Trainer; torchrun for several "
                                             "processes)")
    add_field_flags(p, FinetuneSettings, _finetune_flags())
    p.set_defaults(run=run_finetune)


def _finetune_flags() -> dict[str, dict[str, Any]]:
    """How some settings look on the command line (what the fields cannot say)."""
    return {
        "model": {"default": env_model(),
                  "help": f"hub id or checkpoint directory (default: $BGEM3_MODEL, else "
                          f"{DEFAULT_MODEL})"},
        # one comma-separated argument, as before; FinetuneSettings.check() names bad heads
        "heads": {"type": _comma_list, "nargs": None, "choices": None, "metavar": "HEAD,..."},
        "show_progress": {"aliases": ["--progress"]},  # --no-progress, as before
    }


def _comma_list(value: str) -> list[str]:
    """``"dense,colbert"`` as ``["dense", "colbert"]``."""
    return [item.strip() for item in value.split(",") if item.strip()]


def run_mine(args: argparse.Namespace) -> None:
    """``bgem3 mine-negatives``."""
    from bgem3.encoder import load_model
    from bgem3.train import mine_negatives

    start, sep, end = args.range.partition("-")
    if not sep or not start.isdigit() or not end.isdigit():
        raise CLIError(f"--range wants START-END (e.g. 10-210), got {args.range!r}")
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        report = mine_negatives(args.train_data, model, args.output,
                                rank_range=(int(start), int(end)), num=args.num, mode=args.mode,
                                candidate_pool=args.candidate_pool,
                                query_instruction=args.query_instruction, seed=args.seed,
                                batch_size=args.batch_size)
    for warning in caught:
        print(f"bgem3: warning: {warning.message}", file=sys.stderr)
    print(f"mined {report.negatives:.1f} negatives per query for {report.queries} queries "
          f"from {report.corpus} passages into {report.output}"
          + (f" ({report.short} queries got fewer than {args.num})" if report.short else ""))


class _WarningLines(logging.Handler):
    """The training's logged warnings as the command's one-line warnings.

    Its errors are left out: each is also the message of the exception that ends the
    command, which prints it once as ``bgem3: error: ...``.
    """

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.ERROR:
            print(f"bgem3: warning: {record.getMessage()}", file=sys.stderr)


def run_finetune(args: argparse.Namespace) -> None:
    """``bgem3 finetune``."""
    from bgem3.train import FinetuneSettings, TrainingDivergedError, finetune

    settings = from_args(FinetuneSettings, args)
    handler = _WarningLines(logging.WARNING)
    logging.getLogger("bgem3.train").addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("always", message=".*not trained.*", category=UserWarning)
            output = finetune(settings)
    except TrainingDivergedError as exc:  # a FloatingPointError: one line, status 1
        raise CLIError(str(exc)) from exc
    finally:
        logging.getLogger("bgem3.train").removeHandler(handler)
    print(f"fine-tuned checkpoint in {output}")
