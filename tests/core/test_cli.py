"""The bgem3 command line, run in-process on the tiny checkpoint and the shipped corpus."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from bgem3 import BGEM3, HybridIndex
from bgem3.cli import main

CORPUS = Path(__file__).resolve().parents[2] / "examples" / "corpus"


def test_index_then_search_the_sample_corpus(tiny_path: Path, model: BGEM3, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "idx"
    assert main(["index", str(CORPUS), "--out", str(out), "--model", str(tiny_path)]) == 0
    rows = [json.loads(line) for line in (CORPUS / "passages.jsonl").read_text().splitlines()]
    assert f"indexed {len(rows) + 1} documents" in capsys.readouterr().out  # + one markdown chunk
    # search reads the model from the index, prints a table, and the JSON equals the index API
    assert main(["search", str(out), "eiffel tower paris", "-k", "3"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:5] == ["rank", "score", "dense", "sparse", "colbert"]
    assert len(table) == 4
    assert main(["search", str(out), "eiffel tower paris", "-k", "3", "--json",
                 "--filter", "lang=fr"]) == 0
    hits = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    want = HybridIndex.load(out, model).search("eiffel tower paris", k=3, filter={"lang": "fr"})
    assert [h["id"] for h in hits] == [h.id for h in want]
    assert all(h["metadata"]["lang"] == "fr" for h in hits)


def test_long_text_files_are_chunked(tiny_path: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "long.md"
    doc.write_text("\n\n".join(" ".join(f"w{p}x{i}" for i in range(30)) for p in range(10)))
    out = tmp_path / "idx"
    assert main(["index", str(doc), "--out", str(out), "--model", str(tiny_path),
                 "--chunk-words", "70"]) == 0
    assert "indexed 5 documents" in capsys.readouterr().out  # 300 words, 2 paragraphs a chunk


def test_encode_and_score(tiny_path: Path, model: BGEM3, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "vectors.jsonl"
    assert main(["encode", "paris city", "a dog", "--colbert", "--model", str(tiny_path),
                 "--out", str(target)]) == 0
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    want = model.encode_documents(["paris city", "a dog"], dense=True, sparse=True, colbert=True)
    assert rows[0]["dense"] == pytest.approx(want.dense[0].tolist(), abs=1e-6)  # type: ignore[index]
    assert rows[1]["sparse"] == pytest.approx(model.decode_sparse(want.sparse)[1], abs=1e-6)  # type: ignore[arg-type]
    assert len(rows[0]["colbert"]) == len(want.colbert[0])  # type: ignore[index]
    assert main(["score", "paris", "paris city", "a dog", "--model", str(tiny_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[1:] == ["dense", "sparse", "colbert", "sparse+dense",
                                    "colbert+sparse+dense"]
    scores = model.compute_score([("paris", "paris city"), ("paris", "a dog")],
                                 weights=(0.4, 0.2, 0.4))
    assert float(lines[1].split()[-1]) == pytest.approx(scores["colbert+sparse+dense"][0],
                                                        abs=1e-4)


def test_errors_are_one_line_with_status_1(tiny_path: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\nnot json\n')
    cases = [
        (["search", str(tmp_path / "none"), "q"], "no index at"),
        (["index", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o")], "no such file"),
        (["index", str(bad), "--out", str(tmp_path / "o"), "--model", str(tiny_path)],
         "bad.jsonl:2: not JSON"),
        (["encode", "--model", str(tiny_path)], "nothing to encode"),
        (["score", "q", "p", "--model", str(tmp_path / "no-model")], "error:"),
        (["score", "q", "p", "--model", "BAAI/bge-m3"], "--model /path/to/checkpoint"),
    ]
    for argv, message in cases:
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


def test_python_dash_m_bgem3() -> None:
    out = subprocess.run([sys.executable, "-m", "bgem3", "--help"], capture_output=True,
                         text=True, check=True)
    assert "index" in out.stdout and "search" in out.stdout
