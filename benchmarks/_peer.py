"""``encode.py --peer bge-m3-lite``: bgem3's engines against bge-m3-lite, same weights, same run.

The reference of every ratio is bge-m3-lite's fused fp32 graph (its ``fuse()`` run on an
export of the same checkpoint), measured in the same process and the same run. In order:

1. The peer's files are built once and cached (``_lite.prepare``; its int8 build only with
   ``--peer-int8`` and enough free memory).
2. Every engine is loaded: bgem3 once per named set of ``BGEM3`` keyword arguments
   (``--engines``; a set this bgem3 does not accept is reported as skipped), then the peer's
   fused fp32 graph (and its int8 graph, its ``low_memory`` mode when asked), all with the
   same thread count (``num_threads=T`` for the peer, ``torch.set_num_threads(T)`` for bgem3,
   whose ONNX Runtime pool follows torch's).
3. Per workload: the peer's token ids must equal ours (transformers' tokenizer of the
   checkpoint); one untimed call of each engine, whose outputs are compared with the
   reference's (fp32 engines within ``--tolerance``, else the run stops before timing);
   then ``--repeats`` rounds in which each engine runs the workload in turn, after a short
   untimed pause (``--switch-pause``) so the previous engine's spinning worker threads have
   gone quiet. Wall time per call and process CPU time per round are recorded.
4. Start-up: each engine in a fresh process (``_startup.py``), once untimed (page cache, the
   peer's tokenizer parse cache), then ``--startup-runs`` times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import _lite
import numpy as np
from encode import (
    Flag,
    Workload,
    cpu_flags,
    cpu_name,
    format_diffs,
    make_workloads,
    max_diffs,
)

# named sets of BGEM3 keyword arguments (device="cpu" is always passed)
ENGINES: dict[str, dict[str, Any]] = {
    "default": {},
    "auto": {"backend": "auto"},
    "torch": {"backend": "torch"},
    "onnx": {"backend": "onnx"},
    "int8": {"dtype": "int8"},
    "onnx-int8": {"backend": "onnx", "dtype": "int8"},
    "compiled": {"compile": True},
}
REFERENCE = "lite fp32"
LITE_BATCH_SIZE, LITE_BATCH_TOKENS = 12, 16384  # bge-m3-lite's encode() defaults
STARTUP_TEXTS = 4  # the longest passages of R1, encoded after loading in the start-up probe


def engine_specs(names: str, custom: list[str]) -> dict[str, dict[str, Any]]:
    """``--engines a,b`` (names of ``ENGINES``) and ``--engine NAME=JSON`` as one ordered dict."""
    specs: dict[str, dict[str, Any]] = {}
    for name in filter(None, names.split(",")):
        if name not in ENGINES:
            raise SystemExit(f"--engines: unknown engine {name!r}; known: "
                             f"{', '.join(ENGINES)} (or --engine NAME='{{\"backend\": ...}}')")
        specs[name] = ENGINES[name]
    for item in custom:
        name, sep, text = item.partition("=")
        try:
            kwargs = json.loads(text) if sep else None
        except ValueError:
            kwargs = None
        if not name or not isinstance(kwargs, dict):
            raise SystemExit(f"--engine: expected NAME='{{\"keyword\": value}}', got {item!r}")
        specs[name] = kwargs
    return specs


# ----------------------------------------------------------------------------- engines
@dataclass
class Timing:
    rounds: list[float] = field(default_factory=list)  # seconds per round (all calls)
    calls: list[float] = field(default_factory=list)  # seconds per call, every round
    cpu: list[float] = field(default_factory=list)  # process CPU seconds per round


class Bgem3Engine:
    """``bgem3.BGEM3(path, device="cpu", batch_tokens=..., **kwargs)`` (kwargs win)."""

    def __init__(self, name: str, path: str, kwargs: dict[str, Any], batch_tokens: int) -> None:
        import bgem3

        self.name, self.kwargs = name, kwargs
        t0 = time.perf_counter()
        self.model = bgem3.BGEM3(path, **{"device": "cpu", "batch_tokens": batch_tokens,
                                          **kwargs})
        self.load_s = time.perf_counter() - t0
        self.low_precision = str(kwargs.get("dtype", "float32")) not in ("float32", "fp32")
        self.real = self.computed = 0

    def describe(self) -> dict[str, Any]:
        return {"library": "bgem3", "kwargs": self.kwargs,
                "backend": getattr(self.model, "backend", None),
                "dtype": str(getattr(self.model, "dtype", "")).removeprefix("torch."),
                "in_process_load_s": self.load_s}

    def call(self, texts: list[str], w: Workload) -> Any:
        dense, sparse, colbert = w.outputs
        out = self.model.encode(texts, max_length=w.max_length, dense=dense, sparse=sparse,
                                colbert=colbert, show_progress=False)
        stats = self.model.last_stats
        self.real, self.computed = self.real + stats.tokens, self.computed + stats.computed_tokens
        return out

    def collect(self, outs: list[Any], w: Workload) -> dict[str, Any]:
        dense, sparse, colbert = w.outputs
        return {"dense": np.concatenate([o.dense for o in outs]) if dense else None,
                "sparse": [v.to_dict() for o in outs for v in o.sparse] if sparse else None,
                "colbert": [a for o in outs for a in o.colbert] if colbert else None}


class LiteEngine:
    """``bge_m3_lite.BGEM3Embedder`` on one of the graphs built by ``_lite``, its defaults."""

    def __init__(self, name: str, export: Path, model_file: str, threads: int,
                 batch_size: int, batch_tokens: int, low_memory: bool = False) -> None:
        self.name, self.model_file, self.low_memory = name, model_file, low_memory
        self.batch_size, self.batch_tokens = batch_size, batch_tokens
        t0 = time.perf_counter()
        self.model = _lite.load(export, model_file, threads, low_memory)
        self.load_s = time.perf_counter() - t0
        self.low_precision = model_file == _lite.INT8
        self.real = self.computed = 0

    def describe(self) -> dict[str, Any]:
        return {"library": "bge-m3-lite", "model_file": self.model_file,
                "low_memory": self.low_memory, "batch_size": self.batch_size,
                "max_batch_tokens": self.batch_tokens, "spin": False,
                "in_process_load_s": self.load_s}

    def call(self, texts: list[str], w: Workload) -> Any:
        dense, sparse, colbert = w.outputs
        out = self.model.encode(texts, batch_size=self.batch_size,
                                max_batch_tokens=self.batch_tokens, max_length=w.max_length,
                                return_dense=dense, return_sparse=sparse,
                                return_colbert_vecs=colbert)
        return out

    def count_tokens(self, w: Workload) -> None:
        """Real and computed (padded) tokens of the workload, from the peer's own batching."""
        self.real = self.computed = 0
        for texts in w.calls():
            ids = self.model.tokenize(texts, w.max_length)
            self.real += sum(map(len, ids))
            self.computed += _lite.computed_tokens(ids, self.batch_size, self.batch_tokens)

    def collect(self, outs: list[Any], w: Workload) -> dict[str, Any]:
        return Flag.flag_outputs(outs, w)


