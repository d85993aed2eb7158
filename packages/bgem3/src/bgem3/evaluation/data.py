"""Labelled retrieval data in BEIR's layout, read and checked line by line.

A dataset directory holds ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl``
(``_id``, ``text``) and ``qrels/<split>.tsv`` (a header, then ``query-id corpus-id score``
per line, tab separated). Problems that make the data unusable raise :class:`DatasetError`
naming the file and line; judgments that name unknown queries or documents are counted and
reported instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bgem3._jsonl import read_jsonl, read_lines  # read_jsonl: re-exported, public here
from bgem3.errors import DatasetError, DatasetNotFoundError
from bgem3.evaluation.metrics import GRADE_MAX, GRADE_MIN

__all__ = ["BeirData", "load_beir", "read_jsonl"]


@dataclass(frozen=True)
class BeirData:
    """One split of a BEIR-layout dataset.

    Attributes:
        path: The dataset directory.
        split: The qrels split (``qrels/<split>.tsv``).
        corpus_ids: Document ids, in file order.
        corpus_texts: ``title + " " + text`` (just ``text`` without a title).
        query_ids: The judged queries that ``queries.jsonl`` holds, in its order.
        query_texts: Their texts.
        qrels: ``{query_id: {doc_id: grade}}`` for ``query_ids``.
        unknown_query_judgments: Judgment lines of queries missing from ``queries.jsonl``
            (skipped: there is no text to search with).
        unknown_document_judgments: Judgment lines of documents missing from the corpus
            (kept: they count as relevant but can never be retrieved).
        queries_without_relevant: Judged queries with no grade >= 1 (they score 0).
    """

    path: Path
    split: str
    corpus_ids: list[str]
    corpus_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    qrels: dict[str, dict[str, int]]
    unknown_query_judgments: int = 0
    unknown_document_judgments: int = 0
    queries_without_relevant: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The directory name."""
        return self.path.name


def _id(row: dict[str, Any], file: Path, number: int) -> str:
    value = row.get("_id")
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise DatasetError(f"{file}:{number}: '_id' must be a non-empty string, got {value!r}")
    return str(value)


def _text(row: dict[str, Any], key: str, file: Path, number: int, *, required: bool) -> str:
    value = row.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise DatasetError(f"{file}:{number}: {key!r} must be a string, got {value!r}")
    return value


def _records(file: Path, title: bool) -> tuple[list[str], list[str]]:
    ids: list[str] = []
    texts: list[str] = []
    seen: dict[str, int] = {}
    for number, row in read_jsonl(file):
        doc_id = _id(row, file, number)
        if doc_id in seen:
            raise DatasetError(f"{file}:{number}: duplicate _id {doc_id!r} (first on line "
                               f"{seen[doc_id]})")
        seen[doc_id] = number
        text = _text(row, "text", file, number, required=True)
        heading = _text(row, "title", file, number, required=False).strip() if title else ""
        ids.append(doc_id)
        texts.append(f"{heading} {text}" if heading else text)
    if not ids:
        raise DatasetError(f"{file}: no records")
    return ids, texts


def _grade(score: str) -> int | None:
    """The integer a qrels score states exactly (``"2"``, ``"2.0"``, ``"1e3"``), else ``None``.

    Raises:
        ValueError: Not a number at all (a header's ``score``).
    """
    try:
        return int(score)  # exact, however many digits
    except ValueError:
        value = float(score)
    return int(value) if value.is_integer() else None


