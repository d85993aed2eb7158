"""``bgem3 index`` and ``bgem3 search``: build an index from files, search it."""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bgem3.cli._shared import (
    DEFAULT_MODEL,
    CLIError,
    Commands,
    add_model_options,
    env_model,
    load_model,
)
from bgem3.documents import CHUNK_WORDS, Document, load_documents
from bgem3.index.options import DEFAULT_SEARCH, FUSIONS, MODES

if TYPE_CHECKING:
    from bgem3 import Hit

__all__ = ["add_commands", "documents"]

SHOWN_HITS = 5
"""Hits ``bgem3 search`` prints unless ``-k`` says otherwise (a screenful, not a search default)."""

EMBEDDED_FUSIONS = tuple(f for f in FUSIONS if f != "dbsf")  # dbsf: the Qdrant backend only


def add_commands(commands: Commands) -> None:
    """Add ``index`` and ``search``."""
    p = commands.add_parser("index", help="index text, markdown or JSONL files")
    p.add_argument("inputs", nargs="+", help="files or directories (.txt .md .jsonl)")
    p.add_argument("--out", required=True, help="index directory to write")
    p.add_argument("--chunk-words", type=int, default=CHUNK_WORDS,
                   help="split long text files into chunks of about this many words")
    p.add_argument("--no-colbert", action="store_true", help="do not store ColBERT vectors")
    exists = p.add_mutually_exclusive_group()
    exists.add_argument("--overwrite", action="store_true",
                        help="replace the index at --out if there is one")
    exists.add_argument("--append", action="store_true",
                        help="add to (or update, by id) the index at --out")
    add_model_options(p, env_model())
    p.set_defaults(run=run_index)

    p = commands.add_parser("search", help="search an index")
    p.add_argument("index", help="index directory written by `bgem3 index`")
    p.add_argument("query", help="the query text")
    p.add_argument("-k", type=int, default=SHOWN_HITS, help="hits to show")
    p.add_argument("--mode", choices=MODES, default=DEFAULT_SEARCH.mode,
                   help="candidates from dense and sparse fused (hybrid), or one of them "
                        "alone (default: %(default)s)")
    p.add_argument("--fusion", choices=EMBEDDED_FUSIONS, default=DEFAULT_SEARCH.fusion,
                   help="how hybrid scores are combined: weighted average or reciprocal "
                        "rank fusion (default: %(default)s)")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="metadata filter: VALUE is JSON when it parses (2024, true, \"3\"), "
                        "else text; different keys must all match, one key given twice "
                        "matches either value")
    p.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    add_model_options(p, os.environ.get("BGEM3_MODEL"))  # unset: the index's model
    p.set_defaults(run=run_search)


def documents(inputs: Sequence[str], chunk_words: int) -> list[Document]:
    """The documents of the inputs (see :func:`bgem3.documents.load_documents`)."""
    if chunk_words < 1:
        raise CLIError("--chunk-words must be at least 1")
    return load_documents(inputs, chunk_words)


def run_index(args: argparse.Namespace) -> None:
    """``bgem3 index``."""
    from bgem3.index import HybridIndex, is_saved_index, read_manifest

    docs = documents(args.inputs, args.chunk_words)
    out = Path(args.out)
    existing = is_saved_index(out)
    if existing and not (args.overwrite or args.append):
        raise CLIError(f"{args.out} already holds an index: pass --overwrite to replace it or "
                       "--append to add to it")
    if args.append and existing and args.no_colbert and read_manifest(out)["store_colbert"]:
        raise CLIError(f"{args.out} stores ColBERT vectors, and an index keeps the outputs it "
                       "was made with: drop --no-colbert to add to it, or pass --overwrite "
                       "instead of --append to rebuild it without them")
    if args.append and existing:
        index = HybridIndex.load(out, load_model(args, _index_model(out)))
        before = len(index)
    else:
        index = HybridIndex(load_model(args), store_colbert=not args.no_colbert)
        before = 0
    index.add([d.text for d in docs], ids=[d.id for d in docs],
              metadata=[d.metadata for d in docs], show_progress=len(docs) > 64 or None)
    index.save(out)
    if args.append and existing:
        print(f"added {len(docs)} documents from {len(args.inputs)} input(s) to {args.out} "
              f"({len(index) - before} new, {len(index)} in the index)")
    else:
        print(f"indexed {len(index)} documents from {len(args.inputs)} input(s) into {args.out}"
              + (" (replacing the index that was there)" if existing else ""))


def run_search(args: argparse.Namespace) -> None:
    """``bgem3 search``."""
    from bgem3.index import HybridIndex

    root = Path(args.index)
    if not root.is_dir():
        raise CLIError(f"no index at {args.index} (make one with `bgem3 index`)")
    name = args.model or _index_model(root)
    index = HybridIndex.load(root, load_model(args, name))
    where: dict[str, list[Any]] = {}
    for item in args.filter:  # one key given twice: either value matches
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CLIError(f"--filter wants KEY=VALUE, got {item!r}")
        where.setdefault(key, []).append(_scalar(value))
    if not args.query.strip():
        raise CLIError("the query is empty")
    hits = index.search(args.query, k=args.k, mode=args.mode, fusion=args.fusion,
                        filter=where or None)
    if args.json:
        for rank, hit in enumerate(hits, start=1):
            print(json.dumps(_finite({"rank": rank, "id": hit.id, "score": hit.score,
                                      "scores": hit.scores, "text": hit.text,
                                      "metadata": hit.metadata}), ensure_ascii=False))
        return
    print(_table(hits))


def _index_model(root: Path) -> str:
    from bgem3.index import read_manifest

    return str(read_manifest(root).get("model") or DEFAULT_MODEL)


def _scalar(value: str) -> Any:
    """A filter value: JSON when it parses to a number, a bool or a "quoted string".

    ``year=2024``, ``draft=true``, ``code="3"``; anything else is the text as it is.
    """
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        return value
    return parsed if isinstance(parsed, (int, float, bool, str)) else value


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by ``None`` (valid JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _table(hits: Sequence[Hit]) -> str:
    if not hits:
        return "no hits"
    width = max(40, min(shutil.get_terminal_size((100, 20)).columns, 160) - 52)
    lines = [f"{'rank':>4}  {'score':>7}  {'dense':>6}  {'sparse':>6}  {'colbert':>7}  "
             f"{'id':<14}  text"]
    for rank, hit in enumerate(hits, start=1):
        text = " ".join((hit.text or "").split())
        snippet = text if len(text) <= width else text[: width - 1] + "…"
        scores = [hit.scores.get(m) for m in ("dense", "sparse", "colbert")]
        shown = [f"{s:.3f}" if s is not None else "-" for s in scores]
        ident = hit.id if len(hit.id) <= 14 else hit.id[:13] + "…"
        lines.append(f"{rank:>4}  {hit.score:>7.4f}  {shown[0]:>6}  {shown[1]:>6}  "
                     f"{shown[2]:>7}  {ident:<14}  {snippet}")
    return "\n".join(lines)