Engine = Bgem3Engine | LiteEngine


def headline(t: Timing, w: Workload) -> float:
    """What a workload is judged by: the p50 per call (single queries) or per round."""
    return statistics.median(t.calls if w.per_call else t.rounds)


def run_once(engine: Engine, w: Workload) -> tuple[list[Any], list[float], float]:
    """Every call of the workload: outputs, wall seconds per call, process CPU seconds."""
    outs, seconds = [], []
    cpu = time.process_time()
    for texts in w.calls():
        t0 = time.perf_counter()
        outs.append(engine.call(texts, w))
        seconds.append(time.perf_counter() - t0)
    return outs, seconds, time.process_time() - cpu


# ----------------------------------------------------------------------------- start-up
def startup(spec: dict[str, Any], runs: int) -> dict[str, Any]:
    """``_startup.py`` in fresh processes: one untimed run, then ``runs``; the median of each."""
    script = Path(__file__).with_name("_startup.py")
    results = []
    for _ in range(runs + 1):
        done = subprocess.run([sys.executable, str(script), json.dumps(spec)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return {"error": done.stderr.strip().splitlines()[-1:] or [f"rc {done.returncode}"]}
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    timed = results[1:]
    summary: dict[str, Any] = {
        key: statistics.median(r[key] for r in timed)
        for key in ("import_s", "load_s", "first_query_s", "workload_s", "peak_rss_mb")}
    summary |= {"runs": timed, "imported": timed[-1]["imported"],
                "workload_texts": timed[-1]["workload_texts"]}
    return summary


# ----------------------------------------------------------------------------- main
def versions() -> dict[str, str]:
    found = {}
    for name in ("bgem3", "bge-m3-lite", "onnxruntime", "torch", "transformers", "onnx",
                 "numpy"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("--peer bge-m3-lite")
    group.add_argument("--peer", choices=["bge-m3-lite"],
                       help="time bgem3's engines against this peer instead of FlagEmbedding")
    group.add_argument("--engines", default="default,torch,onnx,int8",
                       help=f"bgem3 engines, named sets of BGEM3 keywords: {', '.join(ENGINES)}"
                            " (default: %(default)s)")
    group.add_argument("--engine", action="append", default=[], metavar="NAME=JSON",
                       help="one more bgem3 engine: a name and its BGEM3 keywords as JSON, "
                            "e.g. onnx-bt8k='{\"backend\": \"onnx\", \"batch_tokens\": 8192}' "
                            "(repeatable)")
    group.add_argument("--peer-int8", action="store_true",
                       help="also build (once, if memory allows) and time the peer's int8 graph")
    group.add_argument("--peer-int8-calibration", type=int, default=64, metavar="N",
                       help="the int8 build calibrates on the first N texts of the peer's "
                            "bundled calibration.txt (default %(default)s)")
    group.add_argument("--peer-int8-needs-gb", type=float, default=_lite.INT8_NEEDS_GB,
                       help="skip the int8 build below this much available memory "
                            "(default %(default)s GiB)")
    group.add_argument("--peer-low-memory", action="store_true",
                       help="also time the peer's fp32 graph with low_memory=True")
    group.add_argument("--peer-batch-size", type=int, default=LITE_BATCH_SIZE,
                       help="the peer's batch_size (default: its own, %(default)s)")
    group.add_argument("--peer-batch-tokens", type=int, default=LITE_BATCH_TOKENS,
                       help="the peer's max_batch_tokens (default: its own, %(default)s)")
    group.add_argument("--switch-pause", type=float, default=0.5,
                       help="untimed seconds between two engines (default %(default)s)")
    group.add_argument("--tolerance", type=float, default=1e-4,
                       help="largest difference to the peer's fp32 outputs allowed for an fp32 "
                            "engine before timing (default %(default)s)")
    group.add_argument("--no-check", action="store_true",
                       help="time even when token ids or outputs disagree")
    group.add_argument("--startup-runs", type=int, default=1,
                       help="fresh-process start-ups per engine after an untimed one "
                            "(0: none; default %(default)s)")


def peer_main(args: argparse.Namespace, path: str, checkpoint: str,
              workloads: list[Workload]) -> int:
    import torch
    from transformers import AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # "Loading weights" once per engine

    if len(args.threads) != 1:
        raise SystemExit("--peer takes one --threads value")
    threads = args.threads[0] or torch.get_num_threads()
    torch.set_num_threads(threads)
    specs = engine_specs(args.engines, args.engine)
    export, manifest = _lite.prepare(Path(path), int8=args.peer_int8,
                                     calibration=args.peer_int8_calibration,
                                     int8_needs_gb=args.peer_int8_needs_gb)
    machine: dict[str, Any] = {"cpu": cpu_name(), "cores": os.cpu_count(),
                               "flags": cpu_flags(), "python": platform.python_version()}
    print(f"checkpoint: {checkpoint}; peer files: {export}")
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, {' '.join(machine['flags'])}; "
          f"{threads} threads")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()))

    engines: list[Engine] = []
    skipped: dict[str, str] = {}
    for name, kwargs in specs.items():
        try:
            engines.append(Bgem3Engine(name, path, kwargs, args.batch_tokens))
        except (ValueError, TypeError) as exc:
            skipped[name] = f"{type(exc).__name__}: {exc}"
            print(f"engine {name} ({kwargs}) skipped: {skipped[name]}")
    lite_args = (threads, args.peer_batch_size, args.peer_batch_tokens)
    reference = LiteEngine(REFERENCE, export, _lite.FUSED, *lite_args)
    engines.append(reference)
    if args.peer_low_memory:
        engines.append(LiteEngine("lite fp32 lowmem", export, _lite.FUSED, *lite_args,
                                  low_memory=True))
    if args.peer_int8:
        if (export / _lite.INT8).is_file() and "int8" in manifest:
            engines.append(LiteEngine("lite int8", export, _lite.INT8, *lite_args))
        else:
            skipped["lite int8"] = manifest.get("int8_skipped", "no int8 build")
    for engine in engines:
        print(f"loaded {engine.name} in {engine.load_s:.1f} s (in this process)")

    tokenizer = AutoTokenizer.from_pretrained(path)
    width = max(len(e.name) for e in engines) + 2
    header = (f"{'workload':<9}{'engine':<{width}}{'time':>14}{'vs lite':>9}{'CPU time':>15}"
              f"{'padding':>9}  outputs vs {REFERENCE}")
    records, agree = [], True
    for w in workloads:
        ours_ids = tokenizer(w.texts, truncation=True, max_length=w.max_length)["input_ids"]
        peer_ids = reference.model.tokenize(w.texts, w.max_length)
        same_ids = sum(a == list(b) for a, b in zip(peer_ids, ours_ids, strict=True))
        print(f"{w.name}: token ids identical on {same_ids}/{len(w.texts)} texts")
        # the untimed warm-up call of each engine, whose outputs are checked
        outputs = {}
        for engine in engines:
            if isinstance(engine, LiteEngine):
                engine.count_tokens(w)
            else:
                engine.real = engine.computed = 0
            outs, _, _ = run_once(engine, w)
            outputs[engine.name] = engine.collect(outs, w)
        tokens = {e.name: (e.real, e.computed) for e in engines}
        diffs = {e.name: max_diffs(outputs[e.name], outputs[REFERENCE])
                 for e in engines if e is not reference}
        bad = [e.name for e in engines if e is not reference and not e.low_precision
               and max(v for k, v in diffs[e.name].items() if k != "dense_min_cosine")
               > args.tolerance]
        if same_ids != len(w.texts) or bad:
            agree = False
            beyond = ", ".join(f"{n} ({format_diffs(diffs[n])})" for n in bad) or "none"
            print(f"{w.name}: DISAGREE: token ids {same_ids}/{len(w.texts)}, fp32 engines "
                  f"beyond {args.tolerance:g}: {beyond}")
            if not args.no_check:
                print("stopping before timing (--no-check times anyway)")
                return 1
        del outputs
        timing = {e.name: Timing() for e in engines}
        for round_ in range(args.repeats):
            start = round_ % len(engines)  # each round starts with the next engine
            for engine in engines[start:] + engines[:start]:
                time.sleep(args.switch_pause)
                _, seconds, cpu = run_once(engine, w)
                timing[engine.name].rounds.append(sum(seconds))
                timing[engine.name].calls.extend(seconds)
                timing[engine.name].cpu.append(cpu)

        ref_time = headline(timing[REFERENCE], w)
        print(header)
        print("-" * len(header))
        results = {}
        for engine in engines:
            t = timing[engine.name]
            real, computed = tokens[engine.name]
            padding = 1 - real / computed if computed else 0.0
            value = headline(t, w)
            ratio = ref_time / value
            cpu = statistics.median(t.cpu)
            if w.per_call:
                shown = f"{value * 1e3:.1f} ms/call"
                cpu_shown = f"{cpu / len(w.texts) * 1e3:.1f} ms/call"
            else:
                shown, cpu_shown = f"{value:.2f} s", f"{cpu:.2f} s"
            print(f"{w.name:<9}{engine.name:<{width}}{shown:>14}{ratio:>8.2f}x{cpu_shown:>15}"
                  f"{padding:>9.1%}  {format_diffs(diffs.get(engine.name, {})) or 'reference'}")
            results[engine.name] = {
                ("p50_call_s" if w.per_call else "median_s"): value,
                "speedup_vs_lite_fp32": ratio, "rounds_s": t.rounds,
                **({"calls_s": t.calls, "p90_call_s": float(np.percentile(t.calls, 90))}
                   if w.per_call else {}),
                "cpu_s_per_round": t.cpu, "real_tokens": real, "computed_tokens": computed,
                "padding": padding, "diffs_vs_lite_fp32": diffs.get(engine.name)}
        records.append({"workload": w.name, "texts": len(w.texts), "per_call": w.per_call,
                        "max_length": w.max_length, "outputs": w.outputs,
                        "token_ids_identical": f"{same_ids}/{len(w.texts)}",
                        "results": results})
        sys.stdout.flush()

    described = {e.name: e.describe() for e in engines}
    starts = {}
    if args.startup_runs > 0:
        r1 = make_workloads(["R1"])[0]  # whatever was timed, the same probe
        longest = sorted(r1.texts, key=len, reverse=True)[:STARTUP_TEXTS]
        common: dict[str, Any] = {"threads": threads, "texts": longest,
                  "max_length": r1.max_length}
        probes = []
        for engine in engines:
            if isinstance(engine, Bgem3Engine):
                probes.append((engine.name, {"kind": "bgem3", "path": path,
                                             "kwargs": engine.kwargs,
                                             "batch_tokens": args.batch_tokens, **common}))
            else:
                probes.append((engine.name, {"kind": "lite", "export": str(export),
                                             "model_file": engine.model_file,
                                             "low_memory": engine.low_memory, **common}))
        del engines, reference  # free this process's copies before the probes run
        print(f"\nstart-up in fresh processes ({args.startup_runs} after an untimed one; then "
              f"one short query and the {len(longest)} longest passages of {r1.name}, all outputs)")
        print(f"{'engine':<{width}}{'import s':>9}{'load s':>8}{'1st query s':>12}"
              f"{'passages s':>11}{'peak RSS MB':>12}  imported")
        for name, spec in probes:
            starts[name] = s = startup(spec, args.startup_runs)
            if "error" in s:
                print(f"{name:<{width}}failed: {' '.join(s['error'])}")
                continue
            print(f"{name:<{width}}{s['import_s']:>9.2f}{s['load_s']:>8.2f}"
                  f"{s['first_query_s']:>12.3f}{s['workload_s']:>11.2f}{s['peak_rss_mb']:>12.0f}"
                  f"  {', '.join(s['imported'])}")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "peer": "bge-m3-lite", "reference": REFERENCE, "checkpoint": checkpoint,
            "threads": threads, "repeats": args.repeats, "switch_pause_s": args.switch_pause,
            "machine": machine, "versions": versions(),
            "engines": described,
            "skipped": {name: {"kwargs": specs.get(name), "reason": reason}
                        for name, reason in skipped.items()},
            "peer_files": {"dir": str(export), **manifest},
            "outputs_agree": agree, "tolerance": args.tolerance,
            "records": records, "startup": starts}, indent=2, default=str))
        print(f"wrote {args.json}")
    return 0 if agree else 1
