"""Start-up of one engine in a fresh process: import, load, first calls, peak memory.

Run by ``encode.py --peer bge-m3-lite`` as ``python benchmarks/_startup.py SPEC`` where SPEC is
a JSON object: ``kind`` (``"bgem3"`` or ``"lite"``), ``threads``, ``texts`` (encoded once
after loading, all three outputs) and ``max_length``; for bgem3 ``path``, ``kwargs`` and
``batch_tokens``, for bge-m3-lite ``export``, ``model_file`` and ``low_memory``. Prints one
JSON line: ``import_s`` (the package), ``load_s`` (the constructor, with whatever it imports
lazily), ``first_query_s`` (one short text), ``workload_s`` (``texts``), ``peak_rss_mb``
(the process's own high-water mark, see :func:`peak_rss_mb`) and which heavy packages ended
up imported.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

HEAVY = ("torch", "transformers", "tokenizers", "onnxruntime", "onnx")


def peak_rss_mb() -> float:
    """This process's peak resident memory (MiB): ``VmHWM``, else ``ru_maxrss``.

    ``getrusage``'s ``ru_maxrss`` is not enough in a child: Linux carries the parent's
    high-water mark over fork and exec, so a probe started by a process holding 3 GB reports
    at least 3 GB. ``VmHWM`` belongs to the address space that exec made, so it counts only
    the child's own pages.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(spec: dict[str, Any]) -> dict[str, Any]:
    threads = int(spec["threads"])
    # torch reads this when it starts; bgem3 sizes its ONNX Runtime pool from torch's
    os.environ["OMP_NUM_THREADS"] = str(threads)
    texts, max_length = spec["texts"], int(spec["max_length"])
    t0 = time.perf_counter()
    if spec["kind"] == "bgem3":
        import bgem3

        import_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        model = bgem3.BGEM3(spec["path"], **{"device": "cpu",
                                             "batch_tokens": spec["batch_tokens"],
                                             **spec["kwargs"]})
        load_s = time.perf_counter() - t0

        def encode(batch: list[str]) -> None:
            model.encode(batch, max_length=max_length, dense=True, sparse=True, colbert=True,
                         show_progress=False)
    else:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import bge_m3_lite  # noqa: F401  (the import being timed)

        import_s = time.perf_counter() - t0
        from _lite import load

        t0 = time.perf_counter()
        model = load(Path(spec["export"]), spec["model_file"], threads,
                     spec.get("low_memory", False))
        load_s = time.perf_counter() - t0

        def encode(batch: list[str]) -> None:
            model.encode(batch, max_length=max_length, return_dense=True, return_sparse=True,
                         return_colbert_vecs=True)
    t0 = time.perf_counter()
    encode(["what is the capital of france"])
    first_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    encode(texts)
    workload_s = time.perf_counter() - t0
    return {"import_s": import_s, "load_s": load_s, "first_query_s": first_s,
            "workload_s": workload_s, "workload_texts": len(texts),
            "peak_rss_mb": peak_rss_mb(),
            "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "imported": [name for name in HEAVY if name in sys.modules]}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
