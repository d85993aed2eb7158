"""Argument checks shared by every layer of the core: one place per rule and message.

Each check returns the value in its canonical form (a list, an int) or raises the
``TypeError`` / ``ValueError`` a caller would expect, saying what was expected and what was
given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "as_ids",
    "as_metadata",
    "as_pairs",
    "as_texts",
    "positive_int",
]


def positive_int(value: Any, name: str) -> int:
    """``value`` if it is an ``int`` of at least 1 (``bool`` is not an int here).

    Raises:
        ValueError: Anything else, named.

    Example:
        >>> positive_int(3, "k")
        3
        >>> positive_int(0, "k")
        Traceback (most recent call last):
        ...
        ValueError: k must be a positive int, got 0
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def as_texts(texts: Iterable[str], what: str = "texts") -> list[str]:
    """A batch of texts as a list: a sequence of ``str``, never a bare ``str`` or ``None``.

    Raises:
        TypeError: A bare string, a mapping or set (no order), or a non-string item.

    Example:
        >>> as_texts(("a", "b"))
        ['a', 'b']
    """
    if isinstance(texts, (Mapping, set, frozenset)):
        raise TypeError(f"{what} must be a list of strings, got a {type(texts).__name__} "
                        "(its order is not the order of the outputs)")
    if isinstance(texts, (str, bytes)):
        raise TypeError(
            f"{what} must be a list of strings, got a single {type(texts).__name__}; "
            f"wrap it in a list: [{what[:-1] if what.endswith('s') else what}]"
        )
    if texts is None or not isinstance(texts, Iterable):
        raise TypeError(f"{what} must be a list of strings, got {type(texts).__name__}")
    items = texts.tolist() if isinstance(texts, np.ndarray) else list(texts)
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise TypeError(f"{what}[{i}] must be a str, got {type(text).__name__}")
    return items


def as_ids(ids: Iterable[str]) -> list[str]:
    """Document ids as a list of non-empty strings.

    Raises:
        TypeError: A bare string, a mapping, or an id that is not a non-empty ``str``.
    """
    if isinstance(ids, (str, bytes, Mapping)) or not isinstance(ids, Iterable):
        raise TypeError(f"ids must be a list of strings, got {type(ids).__name__}")
    out = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
    for i, doc_id in enumerate(out):
        if not isinstance(doc_id, str) or not doc_id:
            raise TypeError(f"ids[{i}] must be a non-empty str, got {doc_id!r}")
    return out


def as_metadata(metadata: Sequence[Mapping[str, Any]] | None, n: int) -> list[dict[str, Any]]:
    """One metadata dict per document (copies); ``None`` gives ``n`` empty dicts.

    Raises:
        ValueError: Not a list of ``n`` entries.
        TypeError: An entry that is not a mapping.
    """
    if metadata is None:
        return [{} for _ in range(n)]
    if isinstance(metadata, Mapping) or len(metadata) != n:
        raise ValueError(f"metadata must be a list of {n} dicts, one per document")
    out = []
    for i, meta in enumerate(metadata):
        if not isinstance(meta, Mapping):
            raise TypeError(f"metadata[{i}] must be a dict, got {type(meta).__name__}")
        out.append(dict(meta))
    return out


def as_pairs(pairs: Iterable[Sequence[str]]) -> tuple[list[str], list[str]]:
    """``(query, passage)`` pairs as two lists of texts.

    Raises:
        TypeError: Not a list of pairs of strings (a single pair must be wrapped in a list).

    Example:
        >>> as_pairs([("q1", "p1"), ("q2", "p2")])
        (['q1', 'q2'], ['p1', 'p2'])
    """
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Iterable):
        raise TypeError(
            f"pairs must be a list of (query, passage) pairs, got {type(pairs).__name__}"
        )
    items = list(pairs)
    if len(items) == 2 and all(isinstance(x, str) for x in items):
        raise TypeError("pairs must be a list of pairs; wrap a single pair: [(query, passage)]")
    for i, pair in enumerate(items):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise TypeError(f"pairs[{i}] must be a (query, passage) pair, got {pair!r:.80}")
    return (as_texts([p[0] for p in items], "queries"),
            as_texts([p[1] for p in items], "passages"))
