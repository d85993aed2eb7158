"""Retrieval quality per mode and fusion on several labelled datasets (BEIR layout).

Runs `bgem3.evaluate` on each dataset with the same model and prints each report, then one
summary table of nDCG@10 per dataset and mode. Real figures come from a real checkpoint and
real data, e.g. the assets that `bash ../shared/assets/build.sh` builds:

    python benchmarks/quality.py --model ~/.cache/bgem3-assets/me5s \\
        --data ~/.cache/bgem3-assets/bible/dev-es-en ~/.cache/bgem3-assets/bible/dev-web-kjv \\
        --split dev --tune --json benchmarks/results/quality-me5s.json

A checkpoint without M3 heads (such as that one) gives the dense row only.
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
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, help="write every report here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from bgem3.checkpoint import resolve_checkpoint

    has_heads = resolve_checkpoint(args.model, require_heads=False).has_heads
    model = bgem3.BGEM3(args.model, device=args.device, dtype=args.dtype,
                        dense_only=not has_heads)
    reports = []
    for data in args.data:
        report = bgem3.evaluate(model, data, split=args.split, k=args.k,
                                candidates=args.candidates, tune=args.tune)
        print(report.table(), end="\n\n")
        reports.append(report)

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
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "reports": [r.to_dict() for r in reports]}, indent=2) + "\n")


if __name__ == "__main__":
    main()
