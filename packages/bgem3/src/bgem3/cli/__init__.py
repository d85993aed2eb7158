"""The ``bgem3`` command line: index, search, encode, score and eval (also ``python -m bgem3``).

Examples::

    bgem3 index examples/corpus --out my-index
    bgem3 search my-index "where is the eiffel tower?" -k 5
    bgem3 encode "a text" "another text" --colbert > vectors.jsonl
    bgem3 score "what is bge-m3?" "BGE-M3 is an embedding model."
    bgem3 eval my-beir-dataset --split test --tune --json
    bgem3 mine-negatives train.jsonl --output mined.jsonl
    bgem3 finetune --model BAAI/bge-m3 --train-data mined.jsonl --output my-bge-m3

Each command group lives in its own module (``_index``: index and search, ``_encode``:
encode and score, ``_eval``, ``_train``: mine-negatives and finetune); ``_shared`` holds the
model options and the one-line error handling.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from bgem3.cli import _encode, _eval, _index, _serve, _train
from bgem3.cli._shared import DEFAULT_MODEL, CLIError, run_command
from bgem3.documents import TEXT_SUFFIXES

# Kept importable from here for code written against the single-module CLI.
_MOVED = (CLIError, DEFAULT_MODEL, TEXT_SUFFIXES)

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The parser of the whole command line, every command and flag.

    ``bgem3 --help`` prints it; a CLI reference can be generated from it. Parsing sets
    ``run`` to the function that runs the command.

    Returns:
        A fresh parser; defaults that come from the environment (``$BGEM3_MODEL``) are
        read now.

    Example:
        >>> args = build_parser().parse_args(["search", "my-index", "paris", "-k", "3"])
        >>> args.command, args.index, args.k, args.mode
        ('search', 'my-index', 3, 'hybrid')
    """
    parser = argparse.ArgumentParser(
        prog="bgem3", description="BGE-M3 dense, sparse and ColBERT retrieval from the shell.")
    commands = parser.add_subparsers(dest="command", required=True)
    for group in (_index, _encode, _eval, _train, _serve):
        group.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    Args:
        argv: The arguments after ``bgem3`` (default: ``sys.argv[1:]``).

    Returns:
        0 on success, 1 for an error the user can fix (printed as one line on stderr), 130
        when interrupted. Invalid flags exit with argparse's status 2.
    """
    return run_command(build_parser().parse_args(argv))
