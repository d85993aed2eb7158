"""``benchmarks/report.py`` turns the committed results into the performance page's tables.

It runs on ``benchmarks/results`` as committed, writes every table and plot the page
includes, and the tables hold the numbers of the JSON files (checked on a few cells).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs"
PAGE = DOCS / "explanation" / "performance.md"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("generated")
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "report.py"), "--out", str(out)],
                   check=True, capture_output=True, text=True, timeout=120)
    return out


def _rows(table: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in table.splitlines() if line.startswith("|") and "---" not in line]


def test_every_file_the_pages_include_is_written(generated: Path) -> None:
    pages = [page for page in DOCS.rglob("*.md") if "_build" not in page.parts]
    wanted = {name: page.relative_to(DOCS) for page in pages for name in re.findall(
        r"_generated/([\w.-]+\.(?:inc|svg|png))", page.read_text(encoding="utf-8"))}
    assert {"encode-cpu-real-peer.inc", "quality-base.inc", "finetune.inc"} <= set(wanted)
    assert {n: str(p) for n, p in wanted.items()
            if n not in {f.name for f in generated.iterdir()}} == {}


def test_the_peer_table_holds_the_json_numbers(generated: Path) -> None:
    results = json.loads((RESULTS / "encode-cpu-real-peer.json").read_text(encoding="utf-8"))
    rows = _rows((generated / "encode-cpu-real-peer.inc").read_text(encoding="utf-8"))
    header, body = rows[0], {row[0].split(":")[0]: row for row in rows[1:]}
    column = next(i for i, name in enumerate(header) if name.startswith("bgem3 `BGEM3(...)`"))
    r2 = next(r for r in results["records"] if r["workload"] == "R2")["results"]["default"]
    assert body["R2"][column].startswith(f"{1e3 * r2['p50_call_s']:.1f} ms "
                                         f"({r2['speedup_vs_lite_fp32']:.2f}x")
    r1 = next(r for r in results["records"] if r["workload"] == "R1")["results"]["default"]
    assert body["R1"][column].startswith(f"{r1['median_s']:.1f} s")


def test_the_index_table_holds_the_json_numbers(generated: Path) -> None:
    results = json.loads((RESULTS / "index-cpu-1024d.json").read_text(encoding="utf-8"))
    record = results["records"][0]
    rows = _rows((generated / "index.inc").read_text(encoding="utf-8"))
    row = next(r for r in rows if r[0] == f"{record['docs']:,}")
    assert row[3] == f"{record['build_docs_per_s']:,.0f} docs/s"


def test_the_serving_table_holds_the_json_numbers(generated: Path) -> None:
    results = json.loads((RESULTS / "serve-cpu-real.json").read_text(encoding="utf-8"))
    point = next(p for p in results["points"] if p["workload"] == "Q" and p["clients"] == 16)
    rows = _rows((generated / "serve.inc").read_text(encoding="utf-8"))
    row = next(r for r in rows if r[:3] == ["`serve-cpu-real.json`", "Q", "16"])
    assert row[3] == f"{point['texts_per_s']:.1f}"


def test_the_quality_and_finetuning_tables_hold_the_json_numbers(generated: Path) -> None:
    quality = json.loads((RESULTS / "quality-me5s-base.json").read_text(encoding="utf-8"))
    report = quality["reports"][0]
    dense = next(m for m in report["results"] if m["mode"] == "dense")
    rows = _rows((generated / "quality-base.inc").read_text(encoding="utf-8"))
    assert rows[0][1].startswith(report["dataset"])
    assert next(r for r in rows if r[0] == "dense")[1] == (
        f"{dense['ndcg@10']:.3f} / {dense['recall@100']:.3f} / {dense['mrr@10']:.3f}")

    finetune = json.loads((RESULTS / "finetune-me5s-bible.json").read_text(encoding="utf-8"))
    rows = _rows((generated / "finetune.inc").read_text(encoding="utf-8"))
    header, sparse = rows[0], next(r for r in rows if r[0] == "sparse")
    dataset, run = "dev-web-kjv", "no-self-distill"
    after = finetune["runs"][run]["after"][dataset]["results"]
    value = next(m["ndcg@10"] for m in after if m["mode"] == "sparse")
    assert sparse[header.index(f"{dataset}: {run}")].strip("*") == f"{value:.3f}"


def _json(name: str) -> dict:
    data: dict = json.loads((RESULTS / name).read_text(encoding="utf-8"))
    return data


def test_the_scale_out_table_works_out_the_steady_state_from_the_json(generated: Path) -> None:
    results = _json("scale-out-cpu.json")
    fixed = results["actor_start_s"]
    steady = {n: r["total_s"] - fixed for n, r in results["ray"].items()}
    body = {row[0]: row[1] for row in _rows((generated / "scale-out.inc").read_text("utf-8"))}
    one = next(v for k, v in body.items() if k.startswith("Ray Data, 1 actor(s)"))
    assert one == f"{results['ray']['1']['total_s']:.1f} s in all; steady state {steady['1']:.1f} s"
    two = next(v for k, v in body.items() if k.startswith("Ray Data, 2 actor(s)"))
    assert two.endswith(f"steady state {steady['2']:.1f} s, "
                        f"**{steady['1'] / steady['2']:.2f}x** one actor")
    efficiency = next(v for k, v in body.items() if k.startswith("Ray's efficiency"))
    assert efficiency == f"**{results['ray_efficiency']:.2f}**"
    embedded = next(v for k, v in body.items() if "embedded" in k)
    assert embedded.startswith(f"{results['add_parquet_embedded_rows_s']:,} rows/s")


def test_the_paper_job_uses_the_measured_rates(generated: Path) -> None:
    gpu = next(r for r in _json("encode-cuda-h100-fp16.json")["records"] if r["workload"] == "W1")
    rate = gpu["real_tokens"] / gpu["results"]["bgem3"]["median_s"]
    text = (generated / "scale-out-10m.inc").read_text(encoding="utf-8")
    assert f"at {rate:,.0f} tokens/s ({gpu['real_tokens']:,} tokens" in text
    tokens = 10_000_000 * gpu["real_tokens"] / 384  # W1 has 384 texts
    assert f"**{tokens / rate / 3600:,.1f} GPU-hours**" in text
    scale = _json("scale-out-cpu.json")
    assert f"ran at {scale['add_parquet_embedded_rows_s']:,} rows/s" in text


def test_the_compat_table_holds_the_json_numbers(generated: Path) -> None:
    record = next(r for r in _json("encode-cpu-compat.json")["records"] if r["workload"] == "W1")
    rows = _rows((generated / "encode-compat.inc").read_text(encoding="utf-8"))
    row = next(r for r in rows if r[1].startswith("W1:"))
    assert row[2] == f"{record['results']['bgem3.compat']['median_s']:.1f} s"
    assert f"(**{record['ratio']:.2f}x**)" in row[3]


def test_the_finetuning_runs_and_notes_hold_the_json_numbers(generated: Path) -> None:
    finetune = _json("finetune-me5s-bible.json")
    run = finetune["runs"]["no-self-distill"]
    rows = _rows((generated / "finetune.inc").read_text(encoding="utf-8"))
    row = next(r for r in rows if r[0] == "no-self-distill")
    assert row[1] == f"{run['seconds']:,.0f} s"
    assert row[3].startswith(f"{run['log'][-1]['loss_sparse']:.2f}")
    notes = (generated / "finetune-notes.inc").read_text(encoding="utf-8")
    line = next(n for n in notes.splitlines() if n.startswith("- dev-web-kjv"))
    fused = next(m["ndcg@10"] for m in finetune["runs"]["self-distill"]["after"]["dev-web-kjv"]
                 ["results"] if m["mode"] == "colbert+sparse+dense")
    assert "after self-distill, the best mode `sparse+dense`" in line
    assert f"`colbert+sparse+dense` {fused:.4f}" in line
