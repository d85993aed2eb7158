"""What the shared output cache saves when a vector store embeds dense and sparse separately.

LangChain's ``QdrantVectorStore`` in hybrid mode (and LlamaIndex's Qdrant store) call the
dense and the sparse embeddings one after the other on the same texts. This times
indexing a corpus that way with the cache (the model runs once per text) and without it
(``max_items=0``: twice), alternating A/B, median of 3.

Usage:
  python benchmarks/adapters.py                      # tiny seeded 6x384 checkpoint
  python benchmarks/adapters.py --model BAAI/bge-m3 --texts 512
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="hub id or path (default: a tiny 6x384 checkpoint)")
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    from bgem3.shared import output_cache, shared_model
    from bgem3.testing import build_tiny_checkpoint, random_texts
    from langchain_bgem3 import BGEM3Embeddings, BGEM3SparseEmbeddings
    from langchain_qdrant import QdrantVectorStore, RetrievalMode

    path = args.model
    if path is None:
        cache_dir = ROOT / ".cache" / "bench-6x384"
        if not (cache_dir / "config.json").exists():
            build_tiny_checkpoint(cache_dir, hidden_size=384, num_layers=6, num_heads=12,
                                  initializer_range=0.1, seed=0)
        path = str(cache_dir)
    model = shared_model(path, device="cpu")
    cache = output_cache(model)
    dense, sparse = BGEM3Embeddings(model=model), BGEM3SparseEmbeddings(model=model)

    def index(texts: list[str], keep: int) -> tuple[float, int]:
        cache.clear()
        cache.max_items = keep
        misses = cache.misses
        start = time.perf_counter()
        QdrantVectorStore.from_texts(texts, dense, sparse_embedding=sparse,
                                     retrieval_mode=RetrievalMode.HYBRID, location=":memory:")
        return time.perf_counter() - start, cache.misses - misses

    times: dict[str, list[float]] = {"cached": [], "uncached": []}
    runs: dict[str, int] = {}
    for repeat in range(args.repeats):
        # fresh texts each repeat, so that no run finds another run's outputs
        texts = random_texts(args.texts, max_words=120, seed=100 + repeat, log_uniform=True)
        for label, keep in (("cached", 4096), ("uncached", 0)):
            seconds, encoded = index(texts, keep)
            times[label].append(seconds)
            runs[label] = encoded
    cached, uncached = (statistics.median(times[k]) for k in ("cached", "uncached"))
    print(f"QdrantVectorStore hybrid, {args.texts} texts: cached {cached:.2f} s "
          f"({runs['cached']} texts encoded), uncached {uncached:.2f} s "
          f"({runs['uncached']} texts encoded): {uncached / cached:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"texts": args.texts, "cached_s": cached,
                                         "uncached_s": uncached, "encoded": runs}, indent=2))


if __name__ == "__main__":
    main()
