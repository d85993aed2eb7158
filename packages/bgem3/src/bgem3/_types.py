"""Output containers: plain frozen dataclasses of numpy arrays."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, runtime_checkable

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11

__all__ = ["EncodeKeywords", "EncodeOutput", "Encoder", "Hit", "SparseVector", "sparse_to_csr",
           "trusted_sparse"]


@dataclass(frozen=True, eq=False)
class SparseVector:
    """Lexical weights of one text: token ids (sorted, unique) and their weights.

    The invariants are checked on construction: 1-d arrays of equal length, integer ids
    that are non-negative, strictly increasing (so unique), and finite weights. Two vectors
    are equal when they hold the same ids and weights.

    Attributes:
        indices: ``int64 [nnz]`` token ids in increasing order.
        values: ``float32 [nnz]`` weights.

    Example:
        >>> v = SparseVector.from_dict({7: 0.5, 3: 0.25})
        >>> v.indices.tolist(), v.values.tolist()
        ([3, 7], [0.25, 0.5])
        >>> v.to_dict()
        {3: 0.25, 7: 0.5}
    """

    indices: NDArray[np.int64]
    values: NDArray[np.float32]

    def __post_init__(self) -> None:
        indices, values = np.asarray(self.indices), np.asarray(self.values)
        if indices.shape != values.shape or indices.ndim != 1:
            raise ValueError(
                "SparseVector needs 1-d indices and values of equal length, got shapes "
                f"{indices.shape} and {values.shape}"
            )
        if indices.size and not np.issubdtype(indices.dtype, np.integer):
            raise TypeError(f"SparseVector indices must be integer token ids, got {indices.dtype}")
        if indices.size and (int(indices[0]) < 0 or (np.diff(indices) <= 0).any()):
            raise ValueError("SparseVector indices must be non-negative and strictly increasing "
                             "(sorted, no duplicates); SparseVector.from_dict sorts and checks")
        if not np.isfinite(values).all():
            raise ValueError("SparseVector values must be finite")
        object.__setattr__(self, "indices", indices.astype(np.int64, copy=False))
        object.__setattr__(self, "values", values.astype(np.float32, copy=False))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SparseVector):
            return NotImplemented
        return bool(np.array_equal(self.indices, other.indices)
                    and np.array_equal(self.values, other.values))

    __hash__ = None  # type: ignore[assignment]  # mutable arrays inside: not hashable

    @classmethod
    def _unchecked(cls, indices: NDArray[np.int64], values: NDArray[np.float32]) -> SparseVector:
        """A vector from arrays known to hold the invariants (the encoder's own output)."""
        vector = object.__new__(cls)
        object.__setattr__(vector, "indices", indices)
        object.__setattr__(vector, "values", values)
        return vector

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def to_dict(self) -> dict[int, float]:
        """Return ``{token_id: weight}`` with Python ``int`` keys and ``float`` values."""
        return dict(zip(self.indices.tolist(), self.values.tolist(), strict=True))

    @classmethod
    def from_dict(cls, weights: Mapping[int | str, float]) -> SparseVector:
        """Build a vector from ``{token_id: weight}`` (keys in any order).

        Keys are ints or strings of digits (FlagEmbedding's ``lexical_weights`` use
        ``str(token_id)``); a key that means the same id twice (``3`` and ``"3"``) or a
        non-integral key is an error.

        Raises:
            TypeError: ``weights`` is not a mapping, or a key is not an integer id.
            ValueError: The same id twice, or a weight that is not finite.

        Example:
            >>> SparseVector.from_dict({"7": 0.5}).to_dict()
            {7: 0.5}
        """
        if not isinstance(weights, Mapping):
            raise TypeError(f"from_dict takes {{token_id: weight}}, got {type(weights).__name__}")
        ids = []
        for key in weights:
            integral = isinstance(key, (int, np.integer)) and not isinstance(key, bool)
            if integral or (isinstance(key, str) and key.strip().isdigit()):
                ids.append(int(key))
            else:
                raise TypeError(f"token ids must be ints (or strings of digits), got {key!r}")
        indices = np.asarray(ids, dtype=np.int64)
        values = np.fromiter((float(v) for v in weights.values()), dtype=np.float32,
                             count=len(weights))
        if len(set(ids)) != len(ids):
            raise ValueError("the same token id appears twice (e.g. 3 and '3')")
        order = np.argsort(indices, kind="stable")
        return cls(indices[order], values[order])


@dataclass(frozen=True, eq=False)
class EncodeOutput:
    """What one encode call returns; a field is ``None`` when it was not requested.

    Attributes:
        dense: ``float32 [n, hidden]`` L2-normalised ``[CLS]`` states.
        sparse: one :class:`SparseVector` per text.
        colbert: one ``float32 [n_tokens_i - 1, colbert_dim]`` array per text (the
            ``<s>`` row dropped, the final ``</s>`` row kept), rows L2-normalised.
        tokens: ``int32 [n]`` tokens each text was encoded with, ``<s>`` and ``</s>``
            included (``None`` when not known).
        truncated: ``bool [n]`` which texts were longer than ``max_length`` and cut.
    """

    dense: NDArray[np.float32] | None = None
    sparse: list[SparseVector] | None = None
    colbert: list[NDArray[np.float32]] | None = None
    tokens: NDArray[np.int32] | None = None
    truncated: NDArray[np.bool_] | None = None

    def __len__(self) -> int:
        for output in (self.dense, self.sparse, self.colbert):
            if output is not None:
                return len(output)
        return 0


@dataclass(frozen=True)
class Hit:
    """One search result.

    Attributes:
        id: The document id.
        score: The fused score the results are ranked by (higher is better).
        scores: Per-mode scores of this document: ``"dense"``, ``"sparse"`` and, when
            ColBERT vectors were used, ``"colbert"``.
        text: The document text (``None`` if it was added without text).
        metadata: The document metadata (a copy).
    """

    id: str
    score: float
    scores: dict[str, float]
    text: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def trusted_sparse(indices: NDArray[np.int64], values: NDArray[np.float32]) -> SparseVector:
    """A :class:`SparseVector` from arrays known to hold its invariants, without checks.

    For the core's own outputs (the encoder, Parquet columns written by us): ids sorted and
    unique, weights float32. Anything from a user goes through the checked constructor.
    """
    return SparseVector._unchecked(indices, values)


def sparse_to_csr(vectors: Sequence[SparseVector], vocab_size: int) -> csr_matrix:
    """Stack sparse vectors into a ``float32 [n, vocab_size]`` scipy CSR matrix.

    Args:
        vectors: The sparse vectors, one per row.
        vocab_size: Number of columns (the tokenizer's vocabulary size).

    Returns:
        A CSR matrix whose row ``i`` holds ``vectors[i]``.

    Raises:
        ValueError: If a token id is negative or not below ``vocab_size``.

    Example:
        >>> m = sparse_to_csr([SparseVector.from_dict({1: 2.0}), SparseVector.from_dict({})], 4)
        >>> m.shape, m.toarray()[0].tolist()
        ((2, 4), [0.0, 2.0, 0.0, 0.0])
    """
    from scipy.sparse import csr_matrix

    lengths = np.fromiter((len(v) for v in vectors), dtype=np.int64, count=len(vectors))
    indptr = np.zeros(len(vectors) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    if len(vectors):
        indices = np.concatenate([v.indices for v in vectors])
        data = np.concatenate([v.values for v in vectors]).astype(np.float32, copy=False)
    else:
        indices, data = np.zeros(0, np.int64), np.zeros(0, np.float32)
    if indices.size and (indices.min() < 0 or indices.max() >= vocab_size):
        raise ValueError(
            f"token ids must lie in [0, {vocab_size}), got ids from {indices.min()} "
            f"to {indices.max()}"
        )
    return csr_matrix((data, indices, indptr), shape=(len(vectors), vocab_size))


class EncodeKeywords(TypedDict, total=False):
    """The keyword arguments of every encode method (a type for ``**options``).

    Attributes:
        max_length: Tokens per text, ``<s>`` and ``</s>`` included; longer texts are
            truncated, with one :class:`~bgem3.TruncationWarning` per call. ``None`` (the
            default) takes the model's ``query_max_length`` for queries and its
            ``document_max_length`` otherwise.
        dense: Compute ``dense``, ``float32 [n, dense_dim]`` (default ``True``).
        sparse: Compute ``sparse``, one :class:`SparseVector` per text (default ``False``).
        colbert: Compute ``colbert``, one ``float32 [n_tokens - 1, colbert_dim]`` per text
            (default ``False``).
        batch_size: Most texts in one forward batch; the token budget also applies
            (default 256).
        show_progress: Show a tqdm bar; ``None`` (the default) shows it for large inputs only.
    """

    max_length: int | None
    dense: bool
    sparse: bool
    colbert: bool
    batch_size: int
    show_progress: bool | None


@runtime_checkable
class Encoder(Protocol):
    """What the index, evaluation, mining and the Arrow/Ray layers need from a model.

    :class:`~bgem3.BGEM3` and :class:`~bgem3.EncodePool` satisfy it, and so can a remote
    client: anything with these attributes and the two encode methods. Nothing here
    imports torch.

    Example:
        >>> import tempfile, bgem3
        >>> from bgem3.testing import build_tiny_checkpoint
        >>> model = bgem3.BGEM3(build_tiny_checkpoint(tempfile.mkdtemp()), device="cpu")
        >>> isinstance(model, Encoder)
        True
    """

    @property
    def name(self) -> str:
        """The checkpoint's hub id or path (recorded by indexes and Parquet files)."""
        ...

    @property
    def fingerprint(self) -> str:
        """Identifies the weights; indexes refuse a model with another one."""
        ...

    @property
    def dense_dim(self) -> int:
        """Width of the dense vectors."""
        ...

    @property
    def colbert_dim(self) -> int | None:
        """Width of the ColBERT vectors (``None`` without heads)."""
        ...

    @property
    def vocab_size(self) -> int:
        """Number of token ids (sparse vectors' ids lie below it)."""
        ...

    @property
    def has_heads(self) -> bool:
        """Whether sparse and ColBERT outputs are available."""
        ...

    @property
    def query_max_length(self) -> int:
        """Tokens a query is truncated at when no ``max_length`` is given."""
        ...

    @property
    def document_max_length(self) -> int:
        """Tokens a document is truncated at when no ``max_length`` is given."""
        ...

    def encode_queries(self, texts: Sequence[str], **options: Unpack[EncodeKeywords]
                       ) -> EncodeOutput:
        """Encode queries (truncated at the model's query length)."""
        ...

    def encode_documents(self, texts: Sequence[str], **options: Unpack[EncodeKeywords]
                         ) -> EncodeOutput:
        """Encode documents (truncated at the model's document length)."""
        ...
