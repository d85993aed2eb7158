"""The benchmark tables and plots of the documentation, generated from ``results/*.json``.

Every benchmark number on the site (the performance page, and the how-to pages on evaluation,
fine-tuning, scaling out and FlagEmbedding that include the same fragments) comes from here,
read from the raw results the benchmark scripts wrote (``--json``), so the pages cannot drift
from them. Derived figures (a Ray run's steady state, the 10M-passage job on paper) are worked
out here from the files' fields too. What a workload
is (how many texts, one call per text or one for all) comes from ``encode.py`` itself.

Writes, into ``--out``, one Markdown fragment per table (``*.inc``, parsed by the page's
MyST ``{include}``; the suffix keeps Sphinx from building them as pages of their own) and
the plots (SVG; the serving figure as PNG, drawn by ``plot_serve.py``).

Usage:
  python benchmarks/report.py --out docs/explanation/_generated
  python benchmarks/report.py --out /tmp/report --results benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from math import ceil
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

Row = list[str]


# ----------------------------------------------------------------------------- formatting
def sec(x: float) -> str:
    """Seconds: ``116.4 s``, ``9.80 s``, ``0.91 s``."""
    return f"{x:,.1f} s" if x >= 10 else f"{x:.2f} s"


def ms(x: float) -> str:
    """Milliseconds with one decimal: ``88.7 ms``."""
    return f"{x:,.1f} ms"


def short_ms(x: float) -> str:
    """Milliseconds: ``0.34 ms``, ``6.5 ms``, ``147 ms``; seconds from 1,000 ms (``2.53 s``)."""
    if x >= 1000:
        return sec(x / 1e3)
    if x < 1:
        return f"{x:.2f} ms"
    return f"{x:.1f} ms" if x < 10 else f"{x:,.0f} ms"


def times(x: float) -> str:
    """A ratio: ``1.46x``."""
    return f"{x:.2f}x"


def sci(x: float) -> str:
    """A small difference: ``1.7e-7`` (``0`` for zero)."""
    if x == 0:
        return "0"
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def mb(x: float) -> str:
    return f"{x:,.0f} MB"


def size(n: float) -> str:
    """Bytes in binary units: ``39.1 MiB``, ``3.81 GiB``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            value = n / scale
            return f"{value:.2f} {unit}" if value < 10 else f"{value:,.1f} {unit}"
    return f"{n:.0f} B"


def table(header: Row, rows: Iterable[Row]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
              for row in rows]
    return "\n".join(lines) + "\n"


def machine(results: dict[str, Any]) -> str:
    """The machine a results file describes, in its own words (CPU, cores, flags, versions)."""
    m = results.get("machine")
    parts = []
    if isinstance(m, dict):
        if m.get("device"):
            parts.append(str(m["device"]))
        cpu = m.get("cpu") or (results.get("cpu") or {}).get("name")
        if cpu:
            flags = m.get("flags") or []
            cores = f", {m['cores']} cores" if m.get("cores") else ""
            parts.append(f"{cpu}{cores}" + (f" ({', '.join(flags)})" if flags else ""))
        if m.get("torch"):
            parts.append(f"torch {m['torch']}")
        if m.get("python"):
            parts.append(f"Python {m['python']}")
    else:
        cpu = results.get("cpu") or {}
        if cpu.get("name"):
            flags = cpu.get("flags") or []
            parts.append(cpu["name"] + (f" ({', '.join(flags)})" if flags else ""))
        elif m:
            parts.append(str(m))
        if results.get("cores"):
            parts.append(f"{results['cores']} cores")
        if results.get("torch"):
            parts.append(f"torch {results['torch']}")
    versions = results.get("versions") or {}
    parts += [f"{name} {v}" for name, v in versions.items() if name not in ("bgem3", "numpy")]
    threads = results.get("threads") or (m.get("threads") if isinstance(m, dict) else None)
    if threads:
        parts.append(f"{threads} thread(s)")
    return "; ".join(dict.fromkeys(parts)) or "not recorded in the file"


def sources(files: dict[str, dict[str, Any]], extra: Callable[[dict[str, Any]], str] | None
            = None) -> str:
    """One line per results file: its name, checkpoint and machine."""
    lines = []
    for name, results in files.items():
        what = [f"`benchmarks/results/{name}`"]
        if results.get("checkpoint"):
            what.append(f"checkpoint: {results['checkpoint']}")
        if extra:
            what.append(extra(results))
        what.append(f"machine: {machine(results)}")
        lines.append("- " + "; ".join(w for w in what if w))
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- workloads
def workloads() -> dict[str, Any]:
    """``encode.py``'s workload definitions, by name (texts, outputs, one call per text)."""
    sys.path.insert(0, str(HERE))
    try:
        import encode
    finally:
        sys.path.remove(str(HERE))
    names = ["W1", "W1d", "W2", "W3", "R1", "R2"]
    return dict(zip(names, encode.make_workloads(names), strict=True))


