"""``bgem3 encode`` and ``bgem3 score``: vectors and FlagEmbedding's scores of texts."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from bgem3.batching import clean_text
from bgem3.cli._index import documents
from bgem3.cli._shared import CLIError, Commands, add_model_options, env_model, load_model
from bgem3.documents import CHUNK_WORDS, read_records
from bgem3.index.options import DEFAULT_SEARCH

__all__ = ["add_commands"]


def add_commands(commands: Commands) -> None:
    """Add ``encode`` and ``score``."""
    p = commands.add_parser("encode", help="encode texts to JSON lines, or files to Parquet")
    p.add_argument("texts", nargs="*", metavar="TEXT_OR_INPUT",
                   help="texts; with --out FILE.parquet: input files or directories (.txt .md "
                        ".jsonl, read as `bgem3 index` reads them)")
    p.add_argument("--input", help="a text file (one text per line) or JSONL with 'text'")
    p.add_argument("--queries", action="store_true", help="encode as queries (max 512 tokens)")
    p.add_argument("--colbert", action="store_true", help="also write ColBERT vectors")
    p.add_argument("--out", help="output file (default: standard output); FILE.parquet writes "
                                 "bgem3.arrow's schema (ids, texts, vectors), which "
                                 "add_parquet loads")
    p.add_argument("--chunk-words", type=int, default=CHUNK_WORDS,
                   help="with Parquet output: chunk long text files as `bgem3 index` does")
    p.add_argument("--colbert-dtype", choices=["float16", "float32"], default="float16",
                   help="ColBERT storage in Parquet (default: float16)")
    add_model_options(p, env_model())
    p.set_defaults(run=run_encode)

    p = commands.add_parser("score", help="FlagEmbedding's five compute_score modes")
    p.add_argument("query", help="the query text")
    p.add_argument("passages", nargs="+", help="the passages to score against the query")
    p.add_argument("--weights", type=float, nargs=3, default=DEFAULT_SEARCH.weights,
                   metavar=("DENSE", "SPARSE", "COLBERT"),
                   help="weights of the fused scores (default: %(default)s)")
    add_model_options(p, env_model())
    p.set_defaults(run=run_score)


def run_encode(args: argparse.Namespace) -> None:
    """``bgem3 encode``."""
    if args.out and args.out.endswith(".parquet"):
        _encode_parquet(args)
        return
    texts = list(args.texts)
    if args.input:
        file = Path(args.input)
        if not file.is_file():
            raise CLIError(f"no such file: {args.input}")
        if file.suffix == ".jsonl":
            texts += [d.text for d in read_records(file)]
        else:
            texts += [line for line in _read_text(file).splitlines() if line.strip()]
    if not texts:
        raise CLIError("nothing to encode: give texts or --input FILE")
    model = load_model(args)
    encode = model.encode_queries if args.queries else model.encode_documents
    out = encode(texts, dense=True, sparse=True, colbert=args.colbert,
                 show_progress=len(texts) > 64 or None)
    tokens = model.decode_sparse(out.sparse)  # type: ignore[arg-type]  # sparse=True
    stream = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout  # noqa: SIM115
    try:
        for i, text in enumerate(texts):
            row: dict[str, Any] = {"text": clean_text(text),
                                   "dense": out.dense[i].tolist(),  # type: ignore[index]
                                   "sparse": tokens[i]}
            if args.colbert:
                row["colbert"] = out.colbert[i].tolist()  # type: ignore[index]
            stream.write(json.dumps(row, ensure_ascii=False) + "\n")
    finally:
        if args.out:
            stream.close()


def _read_text(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CLIError(f"{file} is not UTF-8 text") from exc


def _encode_parquet(args: argparse.Namespace) -> None:
    from bgem3.arrow import to_arrow

    inputs = list(args.texts) + ([args.input] if args.input else [])
    not_files = [i for i in inputs if not Path(i).exists()]
    if not inputs or not_files:
        raise CLIError("with --out *.parquet, give input files or directories"
                       + (f" (no such file: {not_files[0]})" if not_files else ""))
    target = Path(args.out)
    if target.is_dir():
        raise CLIError(f"--out {args.out} is a directory: give a file name ending in .parquet")
    if not target.parent.is_dir():
        raise CLIError(f"cannot write {args.out}: no directory {target.parent}")
    docs = documents(inputs, args.chunk_words)
    texts = [d.text for d in docs]
    model = load_model(args)
    encode = model.encode_queries if args.queries else model.encode_documents
    out = encode(texts, dense=True, sparse=True, colbert=args.colbert,
                 show_progress=len(texts) > 64 or None)
    table = to_arrow(out, [d.id for d in docs], texts=[clean_text(t) for t in texts],
                     model=model, colbert_dtype=args.colbert_dtype)
    _write_atomically(table, target, args.out)
    print(f"encoded {len(texts)} texts into {args.out}")


def _write_atomically(table: Any, target: Path, shown: str) -> None:
    """Write ``table`` to a hidden file beside ``target``, then rename: all of it or nothing.

    Errors name ``shown`` (the path the user gave), never the hidden file, which is removed.
    """
    import pyarrow.parquet as pq

    # short enough for any name the target may have, and this process's own
    partial = target.with_name(f".{target.name[:100]}.{os.getpid()}.partial")
    try:
        pq.write_table(table, partial)
        os.replace(partial, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        reason = (exc.strerror or str(exc)).replace(str(partial), shown)
        raise CLIError(f"cannot write {shown}: {reason}") from exc


def run_score(args: argparse.Namespace) -> None:
    """``bgem3 score``."""
    model = load_model(args)
    scores = model.compute_score([(args.query, p) for p in args.passages],
                                 weights=tuple(args.weights))
    modes = list(scores)
    print(f"{'passage':<40}  " + "  ".join(f"{m:>20}" for m in modes))
    for i, passage in enumerate(args.passages):
        text = " ".join(passage.split())
        text = text if len(text) <= 40 else text[:39] + "…"
        print(f"{text:<40}  " + "  ".join(f"{scores[m][i]:>20.4f}" for m in modes))
