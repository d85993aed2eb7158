"""HybridIndex at scale on synthetic corpora: build rate, bytes, query latency.

No model is needed: documents are seeded synthetic BGE-M3-shaped outputs (Zipf-distributed
token ids for the lexical weights, random unit vectors for dense and ColBERT), and queries
are noisy copies of random documents so that they match something.

Usage:
  python benchmarks/index.py                          # 10k and 100k documents
  python benchmarks/index.py --sizes 1000000 --colbert-dim 128 --doc-tokens 16
  python benchmarks/index.py --sizes 1000000 --colbert-dim 128 --doc-tokens 16 --dense-search hnsw
  python benchmarks/index.py ... --docs-per-cluster 100   # dense vectors in clusters, as real
                                                          # embeddings are (see clustered())

With ``--dense-search hnsw`` the dense candidates come from the HNSW graph; the script also
runs every query exactly on the same index and reports recall@10 of the hybrid results
(approximate top 10 against exact top 10).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from bgem3 import EncodeOutput, HybridIndex, SparseVector


@dataclass
class SyntheticModel:
    """What HybridIndex needs to know about a model when no text is encoded."""

    dense_dim: int
    colbert_dim: int
    vocab_size: int = 250002
    has_heads: bool = True
    name: str = "synthetic"
    fingerprint: str = "synthetic"

    def encode_documents(self, *args: object, **kwargs: object) -> EncodeOutput:
        raise NotImplementedError("synthetic outputs only: pass embeddings=")


def unit(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    x = rng.standard_normal(shape, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def clustered(rng: np.random.Generator, centroids: np.ndarray, n: int) -> np.ndarray:
    """Unit vectors around random centroids: cosine ~0.7 to their centroid, ~0.5 to each other.

    Real embeddings are not uniform on the sphere: documents on one subject lie close together.
    Uniform random vectors have no near neighbours beyond the query's own document, so ranks
    2-10 of an exact search are noise that an approximate search cannot be expected to match.
    """
    x = centroids[rng.integers(0, len(centroids), n)] + unit(rng, (n, centroids.shape[1]))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def documents(rng: np.random.Generator, n: int, m: SyntheticModel, tokens: int,
              centroids: np.ndarray | None = None) -> EncodeOutput:
    lengths = np.clip(rng.poisson(tokens, n), 2, None)
    sparse = []
    for length in lengths:
        ids = np.unique(np.minimum(rng.zipf(1.3, length) + 4, m.vocab_size - 1)).astype(np.int64)
        sparse.append(SparseVector(ids, rng.uniform(0.01, 0.35, ids.size).astype(np.float32)))
    flat = unit(rng, (int(lengths.sum()), m.colbert_dim)).astype(np.float16)
    colbert = np.split(flat, np.cumsum(lengths)[:-1])
    dense = unit(rng, (n, m.dense_dim)) if centroids is None else clustered(rng, centroids, n)
    return EncodeOutput(dense, sparse, colbert)


def queries(rng: np.random.Generator, docs: EncodeOutput, n: int) -> EncodeOutput:
    if docs.dense is None or docs.sparse is None or docs.colbert is None:
        raise ValueError("documents need all three outputs")
    picks = rng.integers(0, len(docs.sparse), n)
    dense = docs.dense[picks] + 0.5 * unit(rng, (n, docs.dense.shape[1]))
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    sparse = [SparseVector(docs.sparse[p].indices[:8], docs.sparse[p].values[:8]) for p in picks]
    colbert = [docs.colbert[p][:8].astype(np.float32) for p in picks]
    return EncodeOutput(dense.astype(np.float32), sparse, colbert)


def index_bytes(index: HybridIndex) -> dict[str, int]:
    snap = index.snapshot()
    sparse = snap.sparse
    out = {"dense": snap.dense.nbytes,
           "sparse": sparse.data.nbytes + sparse.indices.nbytes + sparse.indptr.nbytes}
    if snap.colbert is not None and snap.colbert_offsets is not None:
        out["colbert"] = snap.colbert.nbytes + snap.colbert_offsets.nbytes
    graph = index._graph
    if graph is not None:  # fp16 vectors and the level-0 links (2 m int32 per node)
        out["hnsw (est.)"] = len(graph) * (2 * graph.dim + 8 * graph.m)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--dense-dim", type=int, default=1024)
    parser.add_argument("--colbert-dim", type=int, default=1024)
    parser.add_argument("--doc-tokens", type=int, default=32, help="mean tokens per document")
    parser.add_argument("--dense-dtype", default="float32")
    parser.add_argument("--queries", type=int, default=128)
    parser.add_argument("--chunk", type=int, default=20000, help="documents per add() call")
    parser.add_argument("--dense-search", default="exact", choices=["exact", "hnsw", "auto"])
    parser.add_argument("--ef-search", type=int, default=128)
    parser.add_argument("--docs-per-cluster", type=int, default=0,
                        help="dense vectors around random centroids, this many documents per "
                             "centroid on average (0: uniform random unit vectors)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    model = SyntheticModel(args.dense_dim, args.colbert_dim)
    records = []
    layout = (f"clusters of ~{args.docs_per_cluster}" if args.docs_per_cluster
              else "uniform random")
    print(f"dense {args.dense_dim}-d {args.dense_dtype} ({layout}, {args.dense_search}), "
          f"ColBERT {args.colbert_dim}-d fp16, ~{args.doc_tokens} tokens/doc, "
          "candidates 100 per list, k=10")
    for size in (int(s) for s in args.sizes.split(",")):
        rng = np.random.default_rng(size)
        centroids = (unit(rng, (max(1, size // args.docs_per_cluster), args.dense_dim))
                     if args.docs_per_cluster else None)
        index = HybridIndex(model, dense_dtype=args.dense_dtype,
                            dense_search=args.dense_search, ef_search=args.ef_search)
        build = 0.0
        sample = None
        for start in range(0, size, args.chunk):
            n = min(args.chunk, size - start)
            docs = documents(rng, n, model, args.doc_tokens, centroids)
            sample = sample or docs
            t0 = time.perf_counter()
            index.add(None, ids=[str(start + i) for i in range(n)], embeddings=docs)
            build += time.perf_counter() - t0
        t0 = time.perf_counter()
        index.snapshot()  # the inverted index is built once after the writes
        refresh = time.perf_counter() - t0
        build += refresh
        assert sample is not None
        q = queries(rng, sample, args.queries)
        sizes = index_bytes(index)
        packed = index.snapshot().colbert
        stored = 0 if packed is None else int(np.prod(packed.shape))
        colbert_per_dim = sizes.get("colbert", 0) / max(1, stored)
        print(f"\n{size:,} docs: build {size / build:,.0f} docs/s ({build:.1f} s), "
              + ", ".join(f"{k} {v / 2**20:,.0f} MiB" for k, v in sizes.items())
              + f", ColBERT {colbert_per_dim:.2f} bytes/dim; "
              f"inverted index rebuilt after a write in {refresh:.2f} s")
        record = {"docs": size, "build_docs_per_s": size / build, "bytes": sizes,
                  "inverted_index_rebuild_s": refresh,
                  "colbert_bytes_per_dim": colbert_per_dim, "latency_ms": {}}
        for label, options in (("sparse", {"mode": "sparse", "rerank": False}),
                               ("dense", {"mode": "dense", "rerank": False}),
                               ("hybrid+rerank", {"mode": "hybrid", "rerank": True})):
            index.search_encoded(EncodeOutput(q.dense[:2], q.sparse[:2], q.colbert[:2]),  # type: ignore[index]
                                 **options)  # warm-up
            single = []
            for i in range(min(32, args.queries)):
                one = EncodeOutput(q.dense[i : i + 1], q.sparse[i : i + 1],  # type: ignore[index]
                                   q.colbert[i : i + 1])  # type: ignore[index]
                t0 = time.perf_counter()
                index.search_encoded(one, k=10, **options)
                single.append((time.perf_counter() - t0) * 1e3)
            t0 = time.perf_counter()
            index.search_encoded(q, k=10, **options)
            batched = (time.perf_counter() - t0) * 1e3 / args.queries
            print(f"  {label:<14} single query p50 {statistics.median(single):8.1f} ms   "
                  f"batched ({args.queries} queries/call) {batched:8.2f} ms/query")
            record["latency_ms"][label] = {"single_p50": statistics.median(single),
                                           "batched_per_query": batched}
        graph = index._graph
        if graph is not None:
            approximate = index.search_encoded(q, k=10)
            index._graph = None  # the same index, dense candidates by the exact scan
            exact = index.search_encoded(q, k=10)
            index._graph = graph
            recall = statistics.mean(
                len({h.id for h in a} & {h.id for h in e}) / max(1, len(e))
                for a, e in zip(approximate, exact, strict=True))
            record["recall_at_10_vs_exact"] = recall
            print(f"  hybrid+rerank recall@10 against exact dense candidates: {recall:.4f}")
        records.append(record)
        del index
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                         "records": records}, indent=2))


if __name__ == "__main__":
    main()
