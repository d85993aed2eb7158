"""Scale-out costs: in-process encoding vs Ray Data actors, output volume, bulk-load rates.

Measured in one run on the same passages and checkpoint:

- in-process ``encode_documents`` with T threads vs ``bgem3.ray.encode_dataset`` with one actor
  of T threads: Ray's efficiency (in-process time over Ray's steady-state time, the actor's
  start excluded and reported apart as a fixed cost, with the time to the first output);
- 1, 2, ... actors of one thread each, up to the machine's cores;
- bytes per passage of each Parquet column (dense, sparse, ColBERT, ...), as written;
- ``add_parquet`` rows/s into the embedded index and into Qdrant (local mode), with and
  without ColBERT.

    python benchmarks/scale_out.py --passages 2000 --json benchmarks/results/scale-out-cpu.json

The default checkpoint is a seeded random 6 x 384 model with both heads (``bgem3.testing``);
``--model`` takes any checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import bgem3
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from bgem3.arrow import to_arrow
from bgem3.testing import build_tiny_checkpoint, random_texts


def _ray_run(ray, dataset, model: str, actors: int, threads: int, colbert: bool,  # type: ignore[no-untyped-def]
             rows_per_call: int) -> tuple[float, float, list]:
    import bgem3.ray

    started = time.perf_counter()
    first = None
    tables = []
    vectors = bgem3.ray.encode_dataset(dataset, model, colbert=colbert, num_actors=actors,
                                       threads=threads, device="cpu", num_cpus=threads,
                                       rows_per_call=rows_per_call, tasks_per_actor=1)
    for batch in vectors.iter_batches(batch_format="pyarrow", batch_size=None):
        if first is None:
            first = time.perf_counter() - started
        tables.append(batch)
    return time.perf_counter() - started, first or 0.0, tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint (default: a random 6 x 384 one)")
    parser.add_argument("--passages", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-actors", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--colbert", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--rows-per-call", type=int, default=1024,
                        help="rows per actor call (encode_dataset's default); also the block size")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import ray

    work = Path(tempfile.mkdtemp(prefix="bgem3-scale-"))
    model_path = args.model or str(build_tiny_checkpoint(
        work / "model", hidden_size=384, num_layers=6, num_heads=6, initializer_range=0.1))
    texts = random_texts(args.passages, min_words=8, max_words=200, seed=3, log_uniform=True)
    ids = [f"p{i}" for i in range(len(texts))]
    record: dict = {"passages": len(texts), "threads": args.threads, "colbert": args.colbert,
                    "rows_per_call": args.rows_per_call,
                    "machine": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "torch": torch.__version__, "ray": ray.__version__}

    torch.set_num_threads(args.threads)
    model = bgem3.BGEM3(model_path, device="cpu")
    model.encode_documents(texts[:16], sparse=True, colbert=args.colbert)  # warm-up
    started = time.perf_counter()
    out = model.encode_documents(texts, dense=True, sparse=True, colbert=args.colbert)
    in_process = time.perf_counter() - started
    tokens = int(out.tokens.sum()) if out.tokens is not None else 0
    record["in_process_s"] = round(in_process, 2)
    record["tokens"] = tokens
    print(f"in-process, {args.threads} thread(s): {in_process:.1f} s, "
          f"{len(texts) / in_process:.1f} passages/s, {tokens / in_process:.0f} tokens/s")

    table = to_arrow(out, ids, texts=texts, model=model, colbert_dtype="float16")
    pq.write_table(table, work / "vectors.parquet")
    meta = pq.ParquetFile(work / "vectors.parquet").metadata
    sizes: dict[str, int] = {}
    for g in range(meta.num_row_groups):
        for c in range(meta.num_columns):
            column = meta.row_group(g).column(c)
            name = column.path_in_schema.split(".")[0]
            sizes[name] = sizes.get(name, 0) + column.total_compressed_size
    record["bytes_per_passage"] = {k: round(v / len(texts), 1) for k, v in sizes.items()}
    print("Parquet bytes per passage:", record["bytes_per_passage"])

    os.environ.setdefault("RAY_worker_niceness", "0")  # as in-process work: not reniced
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, configure_logging=False,
             log_to_driver=False, _node_ip_address="127.0.0.1")
    ray.data.DataContext.get_current().enable_progress_bars = False
    # blocks of rows_per_call rows, as a Parquet read with row groups of that size would give:
    # one block feeds one actor at a time, so a single block would leave the others idle
    source = pa.table({"id": ids, "text": texts})
    dataset = ray.data.from_arrow([source.slice(start, args.rows_per_call)
                                   for start in range(0, len(texts), args.rows_per_call)])
    runs = {}
    actors = 1
    while actors <= args.max_actors:
        total, first, _ = _ray_run(ray, dataset, model_path, actors, args.threads if actors == 1
                                   else 1, args.colbert, args.rows_per_call)
        runs[actors] = {"total_s": round(total, 2), "first_output_s": round(first, 2)}
        print(f"Ray, {actors} actor(s): {total:.1f} s in all, first output after {first:.1f} s")
        actors *= 2
    # the fixed cost of an actor: start it and load the model, on a tiny input
    fixed, _, _ = _ray_run(ray, dataset.limit(1), model_path, 1, args.threads, args.colbert, 1)
    record["actor_start_s"] = round(fixed, 2)
    steady = runs[1]["total_s"] - fixed
    record["ray"] = runs
    record["ray_efficiency"] = round(in_process / steady, 3) if steady > 0 else None
    print(f"actor start + model load: {fixed:.1f} s; Ray efficiency at equal threads "
          f"(steady state): {record['ray_efficiency']}")
    ray.shutdown()

    from qdrant_client import QdrantClient

    for colbert in sorted({False, args.colbert}):
        suffix = "_colbert" if colbert else ""
        indexes = {"embedded": bgem3.HybridIndex(model, store_colbert=colbert),
                   "qdrant_local": bgem3.index.QdrantHybridIndex(
                       model, QdrantClient(":memory:"), store_colbert=colbert)}
        for name, index in indexes.items():
            started = time.perf_counter()
            index.add_parquet(work / "vectors.parquet")
            rate = len(texts) / (time.perf_counter() - started)
            record[f"add_parquet_{name}{suffix}_rows_s"] = round(rate)
            print(f"add_parquet into {name} ({'with' if colbert else 'without'} ColBERT): "
                  f"{rate:.0f} rows/s")
    if args.json:
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
