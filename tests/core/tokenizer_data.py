"""A tiny checkpoint whose tokenizer segments long runs without spaces by how long they are.

A Unigram model segments a run without spaces (one pre-token) as a whole, so where the run
ends can change its first tokens. The tiny vocabulary has no such case; this copy replaces a
few unused pieces with runs of three units whose score ties with the unit's own pieces, so
the best segmentation of ``unit * n`` depends on ``n`` modulo 3 at its start (how BGE-M3's
vocabulary treats ``"a" * 3000`` is alike: its first tokens depend on the length).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

__all__ = ["TIED_RUNS", "tied_runs_checkpoint"]

# unit -> the pieces it needs (the unit's characters, alone and after "▁", where the tiny
# vocabulary lacks them), then the run of three units, scored as three units of singles
_PIECES: dict[str, list[tuple[str, float]]] = {
    "a": [("aaa", -10.5)],
    "日本": [("日本日本日本", -21.0)],
    "ไทย": [("ไ", -3.5), ("ท", -3.5), ("ย", -3.5), ("▁ไ", -3.0), ("ไทยไทยไทย", -31.5)],
    "QUJD": [("QUJDQUJDQUJD", -42.0)],
    "🙂": [("🙂", -3.5), ("▁🙂", -3.0), ("🙂🙂🙂", -10.5)],
}

TIED_RUNS = {
    "latin": "a" * 3000,
    "cjk": "日本" * 1500,
    "thai": "ไทย" * 1000,
    "base64": "QUJD" * 750,
    "emoji": "🙂" * 3000,
    "after a word": "paris " + "a" * 3000,
}
"""Long texts without spaces (the last after one word) in several scripts."""


def tied_runs_checkpoint(source: Path, target: Path) -> Path:
    """Copy the tiny checkpoint at ``source`` to ``target`` with the tied pieces.

    The pieces replace Devanagari ``"▁x"`` pieces (no test text holds them) at the same
    ids, so the model's embeddings still fit the vocabulary.
    """
    shutil.copytree(source, target)
    file = target / "tokenizer.json"
    description = json.loads(file.read_text(encoding="utf-8"))
    vocab = description["model"]["vocab"]
    spare = [i for i, (piece, _) in enumerate(vocab)
             if len(piece) == 2 and piece[0] == "▁" and "\u0900" <= piece[1] <= "\u097f"]
    pieces = [piece for group in _PIECES.values() for piece in group]
    for i, (piece, score) in zip(spare, pieces, strict=False):
        vocab[i] = [piece, score]
    file.write_text(json.dumps(description, ensure_ascii=False), encoding="utf-8")
    return target
