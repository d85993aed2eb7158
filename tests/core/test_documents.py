"""Reading files into documents: chunking, JSONL records, and every way a file can be wrong."""

from __future__ import annotations

from pathlib import Path

import bgem3.documents
import pytest
from bgem3.documents import (
    Document,
    chunk_text,
    load_documents,
    read_chunks,
    read_records,
)
from bgem3.errors import BGEM3Error, DatasetError, DatasetNotFoundError


def test_public_surface_is_pinned() -> None:
    assert sorted(bgem3.documents.__all__) == [
        "CHUNK_WORDS", "Document", "TEXT_SUFFIXES", "chunk_text", "load_documents",
        "read_chunks", "read_records"]


def _words(prefix: str, n: int) -> str:
    return " ".join(f"{prefix}{i}" for i in range(n))


# ---------------------------------------------------------------- chunk_text
def test_paragraphs_are_packed_while_they_fit() -> None:
    paragraphs = [_words(p, 30) for p in "abcdefghij"]  # 10 paragraphs of 30 words
    chunks = chunk_text("\n\n".join(paragraphs), chunk_words=70)
    assert chunks == ["\n\n".join(paragraphs[i : i + 2]) for i in range(0, 10, 2)]
    exact = chunk_text("\n\n".join(paragraphs[:3]), chunk_words=90)  # 90 words fit exactly
    assert exact == ["\n\n".join(paragraphs[:3])]


def test_a_long_paragraph_is_cut_into_pieces_of_chunk_words() -> None:
    long = _words("w", 25)
    chunks = chunk_text(f"short one\n\n{long}\n\ntail", chunk_words=10)
    assert [len(c.split()) for c in chunks] == [2, 10, 10, 6]
    assert chunks[0] == "short one"
    assert " ".join(" ".join(chunks).split()) == f"short one {long} tail"


def test_line_breaks_inside_a_paragraph_are_kept_and_blank_lines_split() -> None:
    text = "line one\nline two\n \t\nnext paragraph\n\n\n\n"
    assert chunk_text(text, chunk_words=100) == ["line one\nline two\n\nnext paragraph"]
    assert chunk_text(text, chunk_words=4) == ["line one\nline two", "next paragraph"]
    assert chunk_text(" \n\n \n", chunk_words=5) == []


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_chunk_words_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises(ValueError, match="chunk_words must be a positive int"):
        chunk_text("text", chunk_words=bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------- read_chunks
def test_text_file_chunks_carry_path_ids_and_source(tmp_path: Path) -> None:
    file = tmp_path / "notes.md"
    file.write_text(f"{_words('a', 5)}\n\n{_words('b', 5)}", encoding="utf-8")
    docs = read_chunks(file, chunk_words=5)
    assert docs == [
        Document(f"{file}#0", _words("a", 5), {"source": str(file), "chunk": 0}),
        Document(f"{file}#1", _words("b", 5), {"source": str(file), "chunk": 1}),
    ]


# ---------------------------------------------------------------- read_records
def test_jsonl_ids_metadata_and_source(tmp_path: Path) -> None:
    file = tmp_path / "docs.jsonl"
    file.write_text(
        '{"id": "a", "text": "first", "lang": "en", "year": 2024}\n'
        "\n"  # blank lines are skipped but counted
        '{"text": "third", "source": "my-own"}\n'
        '{"id": null, "text": "fourth", "metadata": {"lang": "fr"}, "ignored": 1}\n'
        '{"id": 7, "text": "fifth"}\n', encoding="utf-8")
    docs = read_records(file)
    assert [d.id for d in docs] == ["a", "docs.jsonl:3", "docs.jsonl:4", "7"]
    assert [d.text for d in docs] == ["first", "third", "fourth", "fifth"]
    assert docs[0].metadata == {"source": str(file), "lang": "en", "year": 2024}
    assert docs[1].metadata == {"source": "my-own"}  # the record's own source wins
    assert docs[2].metadata == {"source": str(file), "lang": "fr"}  # "metadata" replaces fields
    assert docs[3].metadata == {"source": str(file)}


@pytest.mark.parametrize(("line", "message"), [
    ("not json", r"bad.jsonl:2: not JSON"),
    ('["a list"]', r"bad.jsonl:2: each line needs a 'text' string"),
    ('{"text": 3}', r"bad.jsonl:2: each line needs a 'text' string"),
    ('{"text": "t", "metadata": [1]}', r"bad.jsonl:2: 'metadata' must be an object"),
    ('{"text": "t", "id": true}', r"bad.jsonl:2: 'id' must be a string or an integer, got True"),
    ('{"text": "t", "id": 1.5}', r"bad.jsonl:2: 'id' must be a string or an integer"),
    ('{"text": "t", "id": ""}', r"bad.jsonl:2: 'id' must be a string or an integer, got ''"),
])
def test_bad_records_name_the_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    file = tmp_path / "bad.jsonl"
    file.write_text('{"text": "fine"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=message) as info:
        read_records(file)
    assert isinstance(info.value, ValueError) and isinstance(info.value, BGEM3Error)


def test_unreadable_and_missing_files(tmp_path: Path) -> None:
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"text": "caf\xe9"}\n')
    with pytest.raises(DatasetError, match=r"latin\.jsonl is not UTF-8 text"):
        read_records(latin)
    with pytest.raises(DatasetNotFoundError, match="no such file") as info:
        read_chunks(tmp_path / "missing.txt")
    assert isinstance(info.value, FileNotFoundError)


# ---------------------------------------------------------------- load_documents
def test_directories_are_walked_in_order_and_other_files_skipped(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("bee", encoding="utf-8")
    (tmp_path / "a.jsonl").write_text('{"id": "x", "text": "ex"}\n', encoding="utf-8")
    (tmp_path / "sub" / "c.rst").write_text("sea", encoding="utf-8")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / "README").write_text("no suffix: skipped in a directory", encoding="utf-8")
    plain = tmp_path / "sub" / "LICENSE"
    plain.write_text("named directly: read as text", encoding="utf-8")
    docs = load_documents([tmp_path, str(plain)])
    assert [d.text for d in docs] == ["ex", "bee", "sea", "named directly: read as text"]
    assert docs == read_records(tmp_path / "a.jsonl") + read_chunks(tmp_path / "b.txt") + \
        read_chunks(tmp_path / "sub" / "c.rst") + read_chunks(plain)


def test_load_documents_refuses_what_cannot_be_indexed(tmp_path: Path) -> None:
    (tmp_path / "empty.md").write_text("\n\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="no documents found in the inputs"):
        load_documents([tmp_path])
    with pytest.raises(DatasetNotFoundError, match=r"no such file or directory: .*nothing"):
        load_documents([tmp_path / "nothing"])
    twice = tmp_path / "twice.jsonl"
    twice.write_text('{"id": "a", "text": "one"}\n{"id": "a", "text": "two"}\n',
                     encoding="utf-8")
    with pytest.raises(DatasetError, match=r"duplicate document ids: \['a'\]"):
        load_documents([twice])
    with pytest.raises(TypeError, match="wrap it in a list"):
        load_documents(str(twice))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk_words"):
        load_documents([twice], chunk_words=0)
