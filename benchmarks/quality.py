"""Retrieval quality per mode and fusion on several labelled datasets (BEIR layout).

Runs `bgem3.evaluate` on each dataset with the same model and prints each report, then one
summary table of nDCG@10 per dataset and mode. Real figures come from a real checkpoint and
real data, e.g. the assets that `bash ../shared/assets/build.sh` builds:

    python benchmarks/quality.py --model ~/.cache/bgem3-assets/me5s \\
        --data ~/.cache/bgem3-assets/bible/dev-es-en ~/.cache/bgem3-assets/bible/dev-web-kjv \\
        --split dev --tune --json benchmarks/results/quality-me5s.json

A checkpoint without M3 heads (such as that one) gives the dense row only.

``--compare-dtype int8`` evaluates the same model a second time in that dtype and prints, per
dataset and mode, both nDCG@10 and their difference, and how close the two models' outputs
are on every query and document text of the datasets (dense cosine, ColBERT token cosine,
sparse weights), e.g. for a fine-tuned checkpoint with trained heads:

    python benchmarks/quality.py --model .cache/ft26/no-self-distill \
        --data ~/.cache/bgem3-assets/bible/dev-es-en ~/.cache/bgem3-assets/bible/dev-web-kjv \
        --split dev --dtype float32 --compare-dtype int8 --threads 2 \
        --json benchmarks/results/quality-int8-me5s-bible.json
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import bgem3
import torch
from bgem3.evaluation import MODES
from bgem3.index import DEFAULT_SEARCH


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="hub id or checkpoint directory")
    parser.add_argument("--data", nargs="+", required=True, type=Path, help="dataset dirs")
    parser.add_argument("--split", default="test")
    parser.add_argument("--tune", action="store_true")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--candidates", type=int, default=DEFAULT_SEARCH.candidates)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--backend", default="auto", help="auto, torch or onnx")
    parser.add_argument("--compare-dtype", help="evaluate again in this dtype (e.g. int8)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, help="write every report here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from bgem3.checkpoint import resolve_checkpoint

    has_heads = resolve_checkpoint(args.model, require_heads=False).has_heads
    model = bgem3.BGEM3(args.model, device=args.device, dtype=args.dtype,
                        dense_only=not has_heads, backend=args.backend)
    reports = []
    for data in args.data:
        report = bgem3.evaluate(model, data, split=args.split, k=args.k,
                                candidates=args.candidates, tune=args.tune)
        print(report.table(), end="\n\n")
        reports.append(report)
    compared: dict = {}
    if args.compare_dtype:
        other = bgem3.BGEM3(args.model, device=args.device, dtype=args.compare_dtype,
                            dense_only=not has_heads)
        compared = _compare(model, other, args, reports)

    metric = f"ndcg@{args.k}"
    print(f"{metric} by dataset and mode ({model}):")
    print(f"{'mode':<22}" + "".join(f"{r.dataset:>16}" for r in reports))
    for mode in MODES:
        cells = []
        for r in reports:
            found = [x for x in r.results if x.mode == mode]
            cells.append(f"{found[0].metrics[metric]:>16.4f}" if found else f"{'-':>16}")
        print(f"{mode:<22}" + "".join(cells))
    if args.tune:
        print(f"{'tuned (held out)':<22}" + "".join(
            f"{r.tuned.score:>16.4f}" if r.tuned else f"{'-':>16}" for r in reports))
    if args.json:
        args.json.write_text(json.dumps({
            "model": args.model, "machine": platform.processor() or platform.machine(),
            "cpu": _cpu(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "reference": repr(model), "reports": [r.to_dict() for r in reports],
            **compared}, indent=2) + "\n")


def _cpu() -> dict:
    """The CPU's model name and the flags that matter for int8 and bf16 (Linux)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                 if line.startswith("model name")), "")
    wanted = {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8"}
    return {"name": name, "flags": sorted(wanted & set(info.split()))}


def _compare(model: bgem3.BGEM3, other: bgem3.BGEM3, args: argparse.Namespace,
             reports: list) -> dict:
    """Evaluate ``other`` on the same data; print nDCG side by side and output closeness."""
    import numpy as np
    from bgem3.evaluation import load_beir

    metric = f"ndcg@{args.k}"
    theirs = [bgem3.evaluate(other, data, split=args.split, k=args.k,
                             candidates=args.candidates, tune=args.tune) for data in args.data]
    print(f"\n{metric}: {model} -> {other}")
    print(f"{'mode':<22}" + "".join(f"{r.dataset:>28}" for r in reports))
    worst = 0.0
    for mode in MODES:
        cells = []
        for a, b in zip(reports, theirs, strict=True):
            x = [r for r in a.results if r.mode == mode]
            y = [r for r in b.results if r.mode == mode]
            if not x or not y:
                cells.append(f"{'-':>28}")
                continue
            delta = y[0].metrics[metric] - x[0].metrics[metric]
            worst = max(worst, abs(delta))
            cells.append(f"{x[0].metrics[metric]:>10.4f} -> {y[0].metrics[metric]:.4f} "
                         f"({delta:+.4f})")
        print(f"{mode:<22}" + "".join(cells))
    print(f"largest |difference|: {worst:.4f}")
    closeness = {}
    for data in args.data:
        beir = load_beir(data, args.split)
        texts = list(beir.query_texts) + list(beir.corpus_texts)
        heads = {"dense": True, "sparse": other.has_heads, "colbert": other.has_heads}
        a, b = model.encode(texts, **heads), other.encode(texts, **heads)
        cosine = (a.dense * b.dense).sum(1)
        row = {"texts": len(texts), "dense_cosine_min": float(cosine.min()),
               "dense_cosine_mean": float(cosine.mean())}
        if a.colbert is not None and b.colbert is not None:
            tokens = np.concatenate([(x * y).sum(1) for x, y in zip(a.colbert, b.colbert,
                                                                   strict=True)])
            row |= {"colbert_token_cosine_mean": float(tokens.mean()),
                    "colbert_token_cosine_p1": float(np.percentile(tokens, 1))}
        if a.sparse is not None and b.sparse is not None:
            worst_sparse = 0.0
            for x, y in zip(a.sparse, b.sparse, strict=True):
                left = dict(zip(x.indices.tolist(), x.values.tolist(), strict=True))
                right = dict(zip(y.indices.tolist(), y.values.tolist(), strict=True))
                worst_sparse = max([worst_sparse, *(abs(left.get(i, 0.0) - right.get(i, 0.0))
                                                    for i in left.keys() | right.keys())])
            row["sparse_max_abs_diff"] = worst_sparse
        closeness[beir.name] = row
        print(beir.name, json.dumps(row))
    return {"compared": repr(other), "compared_reports": [r.to_dict() for r in theirs],
            "largest_ndcg_difference": worst, "closeness": closeness}


if __name__ == "__main__":
    main()
