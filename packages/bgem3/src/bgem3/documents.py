r"""Documents from files, read exactly as ``bgem3 index`` reads them.

Text files (``.txt``, ``.md``, ``.markdown``, ``.rst``) are split into chunks of whole
paragraphs of about ``chunk_words`` words; JSONL files hold one record per line with a
``"text"``, an optional ``"id"`` and either a ``"metadata"`` object or other fields that
become the metadata. Every document's metadata names its file in ``"source"`` (unless a
record has its own).

Example:
    >>> import pathlib, tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> folder = pathlib.Path(tmp.name)
    >>> _ = (folder / "notes.md").write_text("Paris is in France.\n\nBerlin is in Germany.")
    >>> _ = (folder / "faq.jsonl").write_text('{"id": "q1", "text": "Why?", "lang": "en"}\n')
    >>> docs = load_documents([folder])
    >>> [(d.id, d.text) for d in docs][0]
    ('q1', 'Why?')
    >>> docs[1].text
    'Paris is in France.\n\nBerlin is in Germany.'
    >>> docs[0].metadata["lang"], docs[1].metadata["chunk"]
    ('en', 0)
    >>> tmp.cleanup()

    The documents go into an index as they are::

        index.add([d.text for d in docs], ids=[d.id for d in docs],
                  metadata=[d.metadata for d in docs])
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bgem3._inputs import positive_int
from bgem3.batching import clean_text
from bgem3.errors import DatasetError, DatasetNotFoundError

__all__ = [
    "CHUNK_WORDS",
    "TEXT_SUFFIXES",
    "Document",
    "chunk_text",
    "load_documents",
    "read_chunks",
    "read_records",
]

CHUNK_WORDS = 200
"""Words per chunk of a text file unless told otherwise (``bgem3 index --chunk-words``)."""

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst")
"""Suffixes of the files read as text (in directories; a file named directly may have none)."""

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


@dataclass(frozen=True)
class Document:
    """One document to index: an id, its text and its metadata.

    Attributes:
        id: Unique id: the record's ``"id"``, ``"FILE.jsonl:LINE"`` for a record without
            one, or ``"PATH#N"`` for chunk ``N`` of a text file.
        text: The text to encode.
        metadata: ``"source"`` (the file) and, for text files, ``"chunk"`` (its number); a
            record's own metadata besides.
    """

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict, hash=False)


def chunk_text(text: str, chunk_words: int = CHUNK_WORDS) -> list[str]:
    r"""Paragraphs packed into chunks of at most ``chunk_words`` words.

    Paragraphs are separated by blank lines. Whole paragraphs are packed into a chunk while
    they fit; a paragraph longer than ``chunk_words`` is cut into pieces of ``chunk_words``
    words (its line breaks become spaces). Paragraphs kept whole keep their line breaks;
    chunks join their paragraphs with a blank line.

    Args:
        text: The text of a file.
        chunk_words: Most words per chunk.

    Returns:
        The chunks in order; none for a text of whitespace only.

    Raises:
        ValueError: ``chunk_words`` is not a positive int.

    Example:
        >>> chunk_text("one two three\n\nfour five\n\nsix seven eight", chunk_words=5)
        ['one two three\n\nfour five', 'six seven eight']
        >>> chunk_text("a b c d e f g", chunk_words=3)
        ['a b c', 'd e f', 'g']
    """
    positive_int(chunk_words, "chunk_words")
    chunks: list[str] = []
    chunk: list[str] = []
    count = 0
    for paragraph in (p.strip() for p in _PARAGRAPH_BREAK.split(text)):
        words = paragraph.split()
        for start in range(0, len(words), chunk_words):
            piece = words[start : start + chunk_words]
            if chunk and count + len(piece) > chunk_words:
                chunks.append("\n\n".join(chunk))
                chunk, count = [], 0
            chunk.append(" ".join(piece) if len(words) > chunk_words else paragraph)
            count += len(piece)
    if chunk:
        chunks.append("\n\n".join(chunk))
    return chunks


def read_chunks(path: str | os.PathLike[str], chunk_words: int = CHUNK_WORDS) -> list[Document]:
    """The chunks of a text file (see :func:`chunk_text`) as documents.

    Args:
        path: A UTF-8 text file.
        chunk_words: Most words per chunk.

    Returns:
        One document per chunk, with id ``"PATH#N"`` and metadata
        ``{"source": "PATH", "chunk": N}``, ``N`` counting from 0.

    Raises:
        DatasetNotFoundError: No file at ``path``.
        DatasetError: The file is not UTF-8 text.
        ValueError: ``chunk_words`` is not a positive int.
    """
    file = Path(path)
    source = clean_text(str(file))
    return [Document(clean_text(f"{file}#{number}"), chunk, {"source": source, "chunk": number})
            for number, chunk in enumerate(chunk_text(_read(file), chunk_words))]


def read_records(path: str | os.PathLike[str]) -> list[Document]:
    """The records of a JSONL file, one per non-empty line, as documents.

    Each line is an object with a ``"text"`` string, an optional ``"id"`` (a string or an
    integer; missing or ``null``: ``"FILE.jsonl:LINE"``, the file's name and the line
    number from 1) and either a ``"metadata"`` object or other fields, which then make the
    metadata. ``"source"`` is set to the file's path unless the metadata has its own.

    Args:
        path: A UTF-8 JSONL file.

    Returns:
        The documents in file order.

    Raises:
        DatasetNotFoundError: No file at ``path``.
        DatasetError: Not UTF-8, a line that is not JSON, or a record without a ``"text"``
            string, with a ``"metadata"`` that is not an object, or with an invalid
            ``"id"``; the message names the file and the line.
    """
    file = Path(path)
    source = clean_text(str(file))
    documents = []
    for number, line in enumerate(_read(file).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{file}:{number}: not JSON ({exc.msg})") from exc
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise DatasetError(f"{file}:{number}: each line needs a 'text' string")
        metadata = row.get("metadata")
        if metadata is None:
            metadata = {k: v for k, v in row.items() if k not in ("id", "text")}
        if not isinstance(metadata, dict):
            raise DatasetError(f"{file}:{number}: 'metadata' must be an object")
        doc_id = row.get("id")
        if doc_id is None:
            doc_id = f"{file.name}:{number}"
        elif isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)) or doc_id == "":
            raise DatasetError(f"{file}:{number}: 'id' must be a string or an integer, got "
                               f"{doc_id!r}")
        documents.append(Document(clean_text(str(doc_id)), row["text"],
                                  {"source": source, **metadata}))
    return documents


def load_documents(paths: Iterable[str | os.PathLike[str]],
                   chunk_words: int = CHUNK_WORDS) -> list[Document]:
    """The documents of files and directories, as ``bgem3 index`` indexes them.

    Directories are walked recursively in sorted order: ``.jsonl`` files are read with
    :func:`read_records`, files with a suffix in :data:`TEXT_SUFFIXES` with
    :func:`read_chunks`, other files are skipped. A file named directly is read as text
    when it has one of those suffixes or none.

    Args:
        paths: Files and directories.
        chunk_words: Most words per chunk of a text file.

    Returns:
        The documents, at least one, with unique ids.

    Raises:
        TypeError: ``paths`` is a single path instead of a list of them.
        ValueError: ``chunk_words`` is not a positive int.
        DatasetNotFoundError: A path that does not exist.
        DatasetError: A file :func:`read_records` or :func:`read_chunks` refuses, no
            documents at all, or an id that appears twice.
    """
    if isinstance(paths, (str, bytes, os.PathLike)):
        raise TypeError(f"paths must be a list of files or directories, got a single path; "
                        f"wrap it in a list: [{str(paths)!r}]")
    positive_int(chunk_words, "chunk_words")
    documents = list(_walk(list(paths), chunk_words))
    if not documents:
        raise DatasetError("no documents found in the inputs (.txt, .md or .jsonl files)")
    duplicates = sorted(i for i, n in Counter(d.id for d in documents).items() if n > 1)
    if duplicates:
        raise DatasetError(f"duplicate document ids: {duplicates[:5]}")
    return documents


def _walk(paths: list[str | os.PathLike[str]], chunk_words: int) -> Iterator[Document]:
    for name in paths:
        path = Path(name)
        if not path.exists():
            raise DatasetNotFoundError(f"no such file or directory: {os.fspath(name)}")
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if file.suffix == ".jsonl":
                yield from read_records(file)
            elif file.suffix in TEXT_SUFFIXES or (not path.is_dir() and not file.suffix):
                yield from read_chunks(file, chunk_words)


def _read(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DatasetNotFoundError(f"no such file: {file}") from exc
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{file} is not UTF-8 text") from exc
