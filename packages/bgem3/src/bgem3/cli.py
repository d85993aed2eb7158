"""The ``bgem3`` command line: index, search, encode, score and eval (also ``python -m bgem3``).

Examples::

    bgem3 index examples/corpus --out my-index
    bgem3 search my-index "where is the eiffel tower?" -k 5
    bgem3 encode "a text" "another text" --colbert > vectors.jsonl
    bgem3 score "what is bge-m3?" "BGE-M3 is an embedding model."
    bgem3 eval my-beir-dataset --split test --tune --json
    bgem3 mine-negatives train.jsonl --output mined.jsonl
    bgem3 finetune --model BAAI/bge-m3 --train-data mined.jsonl --output my-bge-m3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import sys
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bgem3.batching import clean_text

__all__ = ["main"]

DEFAULT_MODEL = "BAAI/bge-m3"
TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst")


class CLIError(Exception):
    """A problem the user can fix: printed as one line, exit status 1."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            args.run(args)
        sys.stdout.flush()
    except KeyboardInterrupt:
        print("bgem3: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`bgem3 encode ... | head`): not an error
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (CLIError, OSError, ValueError, TypeError, KeyError, ImportError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"bgem3: error: {message}", file=sys.stderr)
        hint = _hint(exc)
        if hint:
            print(f"bgem3: hint: {hint}", file=sys.stderr)
        return 1
    return 0


def _show_warning(message: Warning | str, category: type[Warning], filename: str,
                  lineno: int, file: Any = None, line: str | None = None) -> None:
    """Warnings as one line on stderr, without the library's source location."""
    print(f"bgem3: warning: {message}", file=sys.stderr)


def _hint(exc: BaseException) -> str | None:
    from bgem3.errors import CheckpointNotFoundError

    if isinstance(exc, CheckpointNotFoundError):
        return "pass --model /path/to/checkpoint or set BGEM3_MODEL to use a local checkpoint"
    return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bgem3", description="BGE-M3 dense, sparse and ColBERT retrieval from the shell.")
    commands = parser.add_subparsers(dest="command", required=True)

    def model_options(p: argparse.ArgumentParser, default: str | None) -> None:
        fallback = DEFAULT_MODEL if default else "the model that built the index"
        p.add_argument("--model", default=default,
                       help=f"hub id or checkpoint directory (default: $BGEM3_MODEL, else "
                            f"{fallback})")
        p.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: the best available)")
        p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"])

    env_model = os.environ.get("BGEM3_MODEL") or DEFAULT_MODEL

    p = commands.add_parser("index", help="index text, markdown or JSONL files")
    p.add_argument("inputs", nargs="+", help="files or directories (.txt .md .jsonl)")
    p.add_argument("--out", required=True, help="index directory to write")
    p.add_argument("--chunk-words", type=int, default=200,
                   help="split long text files into chunks of about this many words")
    p.add_argument("--no-colbert", action="store_true", help="do not store ColBERT vectors")
    exists = p.add_mutually_exclusive_group()
    exists.add_argument("--overwrite", action="store_true",
                        help="replace the index at --out if there is one")
    exists.add_argument("--append", action="store_true",
                        help="add to (or update, by id) the index at --out")
    model_options(p, env_model)
    p.set_defaults(run=_index)

    p = commands.add_parser("search", help="search an index")
    p.add_argument("index", help="index directory written by `bgem3 index`")
    p.add_argument("query")
    p.add_argument("-k", type=int, default=5, help="hits to show")
    p.add_argument("--mode", choices=["hybrid", "dense", "sparse"], default="hybrid")
    p.add_argument("--fusion", choices=["weighted", "rrf"], default="weighted")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="metadata filter: VALUE is JSON when it parses (2024, true, \"3\"), "
                        "else text; different keys must all match, one key given twice "
                        "matches either value")
    p.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    model_options(p, os.environ.get("BGEM3_MODEL"))
    p.set_defaults(run=_search)

    p = commands.add_parser("encode", help="encode texts to JSON lines, or files to Parquet")
    p.add_argument("texts", nargs="*", metavar="TEXT_OR_INPUT",
                   help="texts; with --out *.parquet: input files or directories (.txt .md "
                        ".jsonl, read as `bgem3 index` reads them)")
    p.add_argument("--input", help="a text file (one text per line) or JSONL with 'text'")
    p.add_argument("--queries", action="store_true", help="encode as queries (max 512 tokens)")
    p.add_argument("--colbert", action="store_true", help="also write ColBERT vectors")
    p.add_argument("--out", help="output file (default: standard output); *.parquet writes "
                                 "bgem3.arrow's schema (ids, texts, vectors), which "
                                 "add_parquet loads")
    p.add_argument("--chunk-words", type=int, default=200,
                   help="with Parquet output: chunk long text files as `bgem3 index` does")
    p.add_argument("--colbert-dtype", choices=["float16", "float32"], default="float16",
                   help="ColBERT storage in Parquet (default: float16)")
    model_options(p, env_model)
    p.set_defaults(run=_encode)

    p = commands.add_parser("score", help="FlagEmbedding's five compute_score modes")
    p.add_argument("query")
    p.add_argument("passages", nargs="+")
    p.add_argument("--weights", type=float, nargs=3, default=(0.4, 0.2, 0.4),
                   metavar=("DENSE", "SPARSE", "COLBERT"))
    model_options(p, env_model)
    p.set_defaults(run=_score)

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
    p.add_argument("--candidates", type=int, default=100,
                   help="documents from each of the dense and sparse lists (default: 100)")
    p.add_argument("--weights", type=float, nargs=3, default=(0.4, 0.2, 0.4),
                   metavar=("DENSE", "SPARSE", "COLBERT"))
    p.add_argument("--index", help="directory to save the corpus encoding in, or reuse it from")
    p.add_argument("--batch-size", type=int, default=256)
    model_options(p, env_model)
    p.set_defaults(run=_eval)

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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    model_options(p, env_model)
    p.set_defaults(run=_mine)

    p = commands.add_parser("finetune", help="fine-tune dense, sparse and ColBERT together "
                                             "(transformers' Trainer; torchrun for several "
                                             "processes)")
    p.add_argument("--train-data", nargs="+", required=True, metavar="FILE_OR_DIR",
                   help="FlagEmbedding's JSONL: query, pos, neg [, pos_scores, neg_scores, "
                        "prompt]")
    p.add_argument("--output", required=True, help="directory of the fine-tuned checkpoint")
    p.add_argument("--heads", default="dense,sparse,colbert",
                   help="heads to train, comma separated; the others stay as they are")
    p.add_argument("--self-distill", action=argparse.BooleanOptionalAction, default=True,
                   help="self-knowledge distillation from the ensemble (default: on)")
    p.add_argument("--self-distill-start", type=int, default=0, metavar="STEP",
                   help="first optimizer step with self-distillation")
    p.add_argument("--init-heads", action="store_true",
                   help="create the sparse and ColBERT heads (a backbone without them)")
    p.add_argument("--colbert-dim", type=int, help="width of a created ColBERT head")
    p.add_argument("--group-size", type=int, default=8,
                   help="passages per query: 1 positive + negatives (default: 8)")
    p.add_argument("--temperature", type=float, default=0.02)
    p.add_argument("--learning-rate", type=float, default=1e-5)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    p.add_argument("--batch-size", type=int, default=16, help="queries per batch (per device)")
    p.add_argument("--batch-tokens", type=int,
                   help="padded passage tokens per batch: long texts get fewer queries "
                        "(default: batch size x group size x passage max length; 0: off)")
    p.add_argument("--query-max-length", type=int, default=512)
    p.add_argument("--passage-max-length", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kd-loss", choices=["kl_div", "m3_kd_loss"], default="kl_div",
                   help="use of the data's teacher scores (default: kl_div)")
    p.add_argument("--no-in-batch-negatives", dest="in_batch_negatives", action="store_false",
                   help="score each query against its own group only")
    p.add_argument("--freeze-backbone", action="store_true", help="train the heads alone")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute activations in the backward pass (less memory)")
    p.add_argument("--grad-cache", type=int, metavar="TEXTS",
                   help="gradient caching: encode a batch this many texts at a time "
                        "(large batches in small memory, same gradients)")
    p.add_argument("--gradient-accumulation-steps", type=int, default=1)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--logging-steps", type=int, default=10)
    p.add_argument("--save-steps", type=int, default=500)
    p.add_argument("--query-instruction", help="prepended to queries without a 'prompt'")
    p.add_argument("--bf16", action="store_true", help="bfloat16 mixed precision")
    p.add_argument("--fp16", action="store_true", help="float16 mixed precision (CUDA)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the last checkpoint in OUTPUT/checkpoints")
    p.add_argument("--no-progress", dest="show_progress", action="store_false")
    p.add_argument("--model", default=env_model,
                   help=f"hub id or checkpoint directory (default: $BGEM3_MODEL, else "
                        f"{DEFAULT_MODEL})")
    p.add_argument("--device", choices=["cpu"], help="train on the CPU even if a GPU is there")
    p.set_defaults(run=_finetune)
    return parser


