"""Tokenizing only as far as max_length needs.

Moved from tests/core/test_hardening.py unchanged; tests/core/test_batching.py is not
this session's file: merge these tests into it and delete this file.
"""

from __future__ import annotations

from bgem3 import BGEM3
from bgem3.batching import tokenize
from bgem3.testing import random_texts


def test_a_huge_text_is_tokenized_only_as_far_as_needed(model: BGEM3) -> None:
    seen: list[int] = []

    class Recording:
        def __init__(self, backend: object) -> None:
            self.backend = backend

        def encode_batch(self, texts: list[str], add_special_tokens: bool = False):  # type: ignore[no-untyped-def]
            seen.extend(len(t) for t in texts)
            return self.backend.encode_batch(texts, add_special_tokens=add_special_tokens)  # type: ignore[attr-defined]

    huge = " ".join(random_texts(20000, min_words=20, max_words=40, seed=2))  # ~4 MB
    bounded = tokenize(Recording(model._backend), [huge, "short"], model._spec, 512)
    assert max(seen) < 20 * 512 * 2
    full = model._backend.encode_batch([huge], add_special_tokens=False)[0].ids[:510]
    assert bounded.ids[0][1:-1].tolist() == full and bounded.n_truncated == 1
    spaces = "word " + " " * 100000 + "end " * 600  # long whitespace: the cut is undone
    assert tokenize(model._backend, [spaces], model._spec, 512).ids[0][1:-1].tolist() == \
        model._backend.encode_batch([spaces], add_special_tokens=False)[0].ids[:510]