def describe(w: Any) -> str:
    outputs = [n for n, on in zip(("dense", "sparse", "ColBERT"), w.outputs, strict=True) if on]
    what = "all three outputs" if len(outputs) == 3 else " + ".join(outputs)
    calls = "one call per text" if w.per_call else "one call"
    return f"{w.name}: {len(w.texts):,} texts, {what}, {calls}"


def run_time(w: Any, seconds: float) -> str:
    """A workload's time: per call when it is one call per text."""
    return ms(1e3 * seconds / len(w.texts)) + "/call" if w.per_call else sec(seconds)


# ----------------------------------------------------------------------------- loading
def load(results_dir: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((results_dir / name).read_text(encoding="utf-8"))
    return data


def ours(results: dict[str, Any]) -> str:
    """The name of bgem3's entry in a record's results (``bgem3``, ``bgem3 onnx``, ...)."""
    return next(k for k in results if k.startswith("bgem3"))


def diffs(d: dict[str, float] | None, low_precision: bool) -> str:
    if not d:
        return ""
    if low_precision:
        return f"dense cosine >= {d['dense_min_cosine']:.5f}"
    keys = [k for k in ("dense", "sparse", "colbert") if k in d]
    if all(d[k] == 0 for k in keys):
        return "0"
    return ", ".join(f"{'ColBERT' if k == 'colbert' else k} {sci(d[k])}" for k in keys)


# ----------------------------------------------------------------------------- encode: peer
PEER_FILES = ("encode-cpu-real-peer.json", "encode-cpu-real-v250k-peer.json")


def engine_label(name: str, engine: dict[str, Any]) -> str:
    if engine.get("library") == "bgem3":
        kwargs = ", ".join(f"{k}={json.dumps(v)}" for k, v in engine.get("kwargs", {}).items())
        call = f"`BGEM3(..., {kwargs})`" if kwargs else "`BGEM3(...)`"
        return f"bgem3 {call} ({engine.get('backend')}, {engine.get('dtype')})"
    return f"{engine.get('library')} {name.split()[-1]}"


def peer_table(results: dict[str, Any], wl: dict[str, Any]) -> str:
    engines: dict[str, Any] = results["engines"]
    names = [n for n in engines if n not in results.get("skipped", {})]
    reference = results["reference"]
    header = [""] + [engine_label(n, engines[n]) for n in names]
    rows = []
    worst: dict[str, dict[str, float]] = {}
    for record in results["records"]:
        w = wl[record["workload"]]
        row = [describe(w) + (", p50 per call" if w.per_call else ", median round")]
        for n in names:
            r = record["results"].get(n)
            if r is None:
                row.append("")
                continue
            t = ms(1e3 * r["p50_call_s"]) if w.per_call else sec(r["median_s"])
            extra = [] if n == reference else [times(r["speedup_vs_lite_fp32"])]
            if not w.per_call:
                extra.append(f"{pct(r['padding'])} padding")
            row.append(t + (f" ({', '.join(extra)})" if extra else ""))
            for k, v in (r.get("diffs_vs_lite_fp32") or {}).items():
                mine = worst.setdefault(n, {})
                pick = min if k.endswith("cosine") else max
                mine[k] = pick(mine.get(k, v), v)
        rows.append(row)
    startup = results.get("startup") or {}
    if startup:
        rows.append(["load in a fresh process (export cached), imports included"]
                    + [sec(startup[n]["load_s"]) if n in startup else "" for n in names])
        rows.append(["peak RSS of that process (load, a query, the 4 longest R1 passages)"]
                    + [mb(startup[n]["peak_rss_mb"]) if n in startup else "" for n in names])
    rows.append([f"largest difference to {reference}"]
                + [diffs(worst.get(n), engines[n].get("dtype") == "int8" or "int8" in n)
                   for n in names])
    return table(header, rows)


# ----------------------------------------------------------------------------- encode: int8 quality
def int8_quality(results: dict[str, Any]) -> str:
    datasets = [r["dataset"] for r in results["reports"]]
    by = {(r["dataset"], m["mode"]): m for r in results["reports"] for m in r["results"]}
    cmp = {(r["dataset"], m["mode"]): m for r in results["compared_reports"]
           for m in r["results"]}
    modes = [m["mode"] for m in results["reports"][0]["results"]]
    rows = [[mode] + [f"{by[d, mode]['ndcg@10']:.4f} -> {cmp[d, mode]['ndcg@10']:.4f}"
                      for d in datasets] for mode in modes]
    close = results["closeness"]
    for key, label in (("dense_cosine_min", "dense cosine to fp32, lowest"),
                       ("dense_cosine_mean", "dense cosine to fp32, mean"),
                       ("colbert_token_cosine_mean", "ColBERT token cosine to fp32, mean")):
        rows.append([label] + [f"{close[d][key]:.4f}" for d in datasets])
    rows.append(["texts compared"] + [f"{close[d]['texts']:,}" for d in datasets])
    return table(["nDCG@10, fp32 -> int8", *datasets], rows)


# ----------------------------------------------------------------------------- quality
QUALITY_FILE = "quality-me5s-base.json"
FINETUNE_FILE = "finetune-me5s-bible.json"


def _dataset(report: dict[str, Any]) -> str:
    return f"{report['dataset']} ({report['queries']:,} queries, {report['documents']:,} documents)"


def quality_table(results: dict[str, Any]) -> str:
    """``quality.py``'s reports: nDCG@10 / Recall@100 / MRR@10 of every mode, per dataset."""
    reports = results["reports"]
    metrics = ("ndcg@10", "recall@100", "mrr@10")
    modes = list(dict.fromkeys(m["mode"] for r in reports for m in r["results"]))
    rows = []
    for mode in modes:
        row = [mode]
        for report in reports:
            found = next((m for m in report["results"] if m["mode"] == mode), None)
            row.append(" / ".join(f"{found[k]:.3f}" for k in metrics) if found else "")
        rows.append(row)
    # modes a report could not compute, one row per set of reasons
    missing: dict[tuple[str, ...], list[str]] = {}
    for mode in dict.fromkeys(m for r in reports for m in r.get("missing") or {}):
        reasons = tuple((r.get("missing") or {}).get(mode, "") for r in reports)
        missing.setdefault(reasons, []).append(mode)
    for reasons, names in missing.items():
        rows.append([", ".join(names)] + [f"not computed: {why}" if why else ""
                                          for why in reasons])
    return table(["mode: nDCG@10 / Recall@100 / MRR@10", *map(_dataset, reports)], rows)


def _ndcg(report: dict[str, Any]) -> dict[str, float]:
    return {m["mode"]: m["ndcg@10"] for m in report["results"]}


def finetune_table(results: dict[str, Any]) -> str:
    """``finetune.py``: nDCG@10 of every mode with new heads and after each run, per dev set."""
    datasets = list(results["start"])
    columns = [(d, what, _ndcg(report)) for d in datasets for what, report in
               [("new heads", results["start"][d])]
               + [(run, r["after"][d]) for run, r in results["runs"].items()]]
    rows = []
    for mode in _ndcg(results["start"][datasets[0]]):
        row = [mode]
        for d, _, scores in columns:
            value = scores.get(mode)
            mine = [c[mode] for dd, _, c in columns if dd == d and mode in c]
            # in bold: the best of a dev set, where it beats the new heads
            best = value is not None and value == max(mine) and value > mine[0]
            row.append("" if value is None else f"**{value:.3f}**" if best else f"{value:.3f}")
        rows.append(row)
    header = ["mode"] + [f"{d}: {what}" for d, what, _ in columns]
    return table(header, rows)


def finetune_runs(results: dict[str, Any]) -> str:
    """Each run's training time, rate, last logged sparse loss and peak memory, as recorded."""
    a = results["args"]
    rows = []
    for run, r in results["runs"].items():
        rss = f"{r['peak_rss_mb'] / 1024:.1f} GiB" if r.get("peak_rss_mb") else "not recorded"
        note = " (reused from an earlier run)" if r.get("reused") else ""
        rate = (f"{int(a['max_steps']) * int(a['batch_size']) / r['seconds']:.1f}"
                if a.get("max_steps") and a.get("batch_size") and r.get("seconds") else "")
        last = (r.get("log") or [{}])[-1]
        loss = f"{last['loss_sparse']:.2f} (step {last.get('step', '?')})" \
            if "loss_sparse" in last else ""
        rows.append([run, f"{r['seconds']:,.0f} s{note}", rate, loss, rss])
    return table(["run", "training time", "training queries/s", "sparse loss, last logged",
                  "peak RSS of the benchmark process"], rows)


def finetune_notes(results: dict[str, Any]) -> str:
    """Per dev set and run: the best mode, the three-way fusion and dense, to four decimals."""
    lines = []
    for d, start in results["start"].items():
        parts = []
        for run, r in results["runs"].items():
            scores = _ndcg(r["after"][d])
            best = max(scores, key=lambda m: scores[m])
            shown = [f"the best mode `{best}` {scores[best]:.4f}"] + [
                f"`{m}` {scores[m]:.4f}" for m in ("colbert+sparse+dense", "dense")
                if m in scores and m != best]
            parts.append(f"after {run}, " + ", ".join(shown))
        lines.append(f"- {d} ({start['queries']:,} queries): " + "; ".join(parts) + ".")
    return "\n".join(lines) + "\n"


def finetune_settings(results: dict[str, Any]) -> str:
    a = results["args"]
    keep = ("pairs", "range", "negatives", "group_size", "batch_size", "max_steps",
            "learning_rate", "max_length", "bf16", "seed")
    what = ", ".join(f"`{k}={a[k]}`" for k in keep if k in a)
    epochs = [r["log"][-1]["epoch"] for r in results["runs"].values()
              if r.get("log") and "epoch" in r["log"][-1]]
    if epochs:
        what += f"; {max(epochs):.1f} epoch"
    weights = next((r["after"][d].get("weights") for r in results["runs"].values()
                    for d in r["after"]), None)
    if weights:
        what += f"; fusion weights {tuple(weights)}"
    return "settings: " + what


# ------------------------------------------------------------------ encode: vs FlagEmbedding
REAL_FILES = ("encode-cpu-real-fp32.json", "encode-cpu-real-query-float32.json",
              "encode-cpu-real-bf16.json", "encode-cpu-real-query-bfloat16.json",
              "encode-cpu-real-onnx.json", "encode-cpu-real-compiled.json")
TINY_FILES = ("encode-cpu-fp32.json", "encode-cpu-bf16.json", "encode-cpu-fp32-1thread.json")
GPU_FILES = ("encode-cuda-h100-fp32.json", "encode-cuda-h100-fp16.json")
COMPAT_FILES = ("encode-cpu-compat.json",)


def real_extra(results: dict[str, Any]) -> str:
    """What a real-size run recorded beside its table: bgem3's load time, the products' floor."""
    what = []
    if results.get("load_s"):
        what.append(f"bgem3 load (export or compilation included): {sec(results['load_s'])}")
    for threads, value in (results.get("linear_floor_17_tokens_ms") or {}).items():
        what.append(f"torch's eager matrix products alone for one 17-token text "
                    f"({results.get('dtype', '')}, {threads}): {short_ms(value)}")
    return "; ".join(what)


def run_name(results: dict[str, Any]) -> str:
    what = [results.get("impl", "bgem3"), results.get("dtype", "")]
    if results.get("batch_size"):
        sizes = results["batch_size"]
        sizes = sizes if isinstance(sizes, list) else [sizes]
        what.append("FE batch_size " + "/".join(str(s) for s in sizes))
    return " ".join(w for w in what if w)


def versus_flagembedding(files: dict[str, dict[str, Any]], wl: dict[str, Any],
                         gflops: bool) -> str:
    header = ["run", "workload", "bgem3", "reference (times slower than bgem3)",
              "padding (bgem3 / reference)",
              "peak RSS growth during the run (bgem3 / reference)"]
    if gflops:
        header.append("bgem3 GFLOP/s (share of the GEMM ceiling)")
    header.append("largest difference")
    rows = []
    for name, results in files.items():
        for record in results["records"]:
            w = wl[record["workload"]]
            res = record["results"]
            me = ours(res)
            refs = [k for k in res if k != me]
            ratios = record.get("ratios") or {refs[0]: record["ratio"]}
            mine = res[me]

            def padding(r: dict[str, Any], real: int = record["real_tokens"]) -> str:
                return pct(1 - real / r["computed_tokens"])

            row = [f"`{name}` ({run_name(results)})", describe(w),
                   run_time(w, mine["median_s"]),
                   "; ".join(f"{k}: {run_time(w, res[k]['median_s'])} "
                             f"(**{times(ratios[k])}**)" for k in refs),
                   " / ".join([padding(mine)] + [padding(res[k]) for k in refs]),
                   " / ".join(mb(r["peak_rss_mb"]) for r in [mine] + [res[k] for k in refs])
                   if not w.per_call else ""]
            if gflops:
                ceiling = (results.get("gemm_ceiling_gflops") or {}).get(
                    f"{record['threads']} threads {results['dtype']}")
                value = (record.get("gflops_per_s") or {}).get(me)
                row.append(f"{value:.1f} of {ceiling:.1f} ({pct(value / ceiling)})"
                           if value and ceiling and not w.per_call else "")
            low = results.get("dtype") not in ("float32", None)
            row.append(diffs(record["max_abs_diff"], low))
            rows.append(row)
    return table(header, rows)


# ----------------------------------------------------------------------------- index
INDEX_FILES = ("index-cpu-1024d.json", "index-cpu-1m-fp32.json", "index-cpu-1m-fp16.json")
HNSW_FILES = ("index-cpu-1m-hnsw.json",)


def latency(lat: dict[str, float]) -> str:
    return f"{short_ms(lat['single_p50'])} single, {short_ms(lat['batched_per_query'])} batched"


def index_table(files: dict[str, dict[str, Any]]) -> str:
    header = ["documents", "dense", "ColBERT (fp16)", "build", "stored (dense / sparse / ColBERT)",
              "sparse", "dense", "hybrid + ColBERT rerank"]
    rows = []
    hnsw = False
    for results in files.values():
        a = results["args"]
        for r in results["records"]:
            b = r["bytes"]
            stored = " / ".join(size(b[k]) for k in ("dense", "sparse", "colbert"))
            lat = r["latency_ms"]
            row = [f"{r['docs']:,}", f"{a['dense_dim']}-d {a['dense_dtype']}"
                   + (f", {a['dense_search']}" if a.get("dense_search") else ""),
                   f"{a['colbert_dim']}-d, ~{a['doc_tokens']} tokens",
                   f"{r['build_docs_per_s']:,.0f} docs/s", stored,
                   latency(lat["sparse"]), latency(lat["dense"]), latency(lat["hybrid+rerank"])]
            if "recall_at_10_vs_exact" in r:
                hnsw = True
                graph = next((v for k, v in b.items() if k.startswith("hnsw")), None)
                row += [size(graph) if graph else "", f"{r['recall_at_10_vs_exact']:.3f}"]
            rows.append(row)
    if hnsw:
        header += ["HNSW graph (estimated)", "recall@10 vs exact"]
    return table(header, rows)


def index_settings(results: dict[str, Any]) -> str:
    a = results["args"]
    keep = [f"{k}={v}" for k, v in a.items() if k not in ("json", "sizes")]
    return "settings: " + ", ".join(f"`{k}`" for k in keep)


# ----------------------------------------------------------------------------- serving
SERVE_FILES = ("serve-cpu-real.json", "serve-cpu-real-quiet.json", "serve-cpu-tiny.json")


def serve_table(files: dict[str, dict[str, Any]]) -> str:
    header = ["run", "workload", "clients", "texts/s", "vs 1 client", "p50", "p99",
              "texts per model call"]
    rows = []
    for name, results in files.items():
        points = results["points"]
        for wl in sorted({p["workload"] for p in points}, key=["Q", "P"].index):
            mine = sorted((p for p in points if p["workload"] == wl), key=lambda p: p["clients"])
            one = next((p for p in mine if p["clients"] == 1), None)
            for p in mine:
                versus = times(p["texts_per_s"] / one["texts_per_s"]) if one else ""
                rows.append([f"`{name}`", wl, str(p["clients"]), f"{p['texts_per_s']:.1f}",
                             versus, short_ms(p["p50_ms"]), short_ms(p["p99_ms"]),
                             f"{p['rows_per_call']:.1f}"])
    return table(header, rows)


def serve_reference(files: dict[str, dict[str, Any]]) -> str:
    """The in-process references and the one-client A/B of each serving run."""
    rows = []
    for name, results in files.items():
        ref = results.get("in_process") or {}
        for key, label in (("Q1", "queries in-process, one at a time"),
                           ("Q", "queries in-process, one batch"),
                           ("Q16", "queries in-process, 16 per call (packed, no padding)"),
                           ("Q16p", "queries in-process, 16 per call, padded to one length"),
                           ("P1", "passages in-process, one at a time"),
                           ("P", "passages in-process, one batch")):
            if key in ref:
                r = ref[key]
                p50 = short_ms(r["p50_ms"]) if "p50_ms" in r else ""
                rate = f"{r['texts_per_s']:.1f}"
                single = ref.get(key[0] + "1")
                if key.startswith("Q16") and single:
                    rate += f" ({times(r['texts_per_s'] / single['texts_per_s'])} one at a time)"
                rows.append([f"`{name}`", label, rate, p50])
        for wl in ("Q", "P"):
            ab = results.get(f"one_client_ab_{wl}")
            if ab:
                rows.append([f"`{name}`", f"one client, server against in-process ({wl}), "
                             f"{ab['pairs']} interleaved pairs",
                             times(ab["ratio"]) + " of in-process p50",
                             f"{short_ms(ab['server_p50_ms'])} vs "
                             f"{short_ms(ab['local_p50_ms'])} (+{short_ms(ab['added_ms'])})"])
        s = results.get("starvation")
        if s:
            rows.append([f"`{name}`", "a query alone", "", short_ms(s["alone"]["p50_ms"])])
            batch = results["settings"]["stream_batch"]
            rows.append([f"`{name}`", f"a query beside a client streaming {batch} passage(s) "
                         "per request", "", short_ms(s["loaded"]["p50_ms"])])
            if "stream" in s:
                rows.append([f"`{name}`", f"that client's requests of {batch} passage(s)", "",
                             short_ms(s["stream"]["p50_ms"])])
    return table(["run", "what", "texts/s or ratio", "p50"], rows)


def serve_settings(results: dict[str, Any]) -> str:
    s = results["settings"]
    return (f"{results['dtype']} on {results['device']}, route `{results['route']}`; clients "
            f"{s['clients']} (queries), {s['passage_clients']} (passages), {s['duration']:g} s "
            f"per point ({s['passage_duration']:g} s for passages) after {s['warmup']:g} s "
            f"of warm-up, clients at nice +{s['client_nice']}")


# ----------------------------------------------------------------------------- scale out
SCALE_OUT_FILE = "scale-out-cpu.json"
SCALE_OUT_DIM = 384  # scale_out.py's default checkpoint: the seeded 6 x 384 one (bgem3.testing)


def _threads(results: dict[str, Any], actors: int) -> int:
    """An actor's threads: ``--threads`` for the single actor, one each beyond (scale_out.py)."""
    return int(results["threads"]) if actors == 1 else 1


def steady_state(results: dict[str, Any]) -> dict[int, float]:
    """Seconds of each Ray run without the actors' start (started in parallel): total - fixed."""
    return {int(n): r["total_s"] - results["actor_start_s"] for n, r in results["ray"].items()}


def scale_out_table(results: dict[str, Any]) -> str:
    steady = steady_state(results)
    rows = [[f"in-process `encode_documents`, {results['threads']} thread(s)",
             f"{sec(results['in_process_s'])} "
             f"({results['tokens'] / results['in_process_s']:,.0f} tokens/s)"]]
    for n, r in results["ray"].items():
        n = int(n)
        cell = f"{sec(r['total_s'])} in all; steady state {sec(steady[n])}"
        if n > 1 and 1 in steady and steady[n] > 0:
            cell += f", **{times(steady[1] / steady[n])}** one actor"
        rows.append([f"Ray Data, {n} actor(s) of {_threads(results, n)} thread(s)"
                     + (" (`tasks_per_actor=1`)" if n > 1 else ""), cell])
    rows.append(["fixed cost of an actor (start, model load and first output, measured on a "
                 "1-row dataset); steady state = in all - this", sec(results["actor_start_s"])])
    if 1 in steady and steady[1] > 0:
        rows.append(["Ray's efficiency at equal threads (in-process / 1 actor's steady state)",
                     f"**{results['in_process_s'] / steady[1]:.2f}**"])
    n_passages = results["passages"]
    columns = []
    for k, v in results["bytes_per_passage"].items():
        if k == "sparse_values":
            continue
        if k == "sparse_indices":
            k, v = "sparse", v + results["bytes_per_passage"].get("sparse_values", 0.0)
        total = v * n_passages / 1e6
        columns.append(f"{'ColBERT' if k == 'colbert' else k} {v:,.1f}"
                       + (f" ({total:,.1f} MB in all)" if total >= 1 else ""))
    rows.append([f"Parquet bytes per passage (column, {n_passages:,} passages)",
                 ", ".join(columns)])
    rows.append(["tokens per passage, mean", f"{results['tokens'] / n_passages:,.1f}"])
    for key, label in (("embedded", "`add_parquet` into the embedded `HybridIndex`"),
                       ("qdrant_local", "`add_parquet` into Qdrant, local mode (in-process "
                                        "Python, not a server)")):
        rates = [f"{results[k]:,} rows/s {what}" for k, what in
                 ((f"add_parquet_{key}_rows_s", "without ColBERT"),
                  (f"add_parquet_{key}_colbert_rows_s", "with it")) if k in results]
        if rates:
            rows.append([label, "; ".join(rates)])
    return table(["", "result"], rows)


def scale_out_sources(results: dict[str, Any]) -> str:
    return sources({SCALE_OUT_FILE: results},
                   lambda r: f"{r['passages']:,} passages, {r['tokens']:,} tokens, ColBERT "
                             f"{'on' if r['colbert'] else 'off'}, {r['rows_per_call']:,} rows "
                             "per actor call")


PAPER_PASSAGES = 10_000_000
PAPER_GPU_FILE = "encode-cuda-h100-fp16.json"


def _rate(record: dict[str, Any]) -> float:
    """bgem3's tokens per second in a record: its real tokens over its median time."""
    return float(record["real_tokens"] / record["results"][ours(record["results"])]["median_s"])


def paper_job(scale: dict[str, Any], gpu: dict[str, Any], cpu: dict[str, dict[str, Any]],
              wl: dict[str, Any]) -> str:
    """The 10M-passage job at BGE-M3's real size, worked out from the measured rates."""
    n = PAPER_PASSAGES
    w1 = next(r for r in gpu["records"] if r["workload"] == "W1")
    per_passage = w1["real_tokens"] / len(wl["W1"].texts)
    tokens = n * per_passage
    gpu_rate = _rate(w1)
    gpu_hours = tokens / gpu_rate / 3600
    gpu_s = w1["results"][ours(w1["results"])]["median_s"]
    lines = [f"At BGE-M3's real size (24 x 1024) and {per_passage:,.0f} tokens per passage (the "
             f"mix of the speed benchmark's W1), {n:,} passages are {tokens / 1e9:,.2f} billion "
             "tokens (worked out by `benchmarks/report.py` from the results files named below):",
             ""]
    device = (gpu.get("machine") or {}).get("device") or "GPU"
    compute = (f"- **Compute.** One {device} (`{PAPER_GPU_FILE}`) encodes W1 (all three outputs, "
               f"{gpu['dtype']}) at {gpu_rate:,.0f} tokens/s ({w1['real_tokens']:,} tokens in "
               f"{sec(gpu_s)}), so {n:,} passages take **{gpu_hours:,.1f} GPU-hours**: one hour "
               f"of wall time on {ceil(gpu_hours)} GPUs, or {ceil(gpu_hours)} actors of "
               f"`num_gpus=1`.")
    steady = steady_state(scale).get(1)
    if steady:
        compute += (f" Ray's per-actor fixed cost ({sec(scale['actor_start_s'])} in "
                    f"`{SCALE_OUT_FILE}`; longer for the 2.3 GB real weights from remote "
                    "storage) is noise at this scale, and its efficiency at equal resources is "
                    f"{scale['in_process_s'] / steady:.2f}, so the job scales with the number "
                    "of actors.")
    best = max(((name, r) for name, results in cpu.items() for r in results["records"]
                if r["workload"] == "R1"), key=lambda item: _rate(item[1]), default=None)
    if best:
        name, record = best
        cores = (cpu[name].get("machine") or {}).get("cores", record["threads"])
        compute += (f" On CPUs it is not a sensible job: the fastest real-size CPU run "
                    f"(`{name}`, {run_name(cpu[name])}, R1: all three outputs, "
                    f"{record['threads']} threads) encodes {_rate(record):,.0f} tokens/s, i.e. "
                    f"{tokens / _rate(record) / 3600:,.0f} hours of a {cores}-core machine.")
    lines.append(compute)
    colbert_kb = per_passage * 1024 * 2 / 1e3
    lines.append(
        f"- **Output volume.** Dense 1024-d: 4,096 bytes per passage in fp32 (2,048 in fp16), "
        f"**{n * 4096 / 1e9:,.0f} GB** (fp32) for {n:,} before Parquet's overhead; sparse: one "
        "int32 + one float32 per distinct weighted token, ~1 KB per passage (an estimate: ~120 "
        "distinct tokens; the random test model weighs too few to measure it), "
        f"**~{n * 1e3 / 1e9:,.0f} GB**; ColBERT 1024-d fp16: 2,048 bytes per token, "
        f"{colbert_kb:,.0f} KB per passage, **{n * colbert_kb / 1e9:,.1f} TB**. ColBERT at "
        "this scale belongs in a store built for it (or at a reduced dimension), not in one "
        "index; keep it out of the encoding (`colbert=False`) and rerank from the text when "
        "needed.")
    embedded = scale.get("add_parquet_embedded_rows_s")
    if embedded:
        scaled = round(embedded * SCALE_OUT_DIM / 1024, -3)
        ingest = (f"- **Ingest.** Parquet into the embedded index ran at {embedded:,} rows/s "
                  f"without ColBERT at {SCALE_OUT_DIM}-d; 1024-d rows carry "
                  f"{1024 / SCALE_OUT_DIM:.1f}x the bytes, so expect roughly {scaled:,.0f} "
                  f"rows/s: {n:,} rows in ~{n / scaled / 60:,.0f} minutes (the index then holds "
                  f"{n * 1024 * 2 / 1e9:,.0f} GB of fp16 or {n * 1024 * 4 / 1e9:,.0f} GB of fp32 "
                  "dense vectors in RAM, plus the lexical postings). For this many documents a "
                  "Qdrant server is the usual home: `add_parquet` uploads with `parallel` "
                  "processes and HNSW indexing off until the end")
        local = scale.get("add_parquet_qdrant_local_rows_s")
        ingest += (f"; the local-mode rate ({local:,} rows/s, pure Python) is not a server's "
                   "and sizes nothing." if local else ".")
        lines.append(ingest)
    files = {SCALE_OUT_FILE: scale, PAPER_GPU_FILE: gpu}
    if best:
        files[best[0]] = cpu[best[0]]
    return "\n".join(lines) + "\n\n" + sources(files)


# ----------------------------------------------------------------------------- plots
def plot_peer(results: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    engines = results["engines"]
    records = results["records"]
    fig, axes = plt.subplots(1, len(records), figsize=(5.2 * len(records), 3.4))
    axes = axes if len(records) > 1 else [axes]
    for ax, record in zip(axes, records, strict=True):
        names = list(record["results"])
        per_call = record["per_call"]
        values = [1e3 * record["results"][n]["p50_call_s"] if per_call
                  else record["results"][n]["median_s"] for n in names]
        colors = ["tab:blue" if engines[n]["library"] == "bgem3" else "tab:gray" for n in names]
        ax.barh(range(len(names)), values, color=colors)
        ax.set_yticks(range(len(names)), [n if engines[n]["library"] != "bgem3"
                                          else f"bgem3 {n}" for n in names])
        ax.invert_yaxis()
        ax.set_xlabel("ms per call, p50" if per_call else "s, median round")
        ax.set_title(f"{record['workload']}: {record['texts']} texts"
                     + (", one call each" if per_call else ", one call"), fontsize=9)
        ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle(f"bgem3 and {results['peer']} on the same weights; {machine(results)}",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(out, metadata={"Date": None})
    plt.close(fig)


def plot_index(files: dict[str, dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for name, results in files.items():
        dtype = results["args"]["dense_dtype"]
        records = sorted(results["records"], key=lambda r: r["docs"])
        docs = [r["docs"] for r in records]
        for kind, style in (("single_p50", "o-"), ("batched_per_query", "s--")):
            ax.plot(docs, [r["latency_ms"]["hybrid+rerank"][kind] for r in records], style,
                    label=f"{name.removesuffix('.json')} ({dtype}), {kind.replace('_', ' ')}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("documents")
    ax.set_ylabel("hybrid + ColBERT rerank, ms per query")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out, metadata={"Date": None})
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def build(results_dir: Path, out: Path) -> list[Path]:
    """Write every table and plot into ``out``; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    wl = workloads()
    written: list[Path] = []

    def write(name: str, text: str) -> None:
        path = out / name
        path.write_text(text, encoding="utf-8")
        written.append(path)

    def group(names: Iterable[str]) -> dict[str, dict[str, Any]]:
        return {n: load(results_dir, n) for n in names if (results_dir / n).exists()}

    for name in PEER_FILES:
        if (results_dir / name).exists():
            results = load(results_dir, name)
            stem = name.removesuffix(".json")
            write(f"{stem}.inc", peer_table(results, wl) + "\n" + sources({name: results}))
            plot_peer(results, out / f"{stem}.svg")
            written.append(out / f"{stem}.svg")
    if (results_dir / "quality-int8-me5s-bible.json").exists():
        results = load(results_dir, "quality-int8-me5s-bible.json")
        write("quality-int8.inc", int8_quality(results) + "\n" + sources(
            {"quality-int8-me5s-bible.json": results},
            lambda r: f"model: {r['model']}; reference: {r['reference']}; compared: "
                      f"{r['compared']}"))
    if (results_dir / QUALITY_FILE).exists():
        results = load(results_dir, QUALITY_FILE)
        write("quality-base.inc", quality_table(results) + "\n" + sources(
            {QUALITY_FILE: results}, lambda r: f"split: {r['reports'][0]['split']}"))
    if (results_dir / FINETUNE_FILE).exists():
        results = load(results_dir, FINETUNE_FILE)
        write("finetune.inc", finetune_table(results) + "\n" + finetune_runs(results) + "\n"
              + sources({FINETUNE_FILE: results}, finetune_settings))
        write("finetune-notes.inc", finetune_notes(results))
    for stem, names, gflops in (("encode-cpu-real", REAL_FILES, True),
                                ("encode-cpu-tiny", TINY_FILES, False),
                                ("encode-cuda", GPU_FILES, False),
                                ("encode-compat", COMPAT_FILES, False)):
        files = group(names)
        if files:
            write(f"{stem}.inc", versus_flagembedding(files, wl, gflops) + "\n"
                  + sources(files, real_extra if gflops else None))
    for stem, names in (("index", INDEX_FILES), ("index-hnsw", HNSW_FILES)):
        files = group(names)
        if files:
            write(f"{stem}.inc", index_table(files) + "\n" + sources(files, index_settings))
    files = group(INDEX_FILES)
    if files:
        plot_index(files, out / "index.svg")
        written.append(out / "index.svg")
    files = group(SERVE_FILES)
    if files:
        write("serve.inc", serve_table(files) + "\n" + serve_reference(files) + "\n"
              + sources(files, serve_settings))
        sys.path.insert(0, str(HERE))
        try:
            import plot_serve
        finally:
            sys.path.remove(str(HERE))
        for name, results in files.items():
            path = out / f"{name.removesuffix('.json')}.png"
            plot_serve.plot(results, path)
            written.append(path)
    if (results_dir / SCALE_OUT_FILE).exists():
        results = load(results_dir, SCALE_OUT_FILE)
        write("scale-out.inc", scale_out_table(results) + "\n" + scale_out_sources(results))
        if (results_dir / PAPER_GPU_FILE).exists():
            write("scale-out-10m.inc", paper_job(results, load(results_dir, PAPER_GPU_FILE),
                                                 group(REAL_FILES), wl))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True,
                        help="directory for the tables (*.inc) and plots")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="directory of the results files (default: benchmarks/results)")
    args = parser.parse_args(argv)
    for path in build(args.results, args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