def _model(args: argparse.Namespace, name: str | None = None) -> Any:
    from transformers.utils import logging as hf_logging

    from bgem3.encoder import BGEM3

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # no weight-loading bar
    return BGEM3(_model_name(name or args.model), device=args.device, dtype=args.dtype)


def _model_name(name: str) -> str:
    """A local checkpoint as an absolute path (an index records it); hub ids unchanged."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name


# ---------------------------------------------------------------------------- index
def _index(args: argparse.Namespace) -> None:
    from bgem3.index import HybridIndex

    records = _documents(args.inputs, args.chunk_words)
    ids = [r["id"] for r in records]
    out = Path(args.out)
    existing = out.is_dir() and (out / "CURRENT").is_file()
    if existing and not (args.overwrite or args.append):
        raise CLIError(f"{args.out} already holds an index: pass --overwrite to replace it or "
                       "--append to add to it")
    if args.append and existing:
        index = HybridIndex.load(out, _model(args, _index_model(out)))
        before = len(index)
    else:
        index = HybridIndex(_model(args), store_colbert=not args.no_colbert)
        before = 0
    index.add([r["text"] for r in records], ids=ids, metadata=[r["metadata"] for r in records],
              show_progress=len(records) > 64 or None)
    index.save(out)
    if args.append and existing:
        print(f"added {len(records)} documents from {len(args.inputs)} input(s) to {args.out} "
              f"({len(index) - before} new, {len(index)} in the index)")
    else:
        print(f"indexed {len(index)} documents from {len(args.inputs)} input(s) into {args.out}"
              + (" (replacing the index that was there)" if existing else ""))


def _documents(inputs: Sequence[str], chunk_words: int) -> list[dict[str, Any]]:
    """The records of the inputs, at least one, with unique ids."""
    if chunk_words < 1:
        raise CLIError("--chunk-words must be at least 1")
    records = list(_records(inputs, chunk_words))
    if not records:
        raise CLIError("no documents found in the inputs (.txt, .md or .jsonl files)")
    duplicates = sorted(i for i, n in Counter(r["id"] for r in records).items() if n > 1)
    if duplicates:
        raise CLIError(f"duplicate document ids: {duplicates[:5]}")
    return records


def _records(inputs: Sequence[str], chunk_words: int) -> Iterator[dict[str, Any]]:
    for name in inputs:
        path = Path(name)
        if not path.exists():
            raise CLIError(f"no such file or directory: {name}")
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if file.suffix == ".jsonl":
                yield from _jsonl(file)
            elif file.suffix in TEXT_SUFFIXES or (not path.is_dir() and not file.suffix):
                yield from _chunks(file, chunk_words)


def _read(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CLIError(f"{file} is not UTF-8 text") from exc


def _jsonl(file: Path) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(_read(file).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CLIError(f"{file}:{number}: not JSON ({exc.msg})") from exc
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise CLIError(f"{file}:{number}: each line needs a 'text' string")
        metadata = row.get("metadata")
        if metadata is None:
            metadata = {k: v for k, v in row.items() if k not in ("id", "text")}
        if not isinstance(metadata, dict):
            raise CLIError(f"{file}:{number}: 'metadata' must be an object")
        doc_id = row.get("id")
        if doc_id is None:
            doc_id = f"{file.name}:{number}"
        elif isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)) or doc_id == "":
            raise CLIError(f"{file}:{number}: 'id' must be a string or an integer, got "
                           f"{doc_id!r}")
        # the file path goes to "source" unless the record has its own
        yield {"id": clean_text(str(doc_id)), "text": row["text"],
               "metadata": {"source": clean_text(str(file)), **metadata}}


def _chunks(file: Path, chunk_words: int) -> Iterator[dict[str, Any]]:
    """Paragraphs packed into chunks of about ``chunk_words`` words (long ones split)."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", _read(file)) if p.strip()]
    chunk: list[str] = []
    count = 0
    number = 0

    def emit() -> dict[str, Any]:
        return {"id": clean_text(f"{file}#{number}"), "text": "\n\n".join(chunk),
                "metadata": {"source": clean_text(str(file)), "chunk": number}}

    for paragraph in paragraphs:
        words = paragraph.split()
        for start in range(0, len(words), chunk_words):
            piece = words[start : start + chunk_words]
            if chunk and count + len(piece) > chunk_words:
                yield emit()
                number += 1
                chunk, count = [], 0
            chunk.append(" ".join(piece) if len(words) > chunk_words else paragraph)
            count += len(piece)
    if chunk:
        yield emit()


