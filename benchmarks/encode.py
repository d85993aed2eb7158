"""Encoding speed of bgem3 against FlagEmbedding's BGEM3FlagModel: same checkpoint, same run.

Each workload is timed alternately (bgem3, FlagEmbedding, bgem3, ...) after one untimed
warm-up call of each, and the median of ``--repeats`` runs is reported with the ratio
bgem3 / FlagEmbedding. FlagEmbedding runs in fp32 on the CPU (``use_fp16=False``).

Workloads:
  W1   384 passages, log-uniform 8-1024 tokens, dense + sparse + ColBERT
  W1d  the same passages, dense only
  W2   1,000 queries of 4-32 tokens, one call per query (per-call latency)
  W3   4 texts of 8192 tokens, all three outputs (peak memory)
  R1   48 passages, log-uniform 8-512 tokens, all three outputs (for --size real)
  R2   24 queries of 4-30 tokens, one call per query, all three outputs (for --size real)

``--size real`` builds a randomly initialised checkpoint of BGE-M3's real size (24 layers x 1024,
16 heads, FFN 4096, ``initializer_range=0.02`` as transformers initialises XLM-R) and also
reports the useful work done: GFLOP/s over the real tokens (the matrix products of every layer,
attention and the heads; padding does not count) and that as a fraction of the GEMM ceiling of
this machine, a large ``torch.nn.functional.linear`` in the same dtype timed in the same run.

Usage:
  python benchmarks/encode.py                      # tiny 6x384 seeded checkpoint
  python benchmarks/encode.py --model /path/bge-m3  # any real checkpoint directory
  python benchmarks/encode.py --workloads W1,W2 --threads 1 --repeats 5
  python benchmarks/encode.py --dtype bfloat16      # bgem3 in bf16 vs FlagEmbedding fp32
  python benchmarks/encode.py --compat --batch-size 32  # bgem3.compat.BGEM3FlagModel vs FE,
                                                        # the same calls and batch size
  python benchmarks/encode.py --size real --threads 2 --batch-size 32 256  # real size; FE at
                                                        # batch_size 32 (careful) and 256 (default)
  python benchmarks/encode.py --size real --threads 2 --batch-size 32 --compile  # bgem3 with
                                                        # compile=True (compiled while loading)
  python benchmarks/encode.py --size real --threads 2 --batch-size 32 --backend onnx  # bgem3
                                                        # with backend="onnx" (ONNX Runtime)
  python benchmarks/encode.py --size real --threads 2 --peer bge-m3-lite  # bgem3's engines
                  # (--engines default,torch,onnx,int8) against bge-m3-lite's fused fp32 graph
                  # on the same weights, start-up in fresh processes (see _peer.py)
  python benchmarks/encode.py --size real --threads 2 --peer bge-m3-lite --peer-int8  # and
                  # its int8 graph (built once if memory allows)
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Iterator
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

    def calls(self) -> list[list[str]]:
        """The texts of each encode call: one call per text, or one for all."""
        return [[t] for t in self.texts] if self.per_call else [self.texts]


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
    r1 = _texts_of_lengths(np.exp(rng.uniform(np.log(8), np.log(512), 48)).astype(int), rng)
    r2 = _texts_of_lengths(rng.integers(4, 31, 24), rng)
    every = {
        "W1": Workload("W1", w1, (True, True, True), 1024),
        "W1d": Workload("W1d", w1, (True, False, False), 1024),
        "W2": Workload("W2", w2, (True, False, False), 512, per_call=True),
        "W3": Workload("W3", w3, (True, True, True), 8192, repeats=1),
        "R1": Workload("R1", r1, (True, True, True), 512),
        "R2": Workload("R2", r2, (True, True, True), 512, per_call=True),
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

    def __init__(self, path: str, dtype: str, batch_tokens: int, device: str = "cpu",
                 compile: bool = False, backend: str = "auto") -> None:
        import bgem3

        started = time.perf_counter()
        self.model = bgem3.BGEM3(path, device=device, dtype=dtype, batch_tokens=batch_tokens,
                                 compile=compile, backend=backend)
        self.load_s = time.perf_counter() - started
        if compile:
            self.name = "bgem3 compiled"
        elif self.model.backend != "torch":
            self.name = f"bgem3 {self.model.backend}"

    def run(self, w: Workload) -> tuple[Any, Split, int, int]:
        dense, sparse, colbert = w.outputs
        split, real, computed = Split(), 0, 0
        outputs = []
        for texts in w.calls():
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
        split, real, computed = Split(), 0, 0
        outputs = []
        t0 = time.perf_counter()
        for out in Flag.encode_calls(self.model, w, self.batch_size):
            outputs.append(out)
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
        self.batch_size = batch_size
        self._counts = {"forward": 0.0, "tokenize": 0.0, "computed": 0}  # shared by copies
        counts = self._counts
        module: torch.nn.Module = self.model.model
        started = [0.0]

        def before(_module: Any, args: tuple[Any, ...]) -> None:
            started[0] = time.perf_counter()
            counts["computed"] += int(args[0]["input_ids"].numel())

        def after(*_: Any) -> None:
            counts["forward"] += time.perf_counter() - started[0]

        module.register_forward_pre_hook(before)
        module.register_forward_hook(after)
        tokenizer = self.model.tokenizer
        base = type(tokenizer)

        class TimedTokenizer(base):  # type: ignore[misc, valid-type]
            def __call__(self, *args: Any, **kwargs: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return base.__call__(self, *args, **kwargs)
                finally:
                    counts["tokenize"] += time.perf_counter() - t0

        tokenizer.__class__ = TimedTokenizer

    def at_batch_size(self, batch_size: int) -> Flag:
        """The same loaded model, called with another ``batch_size``."""
        other = copy.copy(self)
        other.batch_size = batch_size
        other.name = f"FE bs{batch_size}"
        return other

    def run(self, w: Workload) -> tuple[Any, Split, int, int]:
        self._counts.update(forward=0.0, tokenize=0.0, computed=0)
        t0 = time.perf_counter()
        outputs = list(self.encode_calls(self.model, w, self.batch_size))
        total = time.perf_counter() - t0
        forward, tokenize = self._counts["forward"], self._counts["tokenize"]
        split = Split(tokenize, forward, total - tokenize - forward)
        return self.flag_outputs(outputs, w), split, 0, int(self._counts["computed"])

    @staticmethod
    def encode_calls(model: Any, w: Workload, batch_size: int) -> Iterator[dict[str, Any]]:
        """FlagEmbedding's ``encode`` (or the compat one) on each of the workload's calls."""
        dense, sparse, colbert = w.outputs
        for texts in w.calls():
            yield model.encode(texts, batch_size=batch_size, max_length=w.max_length,
                               return_dense=dense, return_sparse=sparse,
                               return_colbert_vecs=colbert)

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


def forward_flops(lengths: list[int], config: dict[str, Any], colbert_dim: int,
                  outputs: tuple[bool, bool, bool]) -> float:
    """Floating-point operations of the forward passes over texts of these token counts.

    Per layer and token: 2 x (4 d^2 + 2 d f) for the projections and the feed-forward, plus
    4 n d for attention (scores and weighted sum); then the sparse (2 d) and ColBERT
    (2 d c) heads. Embeddings, norms and softmax are left out (a few percent).
    """
    d, f, layers = (config["hidden_size"], config["intermediate_size"],
                    config["num_hidden_layers"])
    n = np.asarray(lengths, dtype=np.float64)
    total = layers * (2 * n * (4 * d * d + 2 * d * f) + 4 * n * n * d).sum()
    _, sparse, colbert = outputs
    return float(total + sparse * 2 * d * n.sum() + colbert * 2 * d * colbert_dim * n.sum())


def gemm_ceiling(dtype: str, tokens: int = 2048, d: int = 1024, f: int = 4096,
                 repeats: int = 5) -> float:
    """GFLOP/s of the largest matrix product the encoder runs (tokens x d by d x f), best of 5."""
    import torch

    torch_dtype = getattr(torch, dtype)
    x = torch.randn(tokens, d).to(torch_dtype)
    w = torch.randn(f, d).to(torch_dtype) * 0.02
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            torch.nn.functional.linear(x, w)
            best = min(best, time.perf_counter() - t0)
    return 2 * tokens * d * f / best / 1e9


def linear_floor(config: dict[str, Any], dtype: str, tokens: int = 17, repeats: int = 5
                 ) -> float:
    """Seconds for the encoder's matrix products alone on one short text, best of 5.

    Every layer's six weight matrices (q, k, v, output, FFN in and out) are applied in turn to
    ``tokens`` rows, as one forward does, with nothing else in between: the floor under a
    short query's latency on this machine (for short texts it is set by reading every weight
    once from memory).
    """
    import torch

    torch_dtype = getattr(torch, dtype)
    d, f, layers = (config["hidden_size"], config["intermediate_size"],
                    config["num_hidden_layers"])
    shapes = [(d, d)] * 4 + [(f, d), (d, f)]
    weights = [[torch.randn(o, i).to(torch_dtype) * 0.02 for o, i in shapes]
               for _ in range(layers)]
    x = torch.randn(tokens, d).to(torch_dtype)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            for q, k, v, o, up, down in weights:
                h = torch.nn.functional.linear(x, q)
                torch.nn.functional.linear(x, k)
                torch.nn.functional.linear(x, v)
                h = torch.nn.functional.linear(h, o)
                torch.nn.functional.linear(torch.nn.functional.linear(h, up), down)
            best = min(best, time.perf_counter() - t0)
    return best


# ----------------------------------------------------------------------------- main
def bench_checkpoint(size: str, tokenizer: str | None = None) -> tuple[str, str]:
    """The seeded random checkpoint of ``--size`` (built once under .cache/): path, description.

    ``tiny``: 6 x 384; ``real``: BGE-M3's shape (24 x 1024, 16 heads, FFN 4096, init 0.02),
    with a 925-token test vocabulary, or, given ``tokenizer`` (a directory with an XLM-R
    tokenizer: BAAI/bge-m3's, or ``../shared/assets``' me5s), with that vocabulary (250,002
    rows for BGE-M3: its real size, 2.29 GB). ``benchmarks/serve.py`` uses the same checkpoints.
    """
    from bgem3.testing import build_tiny_checkpoint

    if size == "real" and tokenizer:
        return _real_vocabulary_checkpoint(Path(tokenizer).expanduser())
    if size == "real":
        cache = ROOT / ".cache" / "bench-24x1024"
        if not (cache / "config.json").exists():
            print("building a random 24x1024 checkpoint in .cache/bench-24x1024 ...")
            build_tiny_checkpoint(cache, hidden_size=1024, num_layers=24, num_heads=16,
                                  intermediate_size=4096, initializer_range=0.02, seed=0,
                                  weights=("safetensors",))
        return str(cache), "random 24x1024, BGE-M3's shape (seed 0, init 0.02)"
    cache = ROOT / ".cache" / "bench-6x384"
    if not (cache / "config.json").exists():
        build_tiny_checkpoint(cache, hidden_size=384, num_layers=6, num_heads=12,
                              initializer_range=0.1, seed=0)
    return str(cache), "tiny 6x384 (seed 0)"


def _real_vocabulary_checkpoint(tokenizer: Path) -> tuple[str, str]:
    """BGE-M3's shape with the vocabulary of the tokenizer in ``tokenizer`` (random weights)."""
    import shutil

    import torch
    from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaModel

    small, _ = bench_checkpoint("real")
    vocabulary = len(AutoTokenizer.from_pretrained(str(tokenizer)))
    cache = ROOT / ".cache" / f"bench-24x1024-v{vocabulary}"
    if not (cache / "model.safetensors").exists():
        print(f"building a random 24x1024 checkpoint with {vocabulary} tokens in {cache} ...")
        config = json.loads((Path(small) / "config.json").read_text())
        config = {k: v for k, v in config.items()
                  if k not in ("architectures", "transformers_version")}
        torch.manual_seed(0)
        model = XLMRobertaModel(XLMRobertaConfig(**{**config, "vocab_size": vocabulary}),
                                add_pooling_layer=False)
        model.save_pretrained(cache, safe_serialization=True)
        for name in ("tokenizer.json", "sentencepiece.bpe.model", "tokenizer_config.json",
                     "special_tokens_map.json"):
            if (tokenizer / name).exists():
                shutil.copy2(tokenizer / name, cache / name)
        for name in ("colbert_linear.pt", "sparse_linear.pt"):  # the heads fit any vocabulary
            shutil.copy2(Path(small) / name, cache / name)
    return str(cache), (f"random 24x1024, BGE-M3's shape, {vocabulary}-token vocabulary of "
                        f"{tokenizer.name} (seed 0, init 0.02)")


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
    parser.add_argument("--model", help="checkpoint directory (default: see --size)")
    parser.add_argument("--size", choices=["tiny", "real"], default="tiny",
                        help="seeded random checkpoint when no --model: tiny 6x384 or BGE-M3's "
                             "real 24x1024 (default workloads R1,R2)")
    parser.add_argument("--tokenizer", help="with --size real: take the vocabulary and "
                        "tokenizer of this XLM-R tokenizer directory (BGE-M3's: 250,002 rows)")
    parser.add_argument("--workloads", help="default W1,W1d,W2,W3 (tiny), R1,R2 (real)")
    parser.add_argument("--threads", type=int, nargs="+", default=[0],
                        help="torch threads per run; 0 = torch's default")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32", help="bgem3's dtype (FlagEmbedding: fp32)")
    parser.add_argument("--batch-tokens", type=int, default=16384)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (both libraries)")
    parser.add_argument("--flag-fp16", action="store_true", help="FlagEmbedding in fp16")
    parser.add_argument("--compile", action="store_true",
                        help="bgem3 with compile=True (torch.compile, compiled while loading)")
    parser.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto",
                        help="bgem3's backend (auto, the default: ONNX Runtime on CPU, "
                             "exported on the first load and cached; torch elsewhere)")
    parser.add_argument("--compat", action="store_true",
                        help="time bgem3 through bgem3.compat.BGEM3FlagModel (fp32) instead")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[256],
                        help="batch_size of the FlagEmbedding calls, one reference per value "
                             "(--compat: the first)")
    parser.add_argument("--json", type=Path, help="write results here")
    import _peer

    _peer.add_arguments(parser)
    args = parser.parse_args(argv)

    import torch

    warnings.simplefilter("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    path, checkpoint = ((args.model, args.model) if args.model
                        else bench_checkpoint(args.size, args.tokenizer))
    workloads = make_workloads((args.workloads or (
        "R1,R2" if args.size == "real" and not args.model else "W1,W1d,W2,W3")).split(","))
    if args.peer:
        return _peer.peer_main(args, path, checkpoint, workloads)
    config = json.loads((Path(path) / "config.json").read_text())
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    default_threads = torch.get_num_threads()
    if args.compat and args.dtype != "float32":
        parser.error("--compat runs in fp32 (use_fp16=False): leave --dtype at float32")
    if args.compat and args.compile:
        parser.error("--compat and --compile do not go together")
    ours: Ours | Compat = (Compat(path, args.device, args.batch_size[0]) if args.compat
                           else Ours(path, args.dtype, args.batch_tokens, args.device,
                                     args.compile, args.backend))
    if args.compile or ours.name != "bgem3":
        print(f"{ours.name} loaded in {ours.load_s:.0f} s (compiling or exporting included)")
    native = ours.model.native if isinstance(ours, Compat) else ours.model
    colbert_dim = native.colbert_dim or config["hidden_size"]
    first = Flag(path, args.device, args.flag_fp16, args.batch_size[0])
    flags = [first] if len(args.batch_size) == 1 else [
        first.at_batch_size(b) for b in args.batch_size]
    machine = {"cpu": cpu_name(), "cores": os.cpu_count(), "flags": cpu_flags(),
               "torch": torch.__version__, "python": platform.python_version()}
    if args.device != "cpu":
        machine["device"] = torch.cuda.get_device_name(0)
    flag_dtype = "fp16" if args.flag_fp16 else "fp32"
    print(f"checkpoint: {checkpoint}; {ours.name} {args.dtype} vs FlagEmbedding {flag_dtype} "
          f"on {machine.get('device', 'cpu')}, FlagEmbedding batch_size "
          f"{', '.join(map(str, args.batch_size))}")
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, {' '.join(machine['flags'])}")
    header = (f"{'workload':<9}{'thr':>4} {'impl':<14}{'median s':>9}{'texts/s':>10}"
              f"{'tokens/s':>10}{'GFLOP/s':>8}{'ceil':>6}{'ratio':>7}{'waste':>7}{'RSS MB':>8}"
              f"{'tok s':>7}{'fwd s':>7}{'post s':>7}  max|diff|")
    records, ceilings, floors = [], {}, {}
    for threads in args.threads:
        torch.set_num_threads(threads or default_threads)
        if args.device == "cpu":
            for dtype in dict.fromkeys([args.dtype, "float16" if args.flag_fp16 else "float32"]):
                ceilings[(threads, dtype)] = gemm_ceiling(dtype)
            print(f"GEMM ceiling, {threads or default_threads} threads: " + ", ".join(
                f"{dt} {g:.0f} GFLOP/s" for (t, dt), g in ceilings.items() if t == threads))
            if any(w.per_call for w in workloads):
                floors[threads] = linear_floor(config, args.dtype)
                print(f"matrix products alone for one 17-token text ({args.dtype}): "
                      f"{floors[threads] * 1e3:.1f} ms")
        print(header)
        print("-" * len(header))
        for w in workloads:
            repeats = w.repeats or args.repeats
            impls: list[Any] = [ours, *flags]
            results = {impl.name: Result() for impl in impls}
            lengths = [len(ids) for ids in tokenizer(w.texts, truncation=True,
                                                     max_length=w.max_length)["input_ids"]]
            flops = forward_flops(lengths, config, colbert_dim, w.outputs)
            warm_n = 8 if not w.per_call else max(2, min(20, len(w.texts) // 4))
            warm = Workload(w.name, w.texts[:warm_n], w.outputs, w.max_length, w.per_call)
            for impl in impls:  # warm-up (first calls excluded)
                impl.run(warm)
            for _ in range(repeats):
                for impl in impls:
                    measure(impl, w, results[impl.name])
            mine = results[ours.name]
            real = mine.real_tokens
            diffs = max_diffs(mine.outputs, results[flags[0].name].outputs)
            ratios = {f.name: statistics.median(results[f.name].seconds)
                      / statistics.median(mine.seconds) for f in flags}
            gflops = {}
            for impl in impls:
                r = results[impl.name]
                median = statistics.median(r.seconds)
                gflops[impl.name] = flops / median / 1e9
                dtype = args.dtype if impl is ours else (
                    "float16" if args.flag_fp16 else "float32")
                ceiling = ceilings.get((threads, dtype))
                share = f"{gflops[impl.name] / ceiling:.0%}" if ceiling else ""
                waste = 1 - real / r.computed_tokens if r.computed_tokens else 0.0
                per_call = f" ({median / len(w.texts) * 1e3:.1f} ms/call)" if w.per_call else ""
                diff = format_diffs(diffs) if impl is ours else ""
                ratio = f"{ratios[impl.name]:.2f}x" if impl.name in ratios else ""
                print(f"{w.name:<9}{threads or default_threads:>4} {impl.name:<14}{median:>9.3f}"
                      f"{len(w.texts) / median:>10.1f}{real / median:>10.0f}"
                      f"{gflops[impl.name]:>8.1f}{share:>6}{ratio:>7}{waste:>7.1%}"
                      f"{r.peak_rss_mb:>8.0f}{r.split.tokenize:>7.2f}{r.split.forward:>7.2f}"
                      f"{r.split.post:>7.2f}  {diff}{per_call}")
            records.append({
                "workload": w.name, "threads": threads or default_threads,
                "ratio": ratios[flags[0].name], "ratios": ratios,
                "max_abs_diff": diffs, "real_tokens": real, "gflop": flops / 1e9,
                "gflops_per_s": gflops,
                "results": {name: {"median_s": statistics.median(r.seconds),
                                   "seconds": r.seconds, "peak_rss_mb": r.peak_rss_mb,
                                   "computed_tokens": r.computed_tokens,
                                   "split_s": asdict(r.split)} for name, r in results.items()},
            })
            sys.stdout.flush()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "checkpoint": checkpoint, "dtype": args.dtype, "device": args.device,
            "flag_dtype": flag_dtype, "impl": ours.name, "batch_size": args.batch_size,
            "compile": args.compile, "backend": args.backend,
            "load_s": getattr(ours, "load_s", None),
            "gemm_ceiling_gflops": {f"{t or default_threads} threads {dt}": g
                                    for (t, dt), g in ceilings.items()},
            "linear_floor_17_tokens_ms": {f"{t or default_threads} threads": v * 1e3
                                          for t, v in floors.items()},
            "machine": machine, "records": records}, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
