"""Numbered lines of UTF-8 text files and JSON Lines, checked line by line.

The one reader behind evaluation data, training data and mining: a problem raises
:class:`~bgem3.errors.DatasetError` naming ``file:line``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bgem3.errors import DatasetError, DatasetNotFoundError

__all__ = ["read_jsonl", "read_lines"]


def read_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, str]]:
    r"""``(line number, line)`` for each non-blank line of a UTF-8 file, line ends removed.

    A byte-order mark at the start of the file is dropped; numbers count every line, blank
    ones included, from 1.

    Raises:
        DatasetNotFoundError: The file does not exist.
        DatasetError: A line that is not UTF-8 (named ``file:line``).

    Example:
        >>> import pathlib, tempfile
        >>> file = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
        >>> _ = file.write_text("one\n\ntwo\n", encoding="utf-8")
        >>> list(read_lines(file))
        [(1, 'one'), (3, 'two')]
    """
    file = Path(path)
    if not file.is_file():
        raise DatasetNotFoundError(f"{file}: no such file")
    with file.open("rb") as stream:
        for number, raw in enumerate(stream, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DatasetError(f"{file}:{number}: not UTF-8 text ({exc.reason})") from exc
            if number == 1:
                line = line.removeprefix("\ufeff")
            if line.strip():
                yield number, line.rstrip("\r\n")


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    r"""``(line number, object)`` for each non-blank line of a JSON Lines file.

    Raises:
        DatasetNotFoundError: The file does not exist.
        DatasetError: A line that is not UTF-8, not JSON, or not a JSON object.

    Example:
        >>> import pathlib, tempfile
        >>> file = pathlib.Path(tempfile.mkdtemp()) / "a.jsonl"
        >>> _ = file.write_text('{"query": "q"}\n\n{"query": "r"}\n', encoding="utf-8")
        >>> list(read_jsonl(file))
        [(1, {'query': 'q'}), (3, {'query': 'r'})]
    """
    file = Path(path)
    for number, line in read_lines(file):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{file}:{number}: not JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise DatasetError(f"{file}:{number}: expected a JSON object, got "
                               f"{type(row).__name__}")
        yield number, row