# ---------------------------------------------------------------------------- search
def _search(args: argparse.Namespace) -> None:
    from bgem3.index import HybridIndex

    root = Path(args.index)
    if not root.is_dir():
        raise CLIError(f"no index at {args.index} (make one with `bgem3 index`)")
    name = args.model or _index_model(root)
    index = HybridIndex.load(root, _model(args, name))
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
    from bgem3.index._persist import read_manifest

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


def _table(hits: Sequence[Any]) -> str:
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


# ---------------------------------------------------------------------------- encode
def _encode(args: argparse.Namespace) -> None:
    if args.out and args.out.endswith(".parquet"):
        _encode_parquet(args)
        return
    texts = list(args.texts)
    if args.input:
        file = Path(args.input)
        if not file.is_file():
            raise CLIError(f"no such file: {args.input}")
        if file.suffix == ".jsonl":
            texts += [r["text"] for r in _jsonl(file)]
        else:
            texts += [line for line in _read(file).splitlines() if line.strip()]
    if not texts:
        raise CLIError("nothing to encode: give texts or --input FILE")
    model = _model(args)
    encode = model.encode_queries if args.queries else model.encode_documents
    out = encode(texts, dense=True, sparse=True, colbert=args.colbert,
                 show_progress=len(texts) > 64 or None)
    tokens = model.decode_sparse(out.sparse)
    stream = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout  # noqa: SIM115
    try:
        for i, text in enumerate(texts):
            row: dict[str, Any] = {"text": clean_text(text), "dense": out.dense[i].tolist(),
                                   "sparse": tokens[i]}
            if args.colbert:
                row["colbert"] = out.colbert[i].tolist()
            stream.write(json.dumps(row, ensure_ascii=False) + "\n")
    finally:
        if args.out:
            stream.close()


