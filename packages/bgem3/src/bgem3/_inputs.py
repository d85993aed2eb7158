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
    "MAX_METADATA_DEPTH",
    "as_document_ids",
    "as_ids",
    "as_metadata",
    "as_pairs",
    "as_texts",
    "non_negative_int",
    "positive_int",
    "surrogate_at",
]

MAX_METADATA_DEPTH = 32
"""How deeply lists and dicts may nest in a metadata value (deeper ones are refused)."""


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


def non_negative_int(value: Any, name: str) -> int:
    """``value`` if it is an ``int`` of at least 0 (``bool`` is not an int here).

    Raises:
        ValueError: Anything else, named.

    Example:
        >>> non_negative_int(0, "batch_tokens")
        0
        >>> non_negative_int(True, "batch_tokens")
        Traceback (most recent call last):
        ...
        ValueError: batch_tokens must be an int of at least 0, got True
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be an int of at least 0, got {value!r}")
    return int(value)


def surrogate_at(text: str) -> int | None:
    r"""Where ``text`` holds its first surrogate code point (not valid Unicode), or ``None``.

    UTF-8 (the saved index, Qdrant, JSON files) cannot hold such a code point; it comes
    from text decoded with ``surrogateescape`` or from halves of a UTF-16 pair.

    Example:
        >>> surrogate_at("caf\u00e9"), surrogate_at("a\ud800b")
        (None, 1)
    """
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


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


def as_document_ids(ids: Iterable[str]) -> list[str]:
    """Ids of documents to store: :func:`as_ids`, and each one valid Unicode text.

    Raises:
        TypeError: As :func:`as_ids`.
        ValueError: An id with a surrogate code point (no saved index can hold it).

    Example:
        >>> as_document_ids(["a", "b"])
        ['a', 'b']
    """
    out = as_ids(ids)
    for i, doc_id in enumerate(out):
        at = surrogate_at(doc_id)
        if at is not None:
            raise ValueError(f"ids[{i}] ({doc_id!r}) holds an unpaired surrogate at position "
                             f"{at}: ids must be valid Unicode text (a saved index stores "
                             "them as UTF-8)")
    return out


def as_metadata(metadata: Sequence[Mapping[str, Any]] | None, n: int,
                ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One metadata dict per document, as JSON data: what a saved index can hold.

    Each entry is copied as JSON holds it (tuples become lists, other mappings dicts,
    numpy scalars and subclasses of ``str`` / ``int`` / ``float`` the plain Python
    value), so that later changes to the caller's objects never reach the index, and
    what the index holds can always be saved and reads back equal. ``None`` gives ``n``
    empty dicts.

    Args:
        metadata: One mapping per document, or ``None``.
        n: The number of documents.
        ids: Their ids, named in errors.

    Raises:
        ValueError: Not a list of ``n`` entries; a string with a surrogate code point
            (not valid Unicode); lists or dicts nested deeper than
            :data:`MAX_METADATA_DEPTH`.
        TypeError: An entry that is not a mapping; a key that is not a string; a value
            JSON cannot hold (a ``datetime``, a ``Decimal``, a set, bytes...).

    Example:
        >>> as_metadata([{"tags": ("a", "b"), "year": 2024}], 1)
        [{'tags': ['a', 'b'], 'year': 2024}]
    """
    if metadata is None:
        return [{} for _ in range(n)]
    if isinstance(metadata, Mapping) or len(metadata) != n:
        raise ValueError(f"metadata must be a list of {n} dicts, one per document")
    out = []
    for i, meta in enumerate(metadata):
        if not isinstance(meta, Mapping):
            raise TypeError(f"metadata[{i}] must be a dict, got {type(meta).__name__}")
        out.append(_json_dict(meta, (i,), ids))
    return out


_PLAIN = frozenset({int, float, bool, type(None)})  # stored as they are


def _where(path: tuple[Any, ...], ids: Sequence[str] | None) -> str:
    """``metadata[3]['tags'][1] (document 'x')``: a place in the metadata, for errors."""
    head, rest = path[0], path[1:]
    name = f"metadata[{head}]" + "".join(f"[{p!r}]" for p in rest)
    return name if ids is None else f"{name} (document {ids[head]!r})"


def _json_dict(meta: Mapping[Any, Any], path: tuple[Any, ...], ids: Sequence[str] | None,
               ) -> dict[str, Any]:
    out = {}
    for key, value in meta.items():
        if type(key) is not str or not key.isascii():
            key = _json_key(key, path, ids)
        kind = type(value)  # the common values first, without a call
        if kind in _PLAIN or (kind is str and value.isascii()):
            out[key] = value
        else:
            out[key] = _json_value(value, (*path, key), ids)
    return out


def _json_key(key: Any, path: tuple[Any, ...], ids: Sequence[str] | None) -> str:
    if not isinstance(key, str):
        raise TypeError(f"{_where(path, ids)} has the key {key!r} of type "
                        f"{type(key).__name__}: metadata keys must be strings")
    if surrogate_at(key) is not None:
        raise ValueError(f"{_where(path, ids)} has a key with an unpaired surrogate "
                         f"({key!r}): metadata must be valid Unicode text")
    return str(key)


def _json_value(value: Any, path: tuple[Any, ...], ids: Sequence[str] | None) -> Any:
    """``value`` as JSON holds it (see :func:`as_metadata`), or a named error."""
    kind = type(value)
    if kind is str:
        if not value.isascii() and surrogate_at(value) is not None:
            raise ValueError(f"{_where(path, ids)} holds an unpaired surrogate at position "
                             f"{surrogate_at(value)}: metadata strings must be valid Unicode "
                             "text (a saved index stores them as UTF-8)")
        return value
    if kind in _PLAIN:
        return value
    if len(path) > MAX_METADATA_DEPTH and isinstance(value, (list, tuple, Mapping)):
        raise ValueError(f"{_where(path[:3], ids)} nests lists or dicts more than "
                         f"{MAX_METADATA_DEPTH} levels deep (or contains itself)")
    if isinstance(value, (list, tuple)):
        return [v if type(v) in _PLAIN or (type(v) is str and v.isascii())
                else _json_value(v, (*path, j), ids) for j, v in enumerate(value)]
    if isinstance(value, Mapping):
        return _json_dict(value, path, ids)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str):
        return _json_value(str(value), path, ids)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    raise TypeError(f"{_where(path, ids)} is a {kind.__name__} ({value!r:.60}): metadata "
                    "is stored as JSON, which holds strings, numbers, bools, None, and "
                    "lists and dicts of them; convert it (a date to value.isoformat(), "
                    "bytes to a string)")


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
