"""The metadata filter language both index backends (and the LlamaIndex translator) speak.

A filter maps keys to a value (equality) or a list of values (any of them); all keys must
match. Values are strings, ints or bools, compared with their type (``True`` does not match
``1``); a document whose metadata value is a list matches when any element does. An empty
list matches nothing. :class:`Postings` evaluates filters over an embedded index's rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["Postings", "TypedValue", "check_filter", "posting_keys"]

TypedValue = tuple[str, Any]
"""A filterable value tagged with its type, e.g. ``("str", "en")`` or ``("bool", True)``."""


def _typed(value: Any) -> TypedValue | None:
    """The posting key of one metadata value: tagged by type, so that ``True != 1``.

    Only strings, ints and bools are matched (as in Qdrant); ``None`` for anything else.
    """
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, str):
        return ("str", value)
    return None


def posting_keys(value: Any) -> list[TypedValue]:
    """What a metadata value is found by: itself, or each element of a list or tuple.

    Example:
        >>> posting_keys(["a", 2, 1.5])
        [('str', 'a'), ('int', 2)]
    """
    if isinstance(value, (list, tuple)):
        keys = [_typed(v) for v in value]
        return [k for k in keys if k is not None]
    key = _typed(value)
    return [] if key is None else [key]


def check_filter(where: Mapping[str, Any] | None) -> dict[str, list[TypedValue]]:
    """Check a metadata filter; the same rules hold in both index backends.

    Returns:
        ``{key: [typed values]}``.

    Raises:
        TypeError: ``where`` is not a dict, or a key is not a string.
        ValueError: A value that cannot be matched (a float, ``None``, a dict...).

    Example:
        >>> check_filter({"lang": "en", "year": [2023, 2024]})
        {'lang': [('str', 'en')], 'year': [('int', 2023), ('int', 2024)]}
    """
    if where is None:
        return {}
    if not isinstance(where, Mapping):
        raise TypeError(f"filter must be a dict such as {{'lang': 'en', 'year': [2023, 2024]}}, "
                        f"got {type(where).__name__}")
    out: dict[str, list[TypedValue]] = {}
    for key, wanted in where.items():
        if not isinstance(key, str):
            raise TypeError(f"filter keys must be strings, got {key!r}")
        values = list(wanted) if isinstance(wanted, (list, tuple, set, frozenset)) else [wanted]
        typed = []
        for value in values:
            posting = _typed(value)
            if posting is None:
                raise ValueError(f"filter value {value!r} for {key!r} cannot be matched: use "
                                 "strings, ints or bools")
            typed.append(posting)
        out[key] = typed
    return out


class Postings:
    """Rows by metadata value, for filtering an index's rows without scanning metadata.

    Rows are only ever appended; a filter is evaluated against the first ``n`` rows.

    Example:
        >>> postings = Postings()
        >>> postings.add([{"lang": "en"}, {"lang": ["fr", "en"]}, {}], start=0)
        >>> postings.mask({"lang": "fr"}, np.ones(3, dtype=bool)).tolist()
        [False, True, False]
    """

    def __init__(self) -> None:
        self._rows: dict[str, dict[TypedValue, list[int]]] = {}

    @staticmethod
    def keys_of(metadata: list[dict[str, Any]]) -> list[list[tuple[str, TypedValue]]]:
        """The ``(key, typed value)`` pairs each row will be found by (no state touched)."""
        return [[(key, k) for key, value in meta.items() for k in posting_keys(value)]
                for meta in metadata]

    def add(self, metadata: list[dict[str, Any]], start: int,
            keys: list[list[tuple[str, TypedValue]]] | None = None) -> None:
        """Record the metadata of rows ``start, start + 1, ...`` (``keys`` if computed)."""
        for offset, row_keys in enumerate(self.keys_of(metadata) if keys is None else keys):
            for key, posting in row_keys:
                self._rows.setdefault(key, {}).setdefault(posting, []).append(start + offset)

    def mask(self, where: Mapping[str, Any] | None, alive: NDArray[np.bool_]
             ) -> NDArray[np.bool_]:
        """The rows of ``alive`` (its length is the row count) that match ``where``."""
        mask: NDArray[np.bool_] = alive.copy()
        n = alive.shape[0]
        for key, wanted in check_filter(where).items():
            postings = self._rows.get(key, {})
            keep = np.zeros(n, dtype=np.bool_)
            for posting in wanted:
                rows = np.asarray(postings.get(posting, ()), dtype=np.int64)
                keep[rows[rows < n]] = True
            mask &= keep
        return mask