def _encode_parquet(args: argparse.Namespace) -> None:
    import pyarrow.parquet as pq

    from bgem3.arrow import to_arrow

    inputs = list(args.texts) + ([args.input] if args.input else [])
    not_files = [i for i in inputs if not Path(i).exists()]
    if not inputs or not_files:
        raise CLIError("with --out *.parquet, give input files or directories"
                       + (f" (no such file: {not_files[0]})" if not_files else ""))
    records = _documents(inputs, args.chunk_words)
    ids = [r["id"] for r in records]
    texts = [r["text"] for r in records]
    model = _model(args)
    encode = model.encode_queries if args.queries else model.encode_documents
    out = encode(texts, dense=True, sparse=True, colbert=args.colbert,
                 show_progress=len(texts) > 64 or None)
    table = to_arrow(out, ids, texts=[clean_text(t) for t in texts], model=model,
                     colbert_dtype=args.colbert_dtype)
    target = Path(args.out)
    partial = target.with_name(f".{target.name}.partial")
    pq.write_table(table, partial)
    os.replace(partial, target)  # a complete file or none
    print(f"encoded {len(texts)} texts into {args.out}")


# ---------------------------------------------------------------------------- score
def _score(args: argparse.Namespace) -> None:
    model = _model(args)
    scores = model.compute_score([(args.query, p) for p in args.passages],
                                 weights=tuple(args.weights))
    modes = list(scores)
    print(f"{'passage':<40}  " + "  ".join(f"{m:>20}" for m in modes))
    for i, passage in enumerate(args.passages):
        text = " ".join(passage.split())
        text = text if len(text) <= 40 else text[:39] + "…"
        print(f"{text:<40}  " + "  ".join(f"{scores[m][i]:>20.4f}" for m in modes))


