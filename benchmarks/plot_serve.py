"""Plot ``benchmarks/serve.py`` results: one PNG beside each JSON file.

Three panels: throughput (texts/s) against concurrent clients for single queries (Q) and
single passages (P), with the in-process references as lines; p50 and p99 latency against
clients; and query latency alone and while a client streams long passages (starvation).

Usage:
  python benchmarks/plot_serve.py benchmarks/results/serve-cpu-tiny.json \\
      benchmarks/results/serve-cpu-real.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

COLORS = {"Q": "tab:blue", "P": "tab:orange"}
NAMES = {"Q": "single queries", "P": "single passages"}


def plot(results: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (speed, latency, starve) = plt.subplots(1, 3, figsize=(15, 4.6),
                                                 gridspec_kw={"width_ratios": [1.2, 1.2, 0.8]})
    points, reference = results["points"], results.get("in_process", {})
    for wl in ("Q", "P"):
        mine = sorted((p for p in points if p["workload"] == wl), key=lambda p: p["clients"])
        if not mine:
            continue
        n = [p["clients"] for p in mine]
        color = COLORS[wl]
        speed.plot(n, [p["texts_per_s"] for p in mine], "o-", color=color,
                   label=f"{NAMES[wl]}: server")
        if wl in reference:
            speed.axhline(reference[wl]["texts_per_s"], color=color, ls="--", lw=1,
                          label=f"{NAMES[wl]}: in-process, one batch")
            speed.axhline(reference[wl + "1"]["texts_per_s"], color=color, ls=":", lw=1,
                          label=f"{NAMES[wl]}: in-process, one at a time")
            latency.axhline(reference[wl + "1"]["p50_ms"], color=color, ls=":", lw=1,
                            label=f"{NAMES[wl]}: in-process p50, one at a time")
        latency.plot(n, [p["p50_ms"] for p in mine], "o-", color=color, label=f"{wl} p50")
        latency.plot(n, [p["p99_ms"] for p in mine], "s--", color=color, alpha=0.6,
                     label=f"{wl} p99")
        bad = [p for p in mine if p.get("disturbed")]
        if bad:  # other processes took the CPU during these points: ringed in red
            for ax, key in ((speed, "texts_per_s"), (latency, "p50_ms")):
                ax.plot([p["clients"] for p in bad], [p[key] for p in bad], "o", ms=14,
                        mfc="none", mec="red", label=f"{wl}: disturbed by other processes")
    group = next((r for k, r in reference.items() if k.startswith("Q") and k.endswith("p")),
                 None)
    if group:
        n = group["group"]
        speed.plot([n], [reference[f"Q{n}"]["texts_per_s"]], "x", color=COLORS["Q"], ms=9,
                   label=f"queries in-process, {n} at a time (CPU: packed)")
        speed.plot([n], [group["texts_per_s"]], "*", color=COLORS["Q"], ms=11,
                   label=f"queries in-process, {n} at a time, padded")
    ticks = sorted({p["clients"] for p in points})
    for ax, label in ((speed, "texts/s"), (latency, "latency, ms")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_yscale("log")
        ax.set_xlabel("concurrent clients (one text per request, back to back)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    speed.set_title("throughput")
    latency.set_title("latency per request")
    s = results.get("starvation") or {}
    if s:
        labels = ["alone", "with a passage stream"]
        x = range(len(labels))
        if s["alone"].get("disturbed") or s["loaded"].get("disturbed"):
            labels = [f"{label}\n(disturbed)" for label in labels]
        p50 = [s["alone"]["p50_ms"], s["loaded"]["p50_ms"]]
        p99 = [s["alone"]["p99_ms"], s["loaded"]["p99_ms"]]
        starve.bar([i - 0.2 for i in x], p50, 0.4, label="p50", color="tab:blue")
        starve.bar([i + 0.2 for i in x], p99, 0.4, label="p99", color="tab:blue", alpha=0.5)
        starve.set_xticks(list(x), labels)
        starve.set_yscale("log")
        starve.set_ylabel("query latency, ms")
        batch = results["settings"]["stream_batch"]
        starve.set_title(f"queries vs a stream of {batch} x 512-token passages", fontsize=9)
        starve.legend(fontsize=7)
        starve.grid(True, axis="y", which="both", alpha=0.3)
    machine = results["machine"]
    fig.suptitle(f"bgem3 serve, {results['checkpoint']}, {results['dtype']}, "
                 f"{machine['threads']} torch threads; {machine['cpu']}, {machine['cores']} "
                 f"cores ({' '.join(machine['flags'])}), torch {machine['torch']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+", help="serve.py --json files")
    args = parser.parse_args(argv)
    for path in args.results:
        out = path.with_suffix(".png")
        plot(json.loads(path.read_text()), out)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
