"""Fine-tuning on real data: quality before and after, with and without self-distillation.

Takes a backbone (with or without M3 heads), training pairs in FlagEmbedding's format and
BEIR-layout dev sets; mines hard negatives for a seeded sample of the pairs with the
backbone, fine-tunes (``--init-heads`` when the backbone has none) once with and once
without self-distillation, and evaluates every mode before and after on each dev set.
Prints the tables, training speed and peak memory; writes everything as JSON.

    python benchmarks/finetune.py --model ~/.cache/bgem3-assets/me5s \\
        --train ~/.cache/bgem3-assets/bible/train.jsonl \\
        --dev ~/.cache/bgem3-assets/bible/dev-es-en ~/.cache/bgem3-assets/bible/dev-web-kjv \\
        --split dev --pairs 3000 --max-steps 150 --work /tmp/ft-bench \\
        --json benchmarks/results/finetune-me5s-bible.json
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import time
from pathlib import Path
from typing import cast

import bgem3
import torch
from bgem3.checkpoint import resolve_checkpoint
from bgem3.encoder import load_model
from bgem3.evaluation import MODES
from bgem3.model import BGEM3Module
from bgem3.train import FinetuneSettings, finetune, mine_negatives
from bgem3.train.model import new_heads, save_checkpoint


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _evaluate(model_path: str | Path, dev: list[Path], split: str) -> dict[str, dict]:
    model = load_model(str(model_path), device="cpu")
    out = {}
    for data in dev:
        report = bgem3.evaluate(model, data, split=split)
        print(report.table(), end="\n\n")
        out[data.name] = report.to_dict()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--train", required=True, type=Path)
    parser.add_argument("--dev", nargs="+", required=True, type=Path)
    parser.add_argument("--split", default="dev")
    parser.add_argument("--pairs", type=int, default=3000, help="training pairs sampled")
    parser.add_argument("--range", default="3-50", help="mining rank range")
    parser.add_argument("--negatives", type=int, default=7)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-steps", type=int, default=150)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--runs", default="self-distill,no-self-distill")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, required=True, help="working directory")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--reuse", action="store_true",
                        help="evaluate finished runs found in --work instead of training again")
    parser.add_argument("--only-start", action="store_true",
                        help="only evaluate the backbone with new heads (added to --json)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    record: dict = {"args": {k: str(v) for k, v in vars(args).items()},
                    "machine": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads(), "torch": torch.__version__}

    sample = args.work / "train-sample.jsonl"
    mined = args.work / "train-mined.jsonl"
    if not mined.is_file() and not args.only_start:
        rows = args.train.read_text(encoding="utf-8").splitlines()
        random.Random(args.seed).shuffle(rows)
        sample.write_text("\n".join(rows[: args.pairs]) + "\n", encoding="utf-8")
        start, end = (int(x) for x in args.range.split("-"))
        started = time.perf_counter()
        report = mine_negatives(sample, load_model(args.model, device="cpu"),
                                mined, rank_range=(start, end), num=args.negatives,
                                seed=args.seed)
        record["mining"] = {"seconds": round(time.perf_counter() - started, 1),
                            "queries": report.queries, "corpus": report.corpus}
        print(f"mined {report.negatives:.1f} negatives for {report.queries} queries "
              f"in {record['mining']['seconds']} s")

    if args.json and args.json.is_file() and args.only_start:
        record = json.loads(args.json.read_text())
    has_heads = resolve_checkpoint(args.model, require_heads=False).has_heads
    if not has_heads:  # what --init-heads starts from: the backbone with new, untrained heads
        start = args.work / "start"
        model = load_model(args.model, device="cpu", backend="torch")  # its torch module
        module = cast(BGEM3Module, model.module)
        module.colbert_linear, module.sparse_linear = new_heads(
            int(module.config.hidden_size), seed=args.seed)
        save_checkpoint(module, model.path, start)
        print("== start: the backbone with new heads, untrained")
        record["start"] = _evaluate(start, args.dev, args.split)
    if args.only_start:
        if args.json:
            args.json.write_text(json.dumps(record, indent=2) + "\n")
        return
    print("== before fine-tuning")
    record["before"] = _evaluate(args.model, args.dev, args.split)
    record["runs"] = {}
    for run in args.runs.split(","):
        output = args.work / run
        settings = FinetuneSettings(
            model=args.model, train_data=[str(mined)], output=str(output),
            self_distill=run == "self-distill", init_heads=not has_heads,
            group_size=args.group_size, batch_size=args.batch_size, max_steps=args.max_steps,
            learning_rate=args.learning_rate, query_max_length=args.max_length,
            passage_max_length=args.max_length, seed=args.seed, device="cpu",
            bf16=args.bf16, logging_steps=10, save_steps=10**6, show_progress=False,
            overwrite_output=True)
        done = output / "bgem3_finetune.json"
        reused = args.reuse and done.is_file()
        started = time.perf_counter()
        if not reused:
            finetune(settings)
        trained = json.loads(done.read_text())
        seconds = trained["seconds"] if reused else time.perf_counter() - started
        print(f"== {run}: {trained['steps']} steps in {seconds:.0f} s "
              f"({trained['steps'] * args.batch_size / seconds:.2f} queries/s) "
              + ("(trained earlier, reused)" if reused else f"peak RSS {_peak_rss_mb():.0f} MB"))
        record["runs"][run] = {"seconds": round(seconds, 1), "reused": reused,
                               "peak_rss_mb": None if reused else round(_peak_rss_mb()),
                               "log": trained["log"],
                               "after": _evaluate(output, args.dev, args.split)}
        if args.json:  # written after every run: a cut-off benchmark keeps what it measured
            args.json.write_text(json.dumps(record, indent=2) + "\n")

    metric = "ndcg@10"
    for data in args.dev:
        print(f"\n{metric} on {data.name}:")
        columns = [c for c in ("before", "start") if c in record] + list(record["runs"])
        print(f"{'mode':<22}" + "".join(f"{c:>18}" for c in columns))
        for mode in MODES:
            cells = []
            for column in columns:
                report = (record[column] if column in ("before", "start")
                          else record["runs"][column]["after"])[data.name]
                found = [r for r in report["results"] if r["mode"] == mode]
                cells.append(f"{found[0][metric]:>18.4f}" if found else f"{'-':>18}")
            print(f"{mode:<22}" + "".join(cells))
    if args.json:
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
