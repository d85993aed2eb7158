"""Tokenize once, sort by length, cut into token-budget batches, pad each batch.

Padding is what makes naive batching slow: a batch costs ``rows x longest row``. Sorting
by length and filling each batch up to a token budget keeps that product close to the
number of real tokens, and the caller restores the input order afterwards with the
indices each :class:`Batch` carries. :func:`lexical_weights` is the way back for the
sparse head: a padded batch's per-token weights to one vector per row.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bgem3._types import SparseVector, trusted_sparse
from bgem3.errors import CheckpointError

__all__ = ["Batch", "M3Tokenizer", "Packed", "Tokenized", "TokenizerSpec", "clean_text",
           "collate", "collate_packed", "lexical_weights", "load_tokenizer", "plan_batches",
           "plan_packed", "tokenize", "unique_texts"]

MCLS_STRIDE = 256
"""Content tokens between two ``[CLS]`` tokens in MCLS mode (BGE-M3 report, sec. 3.3)."""

MAX_PADDING_WASTE = 0.1
"""Largest fraction of a batch that may be padding."""

PACK_WIDTH = 512
"""Tokens in one packed row, where short sequences lie end to end, each attending to itself."""


@dataclass(frozen=True)
class TokenizerSpec:
    """The special ids a BGE-M3 (XLM-R) sequence is built from.

    Attributes:
        cls_id: ``<s>``, first token of every sequence.
        eos_id: ``</s>``, last token of every sequence.
        pad_id: ``<pad>``.
        unk_id: ``<unk>``.
    """

    cls_id: int
    eos_id: int
    pad_id: int
    unk_id: int

    @property
    def unused_ids(self) -> tuple[int, ...]:
        """Ids that never receive a lexical weight (FlagEmbedding drops the same four)."""
        return (self.cls_id, self.eos_id, self.pad_id, self.unk_id)


@dataclass(frozen=True)
class Tokenized:
    """Token ids of many texts, in input order.

    Attributes:
        ids: One ``int64`` array per text: ``<s> content </s>``.
        lengths: ``int64 [n]`` length of each array.
        n_truncated: How many texts were longer than the maximum and were cut.
        cls_positions: For MCLS, one array per text with the positions of its ``<s>``
            tokens; ``None`` otherwise.
        truncated: ``bool [n]`` which texts were cut (``None``: not recorded).
    """

    ids: list[NDArray[np.int64]]
    lengths: NDArray[np.int64]
    n_truncated: int
    cls_positions: list[NDArray[np.int64]] | None = None
    truncated: NDArray[np.bool_] | None = None


class M3Tokenizer:
    """A checkpoint's tokenizer, in the three forms encoding and training use.

    Args:
        backend: Its ``tokenizers.Tokenizer``, truncation and padding off.
        spec: The special ids sequences are built from.
        path: The checkpoint directory (where :attr:`hf` is loaded from, when asked for).
        hf: The transformers tokenizer, if it is loaded already.

    Attributes:
        backend: What :func:`tokenize` runs.
        spec: The special ids.
    """

    def __init__(self, backend: Any, spec: TokenizerSpec, path: str | os.PathLike[str],
                 hf: Any = None) -> None:
        self.backend = backend
        self.spec = spec
        self.path = os.fspath(path)
        self._hf = hf
        self._lock = threading.Lock()

    @property
    def hf(self) -> Any:
        """The transformers tokenizer (``AutoTokenizer``), for callers that want its API.

        Loaded on first use: encoding runs ``backend`` alone.
        """
        with self._lock:
            if self._hf is None:
                self._hf = _auto_tokenizer(self.path)
            return self._hf

    def tokenize(self, texts: Sequence[str], max_length: int, *, mcls: bool = False
                 ) -> Tokenized:
        """:func:`tokenize` with this tokenizer (see there)."""
        return tokenize(self.backend, texts, self.spec, max_length, mcls=mcls)


# what AutoTokenizer builds a checkpoint's tokenizer from (config.json names its class)
_TOKENIZER_INPUTS = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                     "added_tokens.json", "sentencepiece.bpe.model", "config.json")


def load_tokenizer(path: str | os.PathLike[str]) -> M3Tokenizer:
    """Load the tokenizer of a checkpoint directory, as :class:`~bgem3.BGEM3` and training do.

    The pipeline is the one transformers' ``AutoTokenizer`` builds (which may differ from
    the ``tokenizer.json`` on disk: transformers 5 rebuilds XLM-R's normalizer and
    pre-tokenizer), so that token ids equal FlagEmbedding's. It is kept in bgem3's cache
    directory under a digest of the files it is built from and the library versions, so that
    later loads read that one pipeline back without transformers (one tokenizer in memory,
    a fraction of the time); :attr:`M3Tokenizer.hf` loads transformers' own when asked for.

    Args:
        path: A local checkpoint directory (see :func:`bgem3.checkpoint.resolve_checkpoint`
            for hub ids).

    Returns:
        The tokenizer, its fast backend and its special ids.

    Raises:
        CheckpointError: No loadable tokenizer, one without a fast (``tokenizers``) backend,
            or one that lacks a ``<s>``, ``</s>``, ``<pad>`` or ``<unk>`` token.

    Example:
        >>> import tempfile
        >>> from bgem3.testing import build_tiny_checkpoint
        >>> tokenizer = load_tokenizer(build_tiny_checkpoint(tempfile.mkdtemp()))
        >>> tokenizer.spec
        TokenizerSpec(cls_id=0, eos_id=2, pad_id=1, unk_id=3)
        >>> tokenizer.tokenize(["the city of paris"], 4).lengths.tolist()
        [4]
    """
    from tokenizers import Tokenizer

    entry = tokenizer_entry(path)
    cached = None if entry is None else cached_tokenizer(path, entry)
    if cached is not None:
        return cached
    hf = _auto_tokenizer(path)
    ids: dict[str, Any] = {
        name: getattr(hf, f"{name}_token_id", None) for name in ("cls", "eos", "pad", "unk")
    }
    missing = [name for name, value in ids.items() if value is None]
    if missing:
        raise CheckpointError(f"the tokenizer defines no {', '.join(missing)} token")
    spec = TokenizerSpec(int(ids["cls"]), int(ids["eos"]), int(ids["pad"]), int(ids["unk"]))
    pipeline = hf.backend_tokenizer.to_str()
    backend = Tokenizer.from_str(pipeline)
    backend.no_truncation()
    backend.no_padding()
    if entry is not None:
        _save_pipeline(entry, backend.to_str(), spec)
    return M3Tokenizer(backend, spec, path, hf)


def cached_tokenizer(path: str | os.PathLike[str], entry: Path | None = None
                     ) -> M3Tokenizer | None:
    """:func:`load_tokenizer` from bgem3's cache alone, or ``None`` where it is not cached.

    Never imports transformers. An entry that cannot be read, of any kind of damage, is
    ``None`` too: :func:`load_tokenizer` builds it again. ``entry``: the
    :func:`tokenizer_entry` of ``path``, if known.
    """
    entry = tokenizer_entry(path) if entry is None else entry
    if entry is None or not entry.is_file():
        return None
    from tokenizers import Tokenizer

    with contextlib.suppress(Exception):
        saved = json.loads(entry.read_text(encoding="utf-8"))
        backend = Tokenizer.from_str(saved["pipeline"])
        return M3Tokenizer(backend, TokenizerSpec(*map(int, saved["spec"])), path)
    return None


def _auto_tokenizer(path: str | os.PathLike[str]) -> Any:
    from transformers import AutoTokenizer

    try:
        hf = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(f"cannot load the tokenizer from {path}: {exc}") from exc
    if getattr(hf, "backend_tokenizer", None) is None:
        raise CheckpointError(f"the tokenizer in {path} has no fast (tokenizers) backend")
    return hf


def tokenizer_entry(path: str | os.PathLike[str]) -> Path | None:
    """Where bgem3 keeps the tokenizer built from these files by these versions.

    ``None`` where that cannot be known (a file or package version cannot be read).
    """
    import importlib.metadata

    from bgem3.checkpoint import cache_dir, files_digest

    try:
        versions = "".join(f"{package}{importlib.metadata.version(package)}"
                           for package in ("transformers", "tokenizers"))
        digest = files_digest(Path(path), _TOKENIZER_INPUTS,
                              f"bgem3-tokenizer-v1-{versions}".encode())
    except (OSError, importlib.metadata.PackageNotFoundError):
        return None
    return cache_dir() / "tokenizers" / f"{digest[:32]}.json"


def _save_pipeline(entry: Path, pipeline: str, spec: TokenizerSpec) -> None:
    """Write the entry atomically; a cache that cannot be written is simply not used."""
    with contextlib.suppress(OSError):
        entry.parent.mkdir(parents=True, exist_ok=True)
        staging = entry.with_name(f".{entry.name}.{os.getpid()}.{threading.get_ident()}")
        staging.write_text(json.dumps({"pipeline": pipeline, "spec": astuple(spec)}),
                           encoding="utf-8")
        os.replace(staging, entry)


def unique_texts(texts: Sequence[str]) -> tuple[list[str], NDArray[np.int64]]:
    """Distinct texts in first-seen order, and for each input the position of its text.

    For encoding each text once: ``outputs[inverse]`` gives one row per input again.

    Example:
        >>> distinct, inverse = unique_texts(["b", "a", "b"])
        >>> distinct, inverse.tolist()
        (['b', 'a'], [0, 1, 0])
    """
    positions: dict[str, int] = {}
    inverse = np.fromiter(
        (positions.setdefault(text, len(positions)) for text in texts),
        dtype=np.int64, count=len(texts),
    )
    return list(positions), inverse


def _mcls_content_budget(max_length: int) -> int:
    """Most content tokens that fit in ``max_length`` once a ``<s>`` leads each chunk."""
    usable = max_length - 1  # the final </s>
    chunks, rest = divmod(usable, MCLS_STRIDE + 1)
    return chunks * MCLS_STRIDE + max(rest - 1, 0)


def tokenize(
    backend: object,
    texts: Sequence[str],
    spec: TokenizerSpec,
    max_length: int,
    *,
    mcls: bool = False,
) -> Tokenized:
    """Tokenize ``texts`` with a ``tokenizers.Tokenizer`` and apply BGE-M3's template.

    Content is truncated to ``max_length - 2`` tokens, exactly like a transformers
    tokenizer called with ``truncation=True, max_length=max_length``. With ``mcls`` a
    ``<s>`` is inserted before every ``MCLS_STRIDE`` content tokens instead, and the
    content is truncated so that the whole sequence still fits ``max_length``.

    Args:
        backend: A ``tokenizers.Tokenizer`` with truncation and padding disabled.
        texts: The texts.
        spec: Special token ids.
        max_length: Longest sequence, special tokens included (at least 2).
        mcls: Build multi-CLS sequences.

    Returns:
        The ids per text, their lengths and the number of truncated texts.
    """
    budget = _mcls_content_budget(max_length) if mcls else max_length - 2
    encodings = _encode_bounded(backend, list(texts), budget)
    ids: list[NDArray[np.int64]] = []
    positions: list[NDArray[np.int64]] = []
    truncated = np.zeros(len(encodings), dtype=np.bool_)
    cls = np.array([spec.cls_id], dtype=np.int64)
    eos = np.array([spec.eos_id], dtype=np.int64)
    for i, encoding in enumerate(encodings):
        content = np.asarray(encoding.ids, dtype=np.int64)
        if content.shape[0] > budget:
            content = content[:budget]
            truncated[i] = True
        if not mcls:
            ids.append(np.concatenate((cls, content, eos)))
            continue
        n_chunks = max(1, -(-content.shape[0] // MCLS_STRIDE))
        starts = np.arange(n_chunks) * MCLS_STRIDE
        sequence = np.insert(content, starts, spec.cls_id)
        ids.append(np.concatenate((sequence, eos)))
        positions.append(starts + np.arange(n_chunks))
    lengths = np.fromiter((a.shape[0] for a in ids), dtype=np.int64, count=len(ids))
    return Tokenized(ids, lengths, int(truncated.sum()), positions if mcls else None, truncated)


CHARS_PER_TOKEN = 16
"""Characters tokenized per token a text may keep; longer texts are cut first (exactly, see
:func:`_encode_bounded`)."""

_SEGMENTING_PRE_TOKENIZERS = frozenset({"Sequence", "Metaspace", "WhitespaceSplit"})
"""Pre-tokenizers that split only at whitespace (and SentencePiece's ``▁``), so that a cut
inside a run of other characters can be verified (:func:`_verified_cut`)."""

_META = "\u2581"
"""SentencePiece's word marker ``▁``, at which Metaspace splits as at a space."""

_WINDOW_MARGIN = 8
"""Characters around a verified cut that must be plain too (no added token, local normalization)."""

_WINDOW_TRIES = 4
"""Stretches of plain characters tried for a verified cut before reading the run to its end."""


def clean_text(text: str) -> str:
    r"""``text`` with unpaired UTF-16 surrogates (invalid in UTF-8) replaced by U+FFFD.

    Example:
        >>> clean_text("a\ud800b") == "a\ufffdb"
        True
    """
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _encode_bounded(backend: Any, texts: list[str], budget: int) -> list[Any]:
    """Tokenize ``texts``, reading no more of each than its first ``budget`` tokens need.

    The first ``budget`` tokens (and whether there are more) are always those of the whole
    text. A text longer than ``CHARS_PER_TOKEN * (budget + 1)`` characters (the limit) is
    tokenized only as far as a cut that provably keeps them:

    1. At the last space before the limit, when the words before it give more than
       ``budget`` tokens: the pre-tokenizer splits at spaces and tokenizes each word on its
       own, so those words' tokens do not depend on what follows. One tokenization, as for
       a short text: this settles almost every long text.
    2. Inside a run without spaces that crosses the limit (CJK or Thai text, base64, a
       repeated character), only when :func:`_verified_cut` proves the cut: a Unigram
       model segments a whole run at once, and its first tokens can depend on where the
       run ends.
    3. Otherwise at the end of that run (the next space), or nowhere: the whole text.

    Texts with unpaired surrogates are cleaned, with a warning.
    """
    # checked here, not left to the tokenizer: recent tokenizers refuse unpaired surrogates
    # with a TypeError, older ones (0.20) encode them silently
    bad = [i for i, t in enumerate(texts) if not _is_valid(t)]
    if bad:
        warnings.warn(f"{len(bad)} text(s) held unpaired surrogates (first: item {bad[0]}); "
                      "they were replaced with U+FFFD", UnicodeWarning, stacklevel=4)
        replace = set(bad)
        texts = [clean_text(t) if i in replace else t for i, t in enumerate(texts)]
    limit = CHARS_PER_TOKEN * (budget + 1)
    cuts = {i: _cut(t, limit) for i, t in enumerate(texts) if len(t) > limit}
    inputs = [t[: cuts[i]] if i in cuts else t for i, t in enumerate(texts)]
    encodings = list(backend.encode_batch(inputs, add_special_tokens=False))
    for i, cut in cuts.items():
        if texts[i][cut] == " " and len(encodings[i]) > budget:
            continue  # whole words, enough of them (case 1)
        head = encodings[i] if cut == limit else None
        encodings[i] = _encode_long(backend, texts[i], budget, limit, head)
    return encodings


def _cut(text: str, limit: int) -> int:
    """Where to cut ``text`` first: its last space before ``limit``, else ``limit``."""
    space = text.rfind(" ", 0, limit)
    return space if space > 0 else limit


def _encode_one(backend: Any, text: str) -> Any:
    return backend.encode_batch([text], add_special_tokens=False)[0]


def _encode_long(backend: Any, text: str, budget: int, limit: int, head: Any | None) -> Any:
    """Cases 2 and 3 of :func:`_encode_bounded` for one text (``head``: ``text[:limit]``'s)."""
    if head is None:
        head = _encode_one(backend, text[:limit])
    facts = _cut_facts(backend)
    if facts is not None and len(head) > budget:
        verified = _verified_cut(backend, text, budget, limit, head, facts)
        if verified is not None:
            return verified
    end = text.find(" ", limit)  # the end of the run that crosses the limit
    if end != -1:
        encoding = head if end == limit else _encode_one(backend, text[:end])
        if len(encoding) > budget:
            return encoding
    return _encode_one(backend, text)


@dataclass(frozen=True)
class _CutFacts:
    """What verifying a cut needs to know of a tokenizer.

    Attributes:
        longest_piece: Characters in the vocabulary's longest piece.
        added: The added tokens' texts (matched in the raw text before the model runs).
    """

    longest_piece: int
    added: tuple[str, ...]


_FACTS: weakref.WeakKeyDictionary[Any, _CutFacts | None] = weakref.WeakKeyDictionary()


def _cut_facts(backend: Any) -> _CutFacts | None:
    """The facts of a Unigram tokenizer that pre-tokenizes at whitespace; ``None`` for others.

    A BPE or WordPiece model may change the start of a word for its end too (WordPiece
    replaces a whole word with ``[UNK]``), with no bound on how far back: their runs are
    read to the end.
    """
    try:
        return _FACTS[backend]
    except (KeyError, TypeError):
        pass
    facts = None
    pre = getattr(backend, "pre_tokenizer", None)
    if type(getattr(backend, "model", None)).__name__ == "Unigram" and pre is not None:
        try:
            kinds = _types_in(json.loads(pre.__getstate__()))
        except (AttributeError, TypeError, ValueError):
            kinds = {"unknown"}
        if kinds <= _SEGMENTING_PRE_TOKENIZERS:
            pieces = backend.get_vocab(with_added_tokens=False)
            added = tuple(t.content for t in backend.get_added_tokens_decoder().values())
            facts = _CutFacts(max(map(len, pieces), default=1), added)
    with contextlib.suppress(TypeError):
        _FACTS[backend] = facts
    return facts


def _types_in(description: Any) -> set[str]:
    """Every ``"type"`` in a pre-tokenizer's JSON description (a ``Sequence`` nests them)."""
    found: set[str] = set()
    if isinstance(description, dict):
        found.add(str(description.get("type")))
        description = list(description.values())
    if isinstance(description, list):
        for item in description:
            if isinstance(item, (dict, list)):
                found |= _types_in(item)
    return found


def _verified_cut(backend: Any, text: str, budget: int, limit: int, head: Any,
                  facts: _CutFacts) -> Any | None:
    """The encoding of a prefix of ``text`` proved to start with the whole text's tokens.

    Why a cut can be proved: Unigram segments each pre-token (here: a run without
    whitespace) by Viterbi. Scanning the run, it keeps for every position the best way to
    reach it (one last token and the position before it); tokenizing the run's first ``j``
    characters gives exactly that best way to ``j``, and the whole run's tokens are the
    best way to its end, traced back. Each token covers at most ``L`` characters (the
    longest piece), so the trace back from the end stops at one of any ``L`` consecutive
    positions of the run, say ``j``, and from there on it *is* the best way to ``j``. Hence
    when the cuts at ``L`` consecutive positions inside one run all give the same first
    ``budget`` tokens, and more than ``budget``, so does the whole text, whatever follows.

    The ``L`` cuts are placed a little past the ``budget``-th token of ``head`` (short
    prefixes, cheap to tokenize), in the first stretch (of a few tried) whose characters
    are plain: no whitespace, no ``▁``, no added token, and a normalizer that maps them
    one to one, the same in a prefix as in the whole (a character it expands, drops or
    composes with its neighbour disqualifies the stretch).

    Returns:
        The encoding of the first cut, or ``None`` when no such window is found or the
        cuts disagree (a run whose segmentation depends on its end, such as one character
        repeated): the caller then reads the run to its end.
    """
    longest = facts.longest_piece
    margin = max([_WINDOW_MARGIN, *map(len, facts.added)])
    span = longest + 2 * margin
    after = head.token_to_chars(min(len(head) - 1, budget + max(16, budget // 8)))[1]
    plain = re.compile(rf"\S{{{span}}}")
    start, first = max(0, after - margin), -1
    for _ in range(_WINDOW_TRIES):
        window = plain.search(text, start, min(len(text), 2 * limit))
        if window is None:
            return None
        region = window.group()
        if (_META not in region and not any(token and token in region for token in facts.added)
                and _normalized_in_place(getattr(backend, "normalizer", None), region, margin,
                                         longest)):
            first = window.start() + margin
            break
        start = window.end() - margin
    if first < 0:
        return None
    cuts = backend.encode_batch([text[: first + j] for j in range(longest)],
                                add_special_tokens=False)
    kept = cuts[0].ids[:budget]
    if all(len(cut) > budget and cut.ids[:budget] == kept for cut in cuts):
        return cuts[0]
    return None


def _normalized_in_place(normalizer: Any, region: str, margin: int, longest: int) -> bool:
    """Whether ``normalizer`` maps ``region`` character by character, prefixes included.

    Checked on the cuts' neighbourhood only: every prefix ending at a cut
    (``region[:margin + j]``) must normalize to the start of the whole region's
    normalization, which has one character per character and no whitespace.
    """
    if normalizer is None:
        return True
    whole = normalizer.normalize_str(region)
    if len(whole) != len(region) or _META in whole or any(c.isspace() for c in whole):
        return False
    return all(normalizer.normalize_str(region[:j]) == whole[:j]
               for j in range(margin, margin + longest + 1))


def _is_valid(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class Batch:
    """One padded batch, rows sorted longest first.

    Attributes:
        indices: ``int64 [b]`` positions of the rows in the input.
        input_ids: ``int64 [b, L]`` ids, padded with the pad id.
        attention_mask: ``int64 [b, L]``, 1 on real tokens.
        lengths: ``int64 [b]`` real length of each row.
        cls_mask: ``bool [b, L]`` MCLS ``<s>`` positions, or ``None``.
    """

    indices: NDArray[np.int64]
    input_ids: NDArray[np.int64]
    attention_mask: NDArray[np.int64]
    lengths: NDArray[np.int64]
    cls_mask: NDArray[np.bool_] | None = None
    packed: Packed | None = None


@dataclass(frozen=True)
class Packed:
    """The same rows as a :class:`Batch`, laid end to end in fewer, longer rows.

    Each sequence keeps its own positions and attends to itself alone, so the model
    computes what it computes for the sequence alone, without padding each to the longest.

    Attributes:
        input_ids: ``int64 [r, w]`` the sequences end to end, then the pad id.
        position_ids: ``int64 [r, w]`` each sequence's own positions, as the model
            numbers a sequence alone.
        segments: ``int64 [r, w]`` the batch row each position holds, ``-1`` on padding.
        gather: ``int64 [b, L]`` where each position of the padded batch lies in the
            flattened ``[r * w]`` rows (past a row's end: its last token).
    """

    input_ids: NDArray[np.int64]
    position_ids: NDArray[np.int64]
    segments: NDArray[np.int64]
    gather: NDArray[np.int64]


def plan_batches(
    lengths: NDArray[np.int64],
    max_tokens: int,
    max_rows: int,
    max_waste: float = MAX_PADDING_WASTE,
) -> list[NDArray[np.int64]]:
    """Group sequences, longest first, into batches that waste little on padding.

    A batch costs ``rows x longest row``. Each batch starts at the longest remaining
    sequence and takes the next ones while that product stays within ``max_tokens``,
    the rows within ``max_rows``, and the padding within ``max_waste`` of the batch. A
    sequence longer than ``max_tokens`` gets a batch of its own.

    Args:
        lengths: ``int64 [n]`` sequence lengths.
        max_tokens: Token budget of a padded batch (rows times its longest row).
        max_rows: Most rows in a batch.
        max_waste: Largest fraction of a batch that may be padding (1.0: no limit).

    Returns:
        Index arrays into ``lengths``, one per batch, each sorted longest first.

    Example:
        >>> [b.tolist() for b in plan_batches(np.array([3, 9, 4, 2]), 10, 8, max_waste=1.0)]
        [[1], [2, 0], [3]]
        >>> [b.tolist() for b in plan_batches(np.array([10, 10, 9, 5]), 100, 8)]
        [[0, 1, 2], [3]]
    """
    order = np.argsort(-lengths, kind="stable")
    ordered = lengths[order]
    cumulative = np.concatenate(([0], np.cumsum(ordered)))
    batches: list[NDArray[np.int64]] = []
    start, n = 0, order.shape[0]
    while start < n:
        longest = max(int(ordered[start]), 1)
        rows = max(1, min(max_rows, max_tokens // longest, n - start))
        if rows > 1 and max_waste < 1.0:
            # Lengths fall along the batch, so the rows that keep the waste within bounds
            # form a prefix: count its length.
            k = np.arange(1, rows + 1)
            real = cumulative[start + k] - cumulative[start]
            rows = max(1, int(np.count_nonzero(real >= (1.0 - max_waste) * k * longest)))
        batches.append(order[start : start + rows])
        start += rows
    return batches


def plan_packed(
    batches: list[NDArray[np.int64]],
    lengths: NDArray[np.int64],
    width: int,
    max_tokens: int,
    max_texts: int | None = None,
) -> tuple[list[NDArray[np.int64]], list[NDArray[np.int64]]]:
    """Merge the batches smaller than one packed row into packed batches.

    A forward call has a fixed cost (on a CPU, BGE-M3's costs as much as ~35 tokens), so
    many small batches (a few short texts of different lengths, as a server gets from
    concurrent clients) are slow; padding them to one length is slow too. Their rows are
    laid end to end instead (:class:`Packed`), longest first, in rows of ``width`` tokens,
    ``max_tokens // width`` rows and at most ``max_texts`` texts per packed batch.

    Args:
        batches: The plan of :func:`plan_batches`.
        lengths: ``int64 [n]`` sequence lengths.
        width: Tokens per packed row.
        max_tokens: Token budget of one batch.
        max_texts: Most texts in one packed batch (the caller's ``batch_size``); ``None``:
            as many as fit.

    Returns:
        The batches kept as they are, and the packed ones (index arrays, longest first;
        :func:`collate_packed` lays them out).

    Example:
        >>> kept, packed = plan_packed([np.array([0]), np.array([1]), np.array([2])],
        ...                            np.array([600, 5, 7]), 512, 4096)
        >>> [b.tolist() for b in kept], [b.tolist() for b in packed]
        ([[0]], [[2, 1]])
    """
    small = [b for b in batches if b.shape[0] * int(lengths[b[0]]) < width]
    if len(small) < 2:
        return batches, []
    kept = [b for b in batches if b.shape[0] * int(lengths[b[0]]) >= width]
    merged = np.concatenate(small)
    merged = merged[np.argsort(-lengths[merged], kind="stable")]
    max_rows = max(1, max_tokens // width)
    packed, start, rows, fill = [], 0, 1, 0
    for i, length in enumerate(lengths[merged].tolist()):
        if max_texts is not None and i - start == max_texts:  # the next batch
            packed.append(merged[start:i])
            start, rows, fill = i, 1, 0
        elif fill + length > width:  # next row, or the next batch when this one is full
            rows, fill = rows + 1, 0
            if rows > max_rows:
                packed.append(merged[start:i])
                start, rows = i, 1
        fill += length
    packed.append(merged[start:])
    return kept, packed


def collate_packed(tokenized: Tokenized, indices: NDArray[np.int64], pad_id: int,
                   width: int, first_position: int) -> Batch:
    """:func:`collate`, plus the same sequences packed into rows of ``width`` tokens.

    Sequences go end to end in order (longest first), a new row when the next does not
    fit. ``first_position`` is the position id of a sequence's first token (XLM-R: its
    pad id + 1); padding gets ``first_position - 1``.
    """
    batch = collate(tokenized, indices, pad_id)
    lengths = batch.lengths.tolist()
    rows, offsets, row, fill = [], [], 0, 0
    for length in lengths:
        if fill + length > width:
            row, fill = row + 1, 0
        rows.append(row)
        offsets.append(fill)
        fill += length
    n_rows = row + 1
    used = np.zeros(n_rows, dtype=np.int64)
    np.maximum.at(used, rows, np.add(offsets, lengths))
    wide = int(used.max())
    input_ids = np.full((n_rows, wide), pad_id, dtype=np.int64)
    positions = np.full((n_rows, wide), first_position - 1, dtype=np.int64)
    segments = np.full((n_rows, wide), -1, dtype=np.int64)
    for k, (i, r, o, n) in enumerate(zip(indices.tolist(), rows, offsets, lengths,
                                         strict=True)):
        input_ids[r, o : o + n] = tokenized.ids[i]
        positions[r, o : o + n] = np.arange(first_position, first_position + n)
        segments[r, o : o + n] = k
    starts = np.asarray(rows, dtype=np.int64) * wide + np.asarray(offsets, dtype=np.int64)
    steps = np.minimum(np.arange(batch.input_ids.shape[1])[None, :],
                       batch.lengths[:, None] - 1)
    packed = Packed(input_ids, positions, segments, starts[:, None] + steps)
    return Batch(batch.indices, batch.input_ids, batch.attention_mask, batch.lengths,
                 batch.cls_mask, packed)


def collate(tokenized: Tokenized, indices: NDArray[np.int64], pad_id: int) -> Batch:
    """Pad the sequences at ``indices`` into one batch.

    Args:
        tokenized: The tokenized input.
        indices: Rows to take, longest first.
        pad_id: Padding id.

    Returns:
        The padded batch.
    """
    lengths = tokenized.lengths[indices]
    width = int(lengths.max())
    input_ids = np.full((indices.shape[0], width), pad_id, dtype=np.int64)
    for row, i in enumerate(indices):
        input_ids[row, : lengths[row]] = tokenized.ids[i]
    attention_mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
    cls_mask = None
    if tokenized.cls_positions is not None:
        cls_mask = np.zeros((indices.shape[0], width), dtype=np.bool_)
        for row, i in enumerate(indices):
            cls_mask[row, tokenized.cls_positions[i]] = True
    return Batch(indices, input_ids, attention_mask, lengths, cls_mask)


def lexical_weights(
    weights: NDArray[np.float32],
    input_ids: NDArray[np.int64],
    skip_ids: Sequence[int],
) -> list[SparseVector]:
    """One sparse vector per row of a batch: the largest weight of each token id (vectorized).

    FlagEmbedding's rule: ids in ``skip_ids`` (the special tokens) and weights ``<= 0``
    are dropped; an id that occurs several times keeps its largest weight.

    Args:
        weights: ``float32 [b, L]`` per-token weights of a padded batch.
        input_ids: ``int64 [b, L]`` its token ids (padding is the pad id, in ``skip_ids``).
        skip_ids: Ids that never get a weight.

    Returns:
        ``b`` vectors, ids increasing.

    Example:
        >>> ids = np.array([[0, 7, 5, 7, 2]])
        >>> w = np.array([[0.9, 0.2, 0.0, 0.4, 0.9]], dtype=np.float32)
        >>> lexical_weights(w, ids, (0, 1, 2, 3))[0].to_dict()
        {7: 0.4000000059604645}
    """
    if input_ids.shape[0] == 0:
        return []
    keep = (weights > 0) & ~np.isin(input_ids, skip_ids)
    rows, cols = np.nonzero(keep)
    tokens, values = input_ids[rows, cols], weights[rows, cols]
    order = np.lexsort((-values, tokens, rows))  # by row, then id, largest weight first
    rows, tokens, values = rows[order], tokens[order], values[order]
    first = np.ones(rows.shape[0], dtype=np.bool_)
    first[1:] = (rows[1:] != rows[:-1]) | (tokens[1:] != tokens[:-1])
    rows, tokens, values = rows[first], tokens[first], values[first]
    bounds = np.cumsum(np.bincount(rows, minlength=input_ids.shape[0]))[:-1]
    return [
        trusted_sparse(t.astype(np.int64, copy=False), v.astype(np.float32, copy=False))
        for t, v in zip(np.split(tokens, bounds), np.split(values, bounds), strict=True)
    ]
