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