# ---------------------------------------------------------------------------- eval
def _eval(args: argparse.Namespace) -> None:
    from transformers.utils import logging as hf_logging

    from bgem3.evaluation import evaluate

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    report = evaluate(args.model, args.data, split=args.split, k=args.k,
                      recall_at=args.recall_at, candidates=args.candidates,
                      weights=tuple(args.weights), tune=args.tune or args.tune_split is not None,
                      tune_split=args.tune_split, index=args.index, batch_size=args.batch_size,
                      device=args.device, dtype=args.dtype)
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        print(report.table())


# ---------------------------------------------------------------------------- training
def _mine(args: argparse.Namespace) -> None:
    import warnings

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


def _finetune(args: argparse.Namespace) -> None:
    import warnings

    from bgem3.train import FinetuneSettings, finetune

    settings = FinetuneSettings(
        model=args.model, train_data=list(args.train_data), output=args.output,
        heads=[h.strip() for h in args.heads.split(",") if h.strip()],
        self_distill=args.self_distill, self_distill_start=args.self_distill_start,
        init_heads=args.init_heads, colbert_dim=args.colbert_dim, group_size=args.group_size,
        temperature=args.temperature, learning_rate=args.learning_rate, epochs=args.epochs,
        max_steps=args.max_steps, batch_size=args.batch_size, batch_tokens=args.batch_tokens,
        query_max_length=args.query_max_length, passage_max_length=args.passage_max_length,
        seed=args.seed, kd_loss=args.kd_loss, in_batch_negatives=args.in_batch_negatives,
        freeze_backbone=args.freeze_backbone,
        gradient_checkpointing=args.gradient_checkpointing, grad_cache=args.grad_cache,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        warmup_ratio=args.warmup_ratio, weight_decay=args.weight_decay,
        logging_steps=args.logging_steps, save_steps=args.save_steps,
        query_instruction=args.query_instruction, device=args.device, bf16=args.bf16,
        fp16=args.fp16, resume=args.resume, show_progress=args.show_progress)
    with warnings.catch_warnings():
        warnings.filterwarnings("always", message=".*not trained.*", category=UserWarning)
        output = finetune(settings)
    print(f"fine-tuned checkpoint in {output}")
