"""Training data: FlagEmbedding's JSONL, checked line by line, and length-bucketed batches.

Each line is ``{"query": str, "pos": [str, ...], "neg": [str, ...]}`` with optional
``pos_scores`` / ``neg_scores`` (teacher scores, one per passage) and ``prompt`` (prepended
to the query). Every epoch draws, for each query, one positive and ``group_size - 1``
negatives; the draw depends only on ``(seed, epoch, example)``, so a run is reproducible and
a resumed run sees the same groups. Texts are tokenized once, up front.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bgem3._jsonl import read_jsonl
from bgem3.batching import TokenizerSpec, tokenize
from bgem3.errors import DatasetError, DatasetNotFoundError

__all__ = [
    "Example",
    "GroupBatches",
    "TrainingSet",
    "collate_groups",
    "data_fingerprint",
    "parse_example",
    "read_training_data",
    "read_training_rows",
]


@dataclass(frozen=True)
class Example:
    """One training line.

    Attributes:
        query: The query, its prompt already prepended.
        pos: Positive passages (at least one).
        neg: Negative passages.
        pos_scores: Teacher scores of ``pos``, or ``None``.
        neg_scores: Teacher scores of ``neg``, or ``None``.
        where: ``file:line`` for messages.
    """

    query: str
    pos: tuple[str, ...]
    neg: tuple[str, ...]
    pos_scores: tuple[float, ...] | None
    neg_scores: tuple[float, ...] | None
    where: str


def _texts(row: dict[str, Any], key: str, where: str, *, required: bool) -> tuple[str, ...]:
    value = row.get(key, None if required else [])
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise DatasetError(f"{where}: {key!r} must be a list of strings, got {value!r:.80}")
    if required and not value:
        raise DatasetError(f"{where}: {key!r} is empty; every query needs a positive passage")
    return tuple(value)


def _scores(row: dict[str, Any], key: str, n: int, where: str) -> tuple[float, ...] | None:
    value = row.get(key)
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) != n
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                       and math.isfinite(v) for v in value)):
        raise DatasetError(f"{where}: {key!r} must be {n} finite numbers, one per passage, "
                           f"got {value!r:.80}")
    return tuple(float(v) for v in value)


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.jsonl") if p.is_file())
        if not files:
            raise DatasetNotFoundError(f"{path}: no .jsonl files in this directory")
        return files
    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: no such file or directory")
    return [path]


def read_training_rows(paths: Sequence[str | os.PathLike[str]]
                       ) -> Iterator[tuple[str, dict[str, Any]]]:
    """``("file:line", object)`` of every line of the training files, in order."""
    for item in paths:
        for file in _files(Path(item)):
            for number, row in read_jsonl(file):
                yield f"{file}:{number}", row


def data_fingerprint(paths: Sequence[str | os.PathLike[str]]) -> str:
    """SHA-256 of the bytes of every training file, in reading order (names do not count).

    A resumed run compares it with the run's: the same data under another path resumes,
    changed data does not.

    Raises:
        DatasetNotFoundError: A path does not exist.
    """
    digest = hashlib.sha256(b"bgem3-training-data-v1")
    for item in paths:
        for file in _files(Path(item)):
            with file.open("rb") as stream:
                digest.update(os.fstat(stream.fileno()).st_size.to_bytes(8, "little"))
                while chunk := stream.read(1 << 20):
                    digest.update(chunk)
    return digest.hexdigest()


def parse_example(row: dict[str, Any], where: str, query_instruction: str | None = None
                  ) -> Example:
    """Check one training line and return it as an :class:`Example`.

    Raises:
        DatasetError: A missing or mistyped field, naming ``where``.
    """
    query = row.get("query")
    if not isinstance(query, str) or not query.strip():
        raise DatasetError(f"{where}: 'query' must be a non-empty string, got {query!r:.80}")
    prompt = row.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise DatasetError(f"{where}: 'prompt' must be a string, got {prompt!r:.80}")
    prefix = prompt if prompt is not None else (query_instruction or "")
    pos = _texts(row, "pos", where, required=True)
    neg = _texts(row, "neg", where, required=False)
    pos_scores = _scores(row, "pos_scores", len(pos), where)
    neg_scores = _scores(row, "neg_scores", len(neg), where)
    if (pos_scores is None) != (neg_scores is None):
        raise DatasetError(f"{where}: teacher scores need both 'pos_scores' and 'neg_scores'")
    return Example(prefix + query, pos, neg, pos_scores, neg_scores, where)


def read_training_data(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                       query_instruction: str | None = None) -> list[Example]:
    """Read and check FlagEmbedding-format training files.

    Args:
        paths: JSONL files or directories of them.
        query_instruction: Prepended to every query without its own ``prompt``.

    Returns:
        The examples, in file order.

    Raises:
        DatasetNotFoundError: A path does not exist.
        DatasetError: A malformed line (named ``file:line``), or teacher scores on some
            lines but not on others.
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    examples = [parse_example(row, where, query_instruction)
                for where, row in read_training_rows(items)]
    if not examples:
        raise DatasetError(f"no training examples in {', '.join(map(str, items))}")
    with_scores = [e.pos_scores is not None for e in examples]
    if any(with_scores) and not all(with_scores):
        first = examples[with_scores.index(not with_scores[0])].where
        raise DatasetError(f"{first}: some lines have teacher scores (pos_scores, neg_scores) "
                           "and others not; give them to every line or to none")
    return examples


