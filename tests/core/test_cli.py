"""The bgem3 command line, run in-process on the tiny checkpoint and the shipped corpus."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bgem3 import BGEM3, HybridIndex
from bgem3.cli import build_parser, main
from bgem3.documents import load_documents
from bgem3.testing import random_texts

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


def test_index_holds_what_load_documents_reads(tiny_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "idx"
    assert main(["index", str(CORPUS), "--out", str(out), "--model", str(tiny_path),
                 "--chunk-words", "20"]) == 0
    docs = load_documents([CORPUS], chunk_words=20)
    stored = HybridIndex.load(out, BGEM3(tiny_path, device="cpu")).get([d.id for d in docs])
    assert [(h.id, h.text, h.metadata) for h in stored] == [(d.id, d.text, d.metadata)
                                                           for d in docs]


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


def test_public_surface_is_pinned() -> None:
    import bgem3.cli

    assert sorted(bgem3.cli.__all__) == ["build_parser", "main"]


def test_python_dash_m_bgem3() -> None:
    out = subprocess.run([sys.executable, "-m", "bgem3", "--help"], capture_output=True,
                         text=True, check=True)
    assert "index" in out.stdout and "search" in out.stdout


# -------------------------------------------- errors, existing indexes, JSON, warnings, pipes
def test_tampered_index_is_one_line_in_the_cli(model: BGEM3, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    index = HybridIndex(model)
    index.add(random_texts(20, min_words=10, seed=4), ids=[str(i) for i in range(20)])
    index.save(tmp_path / "idx")
    version = (tmp_path / "idx" / (tmp_path / "idx" / "CURRENT").read_text())
    assert np.load(version / "sparse_indices.npy").size > 0
    np.save(version / "sparse_indices.npy",
            np.full_like(np.load(version / "sparse_indices.npy"), 10**6), allow_pickle=False)
    assert main(["search", str(tmp_path / "idx"), "text", "--model", str(model.path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "token ids outside" in err[0]


def test_index_refuses_an_existing_index_unless_told(tiny_path: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"id": "a", "text": "first text", "source": "my-own-source"}\n'
                    '{"id": null, "text": "second text"}\n')
    out = tmp_path / "idx"
    assert main(["index", str(docs), "--out", str(out), "--model", str(tiny_path)]) == 0
    capsys.readouterr()
    assert main(["index", str(docs), "--out", str(out), "--model", str(tiny_path)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    more = tmp_path / "more.jsonl"
    more.write_text('{"id": "c", "text": "third text"}\n')
    assert main(["index", str(more), "--out", str(out), "--append"]) == 0
    assert "added 1 documents" in capsys.readouterr().out
    index = HybridIndex.load(out, BGEM3(tiny_path, device="cpu"))
    assert sorted(h.id for h in index.get(["a", "c", "docs.jsonl:2"])) == [
        "a", "c", "docs.jsonl:2"]  # a null id is generated, not "None"
    assert index.get(["a"])[0].metadata["source"] == "my-own-source"
    assert index.get(["c"])[0].metadata["source"] == str(more)
    assert main(["index", str(more), "--out", str(out), "--overwrite", "--model",
                 str(tiny_path)]) == 0
    assert len(HybridIndex.load(out, BGEM3(tiny_path, device="cpu"))) == 1


def test_append_refuses_no_colbert_for_an_index_that_stores_colbert(
        tiny_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs, more = tmp_path / "docs.txt", tmp_path / "more.txt"
    docs.write_text("a paragraph about paris")
    more.write_text("another about berlin")
    with_colbert, without = tmp_path / "with", tmp_path / "without"
    assert main(["index", str(docs), "--out", str(with_colbert), "--model", str(tiny_path)]) == 0
    capsys.readouterr()
    assert main(["index", str(more), "--out", str(with_colbert), "--append",
                 "--no-colbert"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"bgem3: error: {with_colbert} stores ColBERT vectors, and an index keeps "
                   "the outputs it was made with: drop --no-colbert to add to it, or pass "
                   "--overwrite instead of --append to rebuild it without them"]
    assert len(HybridIndex.load(with_colbert, BGEM3(tiny_path, device="cpu"))) == 1
    # where --no-colbert matches the index (or makes it), it is honoured
    for _ in range(2):
        assert main(["index", str(docs if _ == 0 else more), "--out", str(without),
                     "--append", "--no-colbert", "--model", str(tiny_path)]) == 0
    index = HybridIndex.load(without, BGEM3(tiny_path, device="cpu"))
    assert len(index) == 2 and not index.store_colbert


def test_encode_to_parquet_errors_name_the_target_not_a_hidden_file(
        tiny_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = tmp_path / "docs.txt"
    docs.write_text("a paragraph about paris")
    missing = tmp_path / "no-such-dir" / "out.parquet"
    folder = tmp_path / "vectors.parquet"
    folder.mkdir()
    for target, message in (
            (missing, f"cannot write {missing}: no directory {missing.parent}"),
            (folder, f"--out {folder} is a directory: give a file name ending in .parquet")):
        assert main(["encode", str(docs), "--out", str(target), "--model", str(tiny_path)]) == 1
        assert capsys.readouterr().err.strip().splitlines() == [f"bgem3: error: {message}"]
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".partial")]
    # a failure while writing (here: a directory in the way of the hidden file)
    target = tmp_path / "out.parquet"
    (tmp_path / f".out.parquet.{os.getpid()}.partial").mkdir()
    assert main(["encode", str(docs), "--out", str(target), "--model", str(tiny_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"bgem3: error: cannot write {target}: ")
    assert ".partial" not in err[0] and not target.exists()
    (tmp_path / f".out.parquet.{os.getpid()}.partial").rmdir()
    long_name = tmp_path / ("v" * 240 + ".parquet")  # its hidden twin must fit too
    assert main(["encode", str(docs), "--out", str(long_name), "--model", str(tiny_path)]) == 0
    assert long_name.is_file() and not list(tmp_path.glob(".*.partial"))


def test_a_relative_model_path_is_recorded_absolute(tiny_path: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    docs = tmp_path / "docs.txt"
    docs.write_text("a paragraph about paris\n\nanother about berlin")
    monkeypatch.chdir(tiny_path.parent)
    assert main(["index", str(docs), "--out", str(tmp_path / "idx"), "--model",
                 f"./{tiny_path.name}"]) == 0
    monkeypatch.chdir(tmp_path)
    assert main(["search", "idx", "paris", "-k", "1"]) == 0


def test_search_json_is_valid_json_with_nan_metadata(model: BGEM3, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    index = HybridIndex(model)
    index.add(["paris is a city"], ids=["p"], metadata=[{"population": math.nan}])
    index.save(tmp_path / "idx")
    assert main(["search", str(tmp_path / "idx"), "paris", "--json"]) == 0

    def refuse(token: str) -> None:
        raise AssertionError(f"not JSON: {token}")

    row = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert row["metadata"]["population"] is None


@pytest.mark.filterwarnings("default::bgem3.errors.TruncationWarning")
def test_cli_warnings_are_one_line(tiny_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    long_query = " ".join(["paris"] * 600)
    assert main(["encode", long_query, "--queries", "--model", str(tiny_path)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["bgem3: warning: 1 of 1 texts were longer than max_length=512 tokens and "
                   "were truncated"]


def test_broken_pipe_is_quiet(tiny_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        f"{sys.executable} -m bgem3 encode {' '.join(['word'] * 400)} --model {tiny_path}"
        " | head -c 20", shell=True, capture_output=True, text=True, env=env, check=True)
    assert len(done.stdout) == 20 and "Broken pipe" not in done.stderr
    assert "Traceback" not in done.stderr


# ------------------------------------------------------------ finetune flags = the settings
def _field_default(field: dataclasses.Field[object]) -> object:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def test_finetune_flags_are_the_settings_fields(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import bgem3.train
    from bgem3.train import FinetuneSettings

    monkeypatch.delenv("BGEM3_MODEL", raising=False)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["finetune", "--help"])
    shown = capsys.readouterr().out
    required = ["--train-data", "data.jsonl", "--output", "out"]
    args = build_parser().parse_args(["finetune", *required])
    for field in dataclasses.fields(FinetuneSettings):
        if field.metadata.get("cli", True) is False:
            continue
        flag = "--" + field.name.replace("_", "-")
        assert re.search(rf"(?<![\w-]){flag}(?![\w-])", shown), f"no {flag} flag"
        if _field_default(field) is not dataclasses.MISSING:
            assert getattr(args, field.name) == _field_default(field), flag
    ran: list[FinetuneSettings] = []
    monkeypatch.setattr(bgem3.train, "finetune", lambda settings: ran.append(settings) or "out")
    assert main(["finetune", *required]) == 0
    assert main(["finetune", *required, "--heads", "dense,colbert", "--no-self-distill",
                 "--save-total-limit", "5", "--no-progress", "--bf16", "--epochs", "2"]) == 0
    assert ran == [
        FinetuneSettings(model="BAAI/bge-m3", train_data=["data.jsonl"], output="out"),
        FinetuneSettings(model="BAAI/bge-m3", train_data=["data.jsonl"], output="out",
                         heads=["dense", "colbert"], self_distill=False, save_total_limit=5,
                         show_progress=False, bf16=True, epochs=2.0),
    ]


def test_every_bgem3_error_is_one_line_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from bgem3.cli._shared import run_command
    from bgem3.errors import CompileError

    def fail(args: argparse.Namespace) -> None:
        raise CompileError("torch cannot compile this model\nmore detail")

    assert run_command(argparse.Namespace(run=fail)) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "bgem3: error: torch cannot compile this model"
    assert "Traceback" not in err
