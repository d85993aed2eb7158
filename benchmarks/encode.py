"""Encoding speed of bgem3 against FlagEmbedding's BGEM3FlagModel: same checkpoint, same run.

Each workload is timed alternately (bgem3, FlagEmbedding, bgem3, ...) after one untimed
warm-up call of each, and the median of ``--repeats`` runs is reported with the ratio
bgem3 / FlagEmbedding. FlagEmbedding runs in fp32 on the CPU (``use_fp16=False``).

Workloads:
  W1   384 passages, log-uniform 8-1024 tokens, dense + sparse + ColBERT
  W1d  the same passages, dense only
  W2   1,000 queries of 4-32 tokens, one call per query (per-call latency)
  W3   4 texts of 8192 tokens, all three outputs (peak memory)

Usage:
  python benchmarks/encode.py                      # tiny 6x384 seeded checkpoint
  python benchmarks/encode.py --model /path/bge-m3  # any real checkpoint directory
  python benchmarks/encode.py --workloads W1,W2 --threads 1 --repeats 5
  python benchmarks/encode.py --dtype bfloat16      # bgem3 in bf16 vs FlagEmbedding fp32
  python benchmarks/encode.py --compat --batch-size 32  # bgem3.compat.BGEM3FlagModel vs FE,
                                                        # the same calls and batch size
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PAGE = os.sysconf("SC_PAGE_SIZE")


# ----------------------------------------------------------------------------- workloads
@dataclass
class Workload:
    name: str
    texts: list[str]
    outputs: tuple[bool, bool, bool]  # dense, sparse, colbert
    max_length: int
    per_call: bool = False
    repeats: int | None = None


def _texts_of_lengths(lengths: np.ndarray, rng: np.random.Generator) -> list[str]:
    from bgem3.testing import TINY_WORDS

    words = np.array(TINY_WORDS[:180])  # Latin-script words: one token each in the tiny vocab
    return [" ".join(rng.choice(words, max(int(n) - 2, 1))) for n in lengths]


def make_workloads(selected: list[str]) -> list[Workload]:
    rng = np.random.default_rng(1234)
    w1_lengths = np.exp(rng.uniform(np.log(8), np.log(1024), 384)).astype(int)
    w1 = _texts_of_lengths(w1_lengths, rng)
    w2 = _texts_of_lengths(rng.integers(4, 33, 1000), rng)
    w3 = _texts_of_lengths(np.full(4, 8192), rng)
    every = {
        "W1": Workload("W1", w1, (True, True, True), 1024),
        "W1d": Workload("W1d", w1, (True, False, False), 1024),
        "W2": Workload("W2", w2, (True, False, False), 512, per_call=True),
        "W3": Workload("W3", w3, (True, True, True), 8192, repeats=1),
    }
    return [every[name] for name in selected]


# ----------------------------------------------------------------------------- measuring
class PeakRSS:
    """Samples this process's resident memory in a thread; ``peak`` is the max seen."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    @staticmethod
    def now() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE

    def __enter__(self) -> PeakRSS:
        self.base = self.peak = self.now()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.now())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


@dataclass
class Split:
    tokenize: float = 0.0
    forward: float = 0.0
    post: float = 0.0


@dataclass
class Result:
    seconds: list[float] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    split: Split = field(default_factory=Split)
    real_tokens: int = 0
    computed_tokens: int = 0
    outputs: Any = None


class Ours:
    name = "bgem3"

    def __init__(self, path: str, dtype: str, batch_tokens: int, device: str = "cpu") -> None:
        import bgem3

        self.model = bgem3.BGEM3(path, device=device, dtype=dtype, batch_tokens=batch_tokens)

    def run(self, w: Workload) -> tuple[Any, Split, int, int]:
        dense, sparse, colbert = w.outputs
        split, real, computed = Split(), 0, 0
        calls = [[t] for t in w.texts] if w.per_call else [w.texts]
        outputs = []
        for texts in calls:
            out = self.model.encode(texts, max_length=w.max_length, dense=dense, sparse=sparse,
                                    colbert=colbert, show_progress=False)
            s = self.model.last_stats
            split.tokenize += s.tokenize_s
            split.forward += s.forward_s
            split.post += s.postprocess_s
            real, computed = real + s.tokens, computed + s.computed_tokens
            outputs.append(out)
        dense_all = np.concatenate([o.dense for o in outputs]) if dense else None
        return (
            {
                "dense": dense_all,
                "sparse": [v.to_dict() for o in outputs for v in o.sparse] if sparse else None,
                "colbert": [a for o in outputs for a in o.colbert] if colbert else None,
            },
            split, real, computed,
        )