class TrainingSet:
    """Examples tokenized once, with each epoch's groups drawn reproducibly.

    Args:
        examples: The examples.
        backend: A ``tokenizers.Tokenizer`` without truncation or padding.
        spec: Special ids.
        group_size: Passages per query: one positive and ``group_size - 1`` negatives.
        query_max_length: Longest query, special tokens included.
        passage_max_length: Longest passage, special tokens included.
        seed: Seed of the draws.

    Raises:
        DatasetError: An example has no negatives while ``group_size`` needs some.
    """

    def __init__(self, examples: Sequence[Example], backend: Any, spec: TokenizerSpec,
                 group_size: int, query_max_length: int, passage_max_length: int,
                 seed: int = 0) -> None:
        if group_size > 1:
            for example in examples:
                if not example.neg:
                    raise DatasetError(
                        f"{example.where}: 'neg' is empty, but a group of {group_size} needs "
                        "negatives (mine some with `bgem3 mine-negatives`, or use "
                        "--group-size 1 to train on in-batch negatives alone)")
        self.examples = list(examples)
        self.group_size = group_size
        self.seed = seed
        self.epoch = 0
        self.teacher = bool(self.examples) and self.examples[0].pos_scores is not None
        queries = [e.query for e in self.examples]
        passages = sorted({t for e in self.examples for t in (*e.pos, *e.neg)})
        self._passage_row = {t: i for i, t in enumerate(passages)}
        self.queries = tokenize(backend, queries, spec, query_max_length)
        self.passages = tokenize(backend, passages, spec, passage_max_length)
        self._passage_texts = passages
        self.pos_rows = [np.asarray([self._passage_row[t] for t in e.pos], np.int64)
                         for e in self.examples]
        self.neg_rows = [np.asarray([self._passage_row[t] for t in e.neg], np.int64)
                         for e in self.examples]
        # longest candidate of each example: what its group can cost at most
        self.lengths = np.asarray(
            [int(self.passages.lengths[np.concatenate((p, n))].max())
             for p, n in zip(self.pos_rows, self.neg_rows, strict=True)], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.examples)

    def passages_text(self, row: int) -> str:
        """The text of passage ``row``."""
        return self._passage_texts[row]

    @property
    def truncated(self) -> tuple[int, int]:
        """How many queries and passages were longer than their maximum and were cut."""
        return self.queries.n_truncated, self.passages.n_truncated

    def group(self, index: int, epoch: int | None = None) -> tuple[NDArray[np.int64],
                                                                    NDArray[np.float32] | None]:
        """The passage rows of one example's group (positive first), and teacher scores.

        FlagEmbedding's draw: one positive at random; ``group_size - 1`` distinct negatives
        when there are enough, else drawn from the negatives repeated.
        """
        example = self.examples[index]
        rng = np.random.default_rng([self.seed, self.epoch if epoch is None else epoch, index])
        pos = int(rng.integers(len(example.pos)))
        need = self.group_size - 1
        negs = np.zeros(0, dtype=np.int64)
        if need:
            pool = len(example.neg)
            repeats = -(-need // pool)
            negs = rng.permutation(pool * repeats)[:need] % pool
        rows = np.concatenate(([self.pos_rows[index][pos]], self.neg_rows[index][negs]))
        teacher = None
        if example.pos_scores is not None and example.neg_scores is not None:
            teacher = np.asarray([example.pos_scores[pos],
                                  *(example.neg_scores[i] for i in negs)], dtype=np.float32)
        return rows.astype(np.int64), teacher


class GroupBatches:
    """Batch sampler: queries in batches of similar length, within a token budget.

    Each epoch shuffles the examples, cuts them into windows of ``50 * batch_size``, sorts
    each window by length and packs batches of at most ``batch_size`` queries whose
    ``queries x group_size x longest passage`` stays within ``batch_tokens`` (BGE-M3's
    efficient batching: fewer rows for long texts, little padding). Batch order is shuffled.
    The same seed and epoch give the same batches.

    Args:
        dataset: The training set.
        batch_size: Most queries per batch.
        batch_tokens: Padded passage tokens per batch (``None``: no limit).
        seed: Shuffle seed.
        drop_last: Drop a last batch smaller than ``batch_size`` (fixed-size batches only).
    """

    def __init__(self, dataset: TrainingSet, batch_size: int, batch_tokens: int | None,
                 seed: int = 0, drop_last: bool = False) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.batch_tokens = batch_tokens
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch (the Trainer calls this; the draw of groups follows it)."""
        self.epoch = epoch
        self.dataset.epoch = epoch

    def batches(self) -> list[list[int]]:
        """This epoch's batches of example indices."""
        rng = np.random.default_rng([self.seed, self.epoch, 1])
        order = rng.permutation(len(self.dataset))
        if self.batch_tokens is None:
            cut = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
            if self.drop_last and cut and len(cut[-1]) < self.batch_size:
                cut.pop()
            return [c.tolist() for c in cut]
        lengths = self.dataset.lengths
        group = self.dataset.group_size
        out: list[list[int]] = []
        window = 50 * self.batch_size
        for start in range(0, len(order), window):
            part = order[start : start + window]
            part = part[np.argsort(-lengths[part], kind="stable")]
            i = 0
            while i < len(part):
                longest = max(int(lengths[part[i]]), 1)
                rows = max(1, min(self.batch_size, self.batch_tokens // (group * longest),
                                  len(part) - i))
                out.append(part[i : i + rows].tolist())
                i += rows
        return [out[j] for j in rng.permutation(len(out))]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


def collate_groups(dataset: TrainingSet, indices: Sequence[int], pad_id: int
                   ) -> dict[str, Any]:
    """Pad one batch: its queries and their groups of passages (group by group).

    Returns:
        ``query_ids`` / ``query_mask`` ``int64 [b, Lq]``, ``passage_ids`` /
        ``passage_mask`` ``int64 [b * g, Lp]`` and ``teacher_scores`` ``float32 [b, g]``
        (or ``None``), as torch tensors.
    """
    import torch

    groups = [dataset.group(i) for i in indices]
    rows = np.concatenate([g[0] for g in groups])

    def pad(ids: list[NDArray[np.int64]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(a.shape[0] for a in ids)
        out = np.full((len(ids), width), pad_id, dtype=np.int64)
        for r, a in enumerate(ids):
            out[r, : a.shape[0]] = a
        mask = (np.arange(width)[None, :] < np.asarray([a.shape[0] for a in ids])[:, None])
        return torch.from_numpy(out), torch.from_numpy(mask.astype(np.int64))

    query_ids, query_mask = pad([dataset.queries.ids[i] for i in indices])
    passage_ids, passage_mask = pad([dataset.passages.ids[r] for r in rows])
    teacher = None
    if groups and groups[0][1] is not None:
        teacher = torch.from_numpy(np.stack([g[1] for g in groups]))  # type: ignore[misc]
    return {"query_ids": query_ids, "query_mask": query_mask, "passage_ids": passage_ids,
            "passage_mask": passage_mask, "teacher_scores": teacher}