def _qrels(file: Path) -> dict[str, dict[str, int]]:
    if not file.is_file():
        folder = file.parent
        splits = sorted(p.stem for p in folder.glob("*.tsv")) if folder.is_dir() else []
        raise DatasetNotFoundError(f"{file}: no such split; available: "
                                   f"{', '.join(splits) or 'none'}")
    qrels: dict[str, dict[str, int]] = {}
    where: dict[tuple[str, str], int] = {}
    for position, (number, line) in enumerate(read_lines(file)):
        fields = line.split("\t") if "\t" in line else line.split()
        if len(fields) != 3:
            raise DatasetError(f"{file}:{number}: expected 'query-id<TAB>corpus-id<TAB>score', "
                               f"got {len(fields)} field(s)")
        query, doc, score = (f.strip() for f in fields)
        try:
            grade = _grade(score)
        except ValueError:
            if position == 0:  # the header line
                continue
            raise DatasetError(f"{file}:{number}: score must be an integer, got {score!r}") \
                from None
        if grade is None or not query or not doc:
            raise DatasetError(f"{file}:{number}: expected ids and an integer score, got "
                               f"{line!r}")
        if not GRADE_MIN <= grade <= GRADE_MAX:
            raise DatasetError(f"{file}:{number}: score {score} is out of range: grades are "
                               f"64-bit integers ({GRADE_MIN} to {GRADE_MAX})")
        if (query, doc) in where:
            raise DatasetError(f"{file}:{number}: query {query!r} and document {doc!r} are "
                               f"judged twice (first on line {where[query, doc]})")
        where[query, doc] = number
        qrels.setdefault(query, {})[doc] = grade
    if not qrels:
        raise DatasetError(f"{file}: no judgments")
    return qrels


def load_beir(path: str | os.PathLike[str], split: str = "test") -> BeirData:
    """Read and check one split of a BEIR-layout dataset.

    Args:
        path: The dataset directory.
        split: Which ``qrels/<split>.tsv`` to use.

    Returns:
        The validated :class:`BeirData`.

    Raises:
        DatasetNotFoundError: The directory, a file or the split does not exist.
        DatasetError: Malformed, non-UTF-8 or duplicate records (the message names the
            file and line), no judgments, or no judged query with a text.

    Example:
        >>> import tempfile, bgem3.testing
        >>> data = load_beir(bgem3.testing.write_beir_dataset(tempfile.mkdtemp()))
        >>> len(data.query_ids) > 0, data.split
        (True, 'test')
    """
    root = Path(path)
    if not root.is_dir():
        raise DatasetNotFoundError(f"{root}: no such dataset directory (expected corpus.jsonl, "
                                   "queries.jsonl and qrels/<split>.tsv)")
    corpus_ids, corpus_texts = _records(root / "corpus.jsonl", title=True)
    all_query_ids, all_query_texts = _records(root / "queries.jsonl", title=False)
    judged = _qrels(root / "qrels" / f"{split}.tsv")
    documents = set(corpus_ids)
    query_text = dict(zip(all_query_ids, all_query_texts, strict=True))
    unknown_queries = sum(len(d) for q, d in judged.items() if q not in query_text)
    qrels = {q: d for q, d in judged.items() if q in query_text}
    if not qrels:
        raise DatasetError(f"{root / 'qrels' / f'{split}.tsv'}: none of its "
                           f"{len(judged)} queries is in queries.jsonl")
    query_ids = [q for q in all_query_ids if q in qrels]
    unknown_documents = sum(d not in documents for docs in qrels.values() for d in docs)
    without = sum(not any(g >= 1 for g in docs.values()) for docs in qrels.values())
    notes = []
    if unknown_queries:
        notes.append(f"{unknown_queries} judgment(s) name queries missing from queries.jsonl: "
                     "skipped")
    if unknown_documents:
        notes.append(f"{unknown_documents} judgment(s) name documents missing from the corpus: "
                     "kept (relevant, never retrievable)")
    if without:
        notes.append(f"{without} judged quer{'y has' if without == 1 else 'ies have'} no "
                     "relevant document (score 0)")
    return BeirData(path=root, split=split, corpus_ids=corpus_ids, corpus_texts=corpus_texts,
                    query_ids=query_ids, query_texts=[query_text[q] for q in query_ids],
                    qrels=qrels, unknown_query_judgments=unknown_queries,
                    unknown_document_judgments=unknown_documents,
                    queries_without_relevant=without, notes=notes)