class Compat:
    """bgem3 through ``bgem3.compat.BGEM3FlagModel``: FlagEmbedding's calls, one import changed."""

    name = "bgem3.compat"

    def __init__(self, path: str, device: str = "cpu", batch_size: int = 256) -> None:
        from bgem3.compat import BGEM3FlagModel

        self.model = BGEM3FlagModel(path, use_fp16=False, devices=device)
        self.batch_size = batch_size

    def run(self, w: Workload) -> tuple[Any, Split, int, int]:
        dense, sparse, colbert = w.outputs
        split, real, computed = Split(), 0, 0
        calls = [[t] for t in w.texts] if w.per_call else [w.texts]
        outputs = []
        t0 = time.perf_counter()
        for texts in calls:
            outputs.append(self.model.encode(
                texts, batch_size=self.batch_size, max_length=w.max_length, return_dense=dense,
                return_sparse=sparse, return_colbert_vecs=colbert))
            s = self.model.native.last_stats
            split.tokenize += s.tokenize_s
            split.forward += s.forward_s
            real, computed = real + s.tokens, computed + s.computed_tokens
        split.post = time.perf_counter() - t0 - split.tokenize - split.forward
        return Flag.flag_outputs(outputs, w), split, real, computed


class Flag:
    name = "FlagEmbedding"

    def __init__(self, path: str, device: str = "cpu", fp16: bool = False,
                 batch_size: int = 256) -> None:
        import torch
        from FlagEmbedding import BGEM3FlagModel

        self.model = BGEM3FlagModel(path, use_fp16=fp16, devices=device, batch_size=batch_size)
        self._forward = self._tokenize = 0.0
        self._computed = 0
        module: torch.nn.Module = self.model.model

        def before(_module: Any, args: tuple[Any, ...]) -> None:
            self._t0 = time.perf_counter()
            self._computed += int(args[0]["input_ids"].numel())

        def after(*_: Any) -> None:
            self._forward += time.perf_counter() - self._t0

        module.register_forward_pre_hook(before)
        module.register_forward_hook(after)
        tokenizer = self.model.tokenizer
        base = type(tokenizer)
        bench = self

        class TimedTokenizer(base):  # type: ignore[misc, valid-type]
            def __call__(self, *args: Any, **kwargs: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return base.__call__(self, *args, **kwargs)
                finally:
                    bench._tokenize += time.perf_counter() - t0

        tokenizer.__class__ = TimedTokenizer

    def run(self, w: Workload) -> tuple[Any, Split, int, int]:
        dense, sparse, colbert = w.outputs
        self._forward = self._tokenize = 0.0
        self._computed = 0
        calls = [[t] for t in w.texts] if w.per_call else [w.texts]
        outputs = []
        t0 = time.perf_counter()
        for texts in calls:
            outputs.append(self.model.encode(
                texts, max_length=w.max_length, return_dense=dense, return_sparse=sparse,
                return_colbert_vecs=colbert))
        total = time.perf_counter() - t0
        split = Split(self._tokenize, self._forward, total - self._tokenize - self._forward)
        return self.flag_outputs(outputs, w), split, 0, self._computed

    @staticmethod
    def flag_outputs(outputs: list[dict[str, Any]], w: Workload) -> dict[str, Any]:
        dense, sparse, colbert = w.outputs
        return {
            "dense": np.concatenate([o["dense_vecs"] for o in outputs]) if dense else None,
            "sparse": [{int(k): float(v) for k, v in d.items()}
                       for o in outputs for d in o["lexical_weights"]] if sparse else None,
            "colbert": [a for o in outputs for a in o["colbert_vecs"]] if colbert else None,
        }


def measure(impl: Any, w: Workload, result: Result) -> None:
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        outputs, split, real, computed = impl.run(w)
        seconds = time.perf_counter() - t0
    result.seconds.append(seconds)
    result.peak_rss_mb = max(result.peak_rss_mb, (rss.peak - rss.base) / 2**20)
    result.split, result.outputs = split, outputs
    result.real_tokens, result.computed_tokens = real, computed


def max_diffs(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    diffs: dict[str, float] = {}
    if a["dense"] is not None:
        diffs["dense"] = float(np.abs(a["dense"] - b["dense"]).max())
        cos = np.sum(a["dense"] * b["dense"], axis=1)
        diffs["dense_min_cosine"] = float(cos.min())
    if a["sparse"] is not None:
        worst = 0.0
        for x, y in zip(a["sparse"], b["sparse"], strict=True):
            for k in set(x) | set(y):
                worst = max(worst, abs(x.get(k, 0.0) - y.get(k, 0.0)))
        diffs["sparse"] = worst
    if a["colbert"] is not None:
        diffs["colbert"] = max(
            float(np.abs(x - y).max()) if x.shape == y.shape else float("inf")
            for x, y in zip(a["colbert"], b["colbert"], strict=True)
        )
    return diffs


def format_diffs(diffs: dict[str, float]) -> str:
    text = " ".join(f"{k}={v:.1e}" for k, v in diffs.items() if k != "dense_min_cosine")
    if "dense_min_cosine" in diffs:
        text += f" cos>={diffs['dense_min_cosine']:.5f}"
    return text


# ----------------------------------------------------------------------------- main
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return sorted(have & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
    except OSError:
        pass
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint directory (default: tiny 6x384 seeded)")
    parser.add_argument("--workloads", default="W1,W1d,W2,W3")
    parser.add_argument("--threads", type=int, nargs="+", default=[0],
                        help="torch threads per run; 0 = torch's default")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32", help="bgem3's dtype (FlagEmbedding: fp32)")
    parser.add_argument("--batch-tokens", type=int, default=16384)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (both libraries)")
    parser.add_argument("--flag-fp16", action="store_true", help="FlagEmbedding in fp16")
    parser.add_argument("--compat", action="store_true",
                        help="time bgem3 through bgem3.compat.BGEM3FlagModel (fp32) instead")
    parser.add_argument("--batch-size", type=int, default=256,
                        help="batch_size of the FlagEmbedding (and --compat) calls")
    parser.add_argument("--json", type=Path, help="write results here")
    args = parser.parse_args(argv)

    import torch

    warnings.simplefilter("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    from bgem3.testing import build_tiny_checkpoint

    if args.model:
        path = args.model
        checkpoint = args.model
    else:
        cache = ROOT / ".cache" / "bench-6x384"
        if not (cache / "config.json").exists():
            build_tiny_checkpoint(cache, hidden_size=384, num_layers=6, num_heads=12,
                                  initializer_range=0.1, seed=0)
        path, checkpoint = str(cache), "tiny 6x384 (seed 0)"
    default_threads = torch.get_num_threads()
    if args.compat and args.dtype != "float32":
        parser.error("--compat runs in fp32 (use_fp16=False): leave --dtype at float32")
    ours: Ours | Compat = (Compat(path, args.device, args.batch_size) if args.compat
                           else Ours(path, args.dtype, args.batch_tokens, args.device))
    flag = Flag(path, args.device, args.flag_fp16, args.batch_size)
    machine = {"cpu": cpu_name(), "cores": os.cpu_count(), "flags": cpu_flags(),
               "torch": torch.__version__, "python": platform.python_version()}
    if args.device != "cpu":
        machine["device"] = torch.cuda.get_device_name(0)
    flag_dtype = "fp16" if args.flag_fp16 else "fp32"
    print(f"checkpoint: {checkpoint}; {ours.name} {args.dtype} vs FlagEmbedding {flag_dtype} "
          f"on {machine.get('device', 'cpu')}, FlagEmbedding batch_size {args.batch_size}")
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, {' '.join(machine['flags'])}")
    header = (f"{'workload':<9}{'thr':>4} {'impl':<14}{'median s':>9}{'texts/s':>10}"
              f"{'tokens/s':>10}{'ratio':>7}{'waste':>7}{'RSS MB':>8}"
              f"{'tok s':>7}{'fwd s':>7}{'post s':>7}  max|diff|")
    print(header)
    print("-" * len(header))
    records = []
    for threads in args.threads:
        torch.set_num_threads(threads or default_threads)
        for w in make_workloads(args.workloads.split(",")):
            repeats = w.repeats or args.repeats
            results = {ours.name: Result(), flag.name: Result()}
            if not w.per_call:  # warm-up (FlagEmbedding's first call excluded)
                small = Workload(w.name, w.texts[:8], w.outputs, w.max_length)
                ours.run(small)
                flag.run(small)
            else:
                warm = Workload(w.name, w.texts[:20], w.outputs, w.max_length, per_call=True)
                ours.run(warm)
                flag.run(warm)
            for _ in range(repeats):
                for impl in (ours, flag):
                    measure(impl, w, results[impl.name])
            mine, theirs = results[ours.name], results[flag.name]
            real = mine.real_tokens
            diffs = max_diffs(mine.outputs, theirs.outputs)
            ratio = statistics.median(theirs.seconds) / statistics.median(mine.seconds)
            for impl_name, r in results.items():
                median = statistics.median(r.seconds)
                waste = 1 - real / r.computed_tokens if r.computed_tokens else 0.0
                is_ours = impl_name == ours.name
                per_call = f" ({median / len(w.texts) * 1e3:.2f} ms/call)" if w.per_call else ""
                diff = format_diffs(diffs) if is_ours else ""
                print(f"{w.name:<9}{threads or default_threads:>4} {impl_name:<14}{median:>9.3f}"
                      f"{len(w.texts) / median:>10.1f}{real / median:>10.0f}"
                      f"{(f'{ratio:.2f}x' if is_ours else ''):>7}{waste:>7.1%}"
                      f"{r.peak_rss_mb:>8.0f}{r.split.tokenize:>7.2f}{r.split.forward:>7.2f}"
                      f"{r.split.post:>7.2f}  {diff}{per_call}")
            records.append({
                "workload": w.name, "threads": threads or default_threads, "ratio": ratio,
                "max_abs_diff": diffs, "real_tokens": real,
                "results": {name: {"median_s": statistics.median(r.seconds),
                                   "seconds": r.seconds, "peak_rss_mb": r.peak_rss_mb,
                                   "computed_tokens": r.computed_tokens,
                                   "split_s": asdict(r.split)} for name, r in results.items()},
            })
            sys.stdout.flush()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"checkpoint": checkpoint, "dtype": args.dtype,
                                         "device": args.device, "flag_dtype": flag_dtype,
                                         "impl": ours.name, "batch_size": args.batch_size,
                                         "machine": machine, "records": records}, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
