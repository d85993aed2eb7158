"""What framework integrations share: one loaded model per checkpoint, and recent outputs.

LangChain's and LlamaIndex's vector stores ask for dense and sparse embeddings of the same
texts in two separate calls. BGE-M3 computes both in one forward pass, so
:class:`OutputCache` keeps the dense and sparse outputs of recent texts: the second call
finds them and the model runs once.

Example:
    >>> import tempfile
    >>> from bgem3.testing import build_tiny_checkpoint
    >>> path = str(build_tiny_checkpoint(tempfile.mkdtemp()))
    >>> model = shared_model(path, device="cpu")
    >>> model is shared_model(path, device="cpu")
    True
    >>> cache = output_cache(model)
    >>> dense = cache.documents(["a cat"]).dense   # runs the model
    >>> sparse = cache.documents(["a cat"]).sparse  # found in the cache
    >>> cache.hits, cache.misses
    (1, 1)
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NoReturn, SupportsIndex, TypeVar

import numpy as np
from numpy.typing import NDArray

from bgem3._inputs import as_texts
from bgem3._types import EncodeOutput, Encoder, SparseVector

if TYPE_CHECKING:
    from bgem3.encoder import BGEM3
    from bgem3.index.embedded import HybridIndex
    from bgem3.index.qdrant import QdrantHybridIndex

__all__ = [
    "LiveIndexMixin",
    "OutputCache",
    "SharedModelMixin",
    "SharedModelPickling",
    "check_query",
    "model_reference",
    "new_index",
    "output_cache",
    "rerank_scores",
    "resolve_model",
    "shared_model",
    "with_scores",
]

_T = TypeVar("_T")

_models: weakref.WeakValueDictionary[tuple[str, str | None, str | None], BGEM3] = (
    weakref.WeakValueDictionary())
_caches: weakref.WeakKeyDictionary[Encoder, OutputCache] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def shared_model(model_name: str, *, device: str | None = None, dtype: str | None = None,
                 **kwargs: Any) -> BGEM3:
    """The :class:`~bgem3.BGEM3` for ``(model_name, device, dtype)``, loaded once.

    Every caller with the same three values gets the same object while any of them holds
    it; ``kwargs`` go to :class:`~bgem3.BGEM3` on the first load only.
    """
    from bgem3.encoder import BGEM3

    key = (str(model_name), device, dtype)
    with _lock:  # loading under the lock: two threads never load the same model twice
        model = _models.get(key)
        if model is None:
            model = BGEM3(model_name, device=device, dtype=dtype, **kwargs)
            _models[key] = model
        return model


def model_reference(model: BGEM3) -> tuple[str, str | None, str | None]:
    """``(model_name, device, dtype)`` for which :func:`shared_model` gives this model back.

    What framework objects pickle instead of the model: its key in the registry when it
    was loaded by :func:`shared_model`, else its name, device and dtype (then unpickling
    loads it once into the registry). Other load options (``batch_tokens``...) are not
    part of the reference.
    """
    with _lock:
        for key, shared in _models.items():
            if shared is model:
                return key
    return (str(model.name), str(model.device), str(model.dtype).removeprefix("torch."))


def resolve_model(model: BGEM3 | None = None, model_name: str | None = None, *,
                  device: str | None = None, dtype: str | None = None) -> BGEM3:
    """``model`` if given (a loaded :class:`~bgem3.BGEM3`), else the shared one for the name.

    Raises:
        TypeError: ``model`` is not a ``BGEM3``.
        ValueError: Neither ``model`` nor ``model_name`` is given.
    """
    from bgem3.encoder import BGEM3

    if model is not None:
        if not isinstance(model, BGEM3):
            raise TypeError(f"model must be a bgem3.BGEM3, got {type(model).__name__}")
        return model
    if not model_name:
        raise ValueError("pass model=<bgem3.BGEM3> or model_name='BAAI/bge-m3' (or a path)")
    return shared_model(model_name, device=device, dtype=dtype)


class SharedModelPickling:
    """Mixin for the adapters' pydantic classes that hold a loaded model in ``_bgem3``.

    Pickles by reference (the model's name, device and dtype, never its weights): unpickling
    resolves them through :func:`shared_model`, so objects unpickled in one process share
    one loaded model. A deep copy copies the settings and shares the model. Put it before
    the pydantic base class.
    """

    _bgem3: Any
    model_name: str
    device: str | None
    dtype: str | None

    def __getstate__(self) -> dict[Any, Any]:
        """The pydantic state with the model replaced by its reference."""
        name, device, dtype = model_reference(self._bgem3)
        clone = self.model_copy(  # type: ignore[attr-defined]
            update={"model": None, "model_name": name, "device": device, "dtype": dtype})
        clone._bgem3 = None
        state: dict[Any, Any] = super(SharedModelPickling, clone).__getstate__()  # type: ignore[misc]
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        """Restore onto the shared model of the pickled name, device and dtype."""
        super().__setstate__(state)  # type: ignore[misc]
        if self._bgem3 is None:
            self._bgem3 = resolve_model(None, self.model_name, device=self.device,
                                        dtype=self.dtype)

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Any:
        """A deep copy of the settings that shares the loaded model."""
        memo = {} if memo is None else memo
        memo[id(self._bgem3)] = self._bgem3
        return super().__deepcopy__(memo)  # type: ignore[misc]


class SharedModelMixin(SharedModelPickling):
    """Mixin for the adapters' pydantic model bases: the model, loaded once, and its cache.

    The adapter declares the fields ``model``, ``model_name``, ``device`` and ``dtype`` and
    the private attribute ``_bgem3`` in its framework's way; this mixin resolves them when
    the object is built (a bad name fails at construction), gives the model and its
    shared :class:`OutputCache`, and pickles and deep-copies as
    :class:`SharedModelPickling`. Put it before the pydantic base class.
    """

    model: Any

    def model_post_init(self, context: Any, /) -> None:
        """Load (or reuse) the model now, so that a bad name fails at construction."""
        self._bgem3 = resolve_model(self.model, self.model_name, device=self.device,
                                    dtype=self.dtype)
        if self.model is not None:
            self.model_name = self._bgem3.name

    @property
    def bgem3(self) -> BGEM3:
        """The :class:`~bgem3.BGEM3` this object runs."""
        model: BGEM3 = self._bgem3
        return model

    @property
    def outputs(self) -> OutputCache:
        """The shared cache of this model's recent dense and sparse outputs."""
        return output_cache(self._bgem3)


class LiveIndexMixin:
    """Mixin for the adapters' retrievers, which hold a live index (in memory, or a client).

    Pickling or deep-copying such a retriever raises a ``TypeError`` that says what to do
    instead: share the object, or save the index and build a new retriever over the
    loaded one. A shallow copy shares the index. Put it before the framework's base class.

    Attributes:
        rebuild_with: How the adapter's retriever is built over an index, ``{}`` standing
            for the index: ``"BGEM3HybridRetriever(index={})"``.
    """

    rebuild_with: ClassVar[str]

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        raise TypeError(self._no_copy_message())

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> NoReturn:
        raise TypeError(self._no_copy_message())

    def __copy__(self: _T) -> _T:
        parent = getattr(super(), "__copy__", None)
        if parent is not None:  # the framework's own shallow copy (pydantic's)
            clone: _T = parent()
            return clone
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        return clone

    def _no_copy_message(self) -> str:
        rebuild = self.rebuild_with
        return (f"a {rebuild.partition('(')[0]} cannot be pickled or deep-copied: it holds a "
                "live index. Share the retriever (searches may run in several threads), or "
                "save the index with retriever.index.save(path) and build a new retriever "
                f"with {rebuild.format('HybridIndex.load(path, model)')}; over Qdrant, the "
                "data stays in the collection: "
                f"{rebuild.format('QdrantHybridIndex(model, client, collection)')}")


def output_cache(model: Encoder) -> OutputCache:
    """The :class:`OutputCache` shared by every integration that uses ``model``."""
    with _lock:
        cache = _caches.get(model)
        if cache is None:
            cache = _caches[model] = OutputCache(model)
        return cache


class OutputCache:
    """Dense and sparse outputs of recently encoded texts, for a bounded number of texts.

    Queries and documents, and each maximum length, are kept apart. A call
    encodes only the texts it does not find, all in one batch; ColBERT vectors are large
    and are never kept, so asking for them encodes every text.

    Args:
        model: The model to run: a :class:`~bgem3.BGEM3`, an :class:`~bgem3.EncodePool` or
            any other :class:`~bgem3._types.Encoder`.
        max_items: Texts kept, least recently used dropped first.

    Attributes:
        hits: Texts found in the cache so far.
        misses: Texts encoded so far.
    """

    def __init__(self, model: Encoder, max_items: int = 4096) -> None:
        if max_items < 0:
            raise ValueError(f"max_items must be >= 0, got {max_items}")
        self.model = model
        self.max_items = max_items
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[tuple[str, str], tuple[NDArray[np.float32], SparseVector]] = (
            OrderedDict())
        self._lock = threading.Lock()

    def queries(self, texts: Sequence[str], *, max_length: int | None = None,
                colbert: bool = False, batch_size: int = 256,
                show_progress: bool | None = None) -> EncodeOutput:
        """``encode_queries(texts, dense=True, sparse=True, ...)``, cached."""
        return self._encode("query", texts, max_length, colbert, batch_size, show_progress)

    def documents(self, texts: Sequence[str], *, max_length: int | None = None,
                  colbert: bool = False, batch_size: int = 256,
                  show_progress: bool | None = None) -> EncodeOutput:
        """``encode_documents(texts, dense=True, sparse=True, ...)``, cached."""
        return self._encode("document", texts, max_length, colbert, batch_size, show_progress)

    def clear(self) -> None:
        """Forget every kept output."""
        with self._lock:
            self._items.clear()

    def _encode(self, kind: Literal["query", "document"], texts: Sequence[str],
                max_length: int | None, colbert: bool, batch_size: int,
                show_progress: bool | None) -> EncodeOutput:
        texts = as_texts(texts)  # clear errors for a str, None or non-string items
        model = self.model
        if max_length is None:  # the default length and the same length, given, share entries
            max_length = (model.query_max_length if kind == "query"
                          else model.document_max_length)
        encode = model.encode_queries if kind == "query" else model.encode_documents
        part = f"{kind}:{max_length}"
        if colbert or self.max_items == 0:
            out: EncodeOutput = encode(texts, max_length=max_length, dense=True, sparse=True,
                                       colbert=colbert, batch_size=batch_size,
                                       show_progress=show_progress)
            self._keep(part, texts, out)
            with self._lock:
                self.misses += len(texts)
            return out
        with self._lock:
            found = {t: self._items[(part, t)] for t in texts if (part, t) in self._items}
            for t in found:
                self._items.move_to_end((part, t))
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing:
            out = encode(missing, max_length=max_length, dense=True, sparse=True,
                         batch_size=batch_size, show_progress=show_progress)
            if out.dense is None or out.sparse is None:
                raise RuntimeError("internal error: dense and sparse outputs missing")
            self._keep(part, missing, out)
            found.update(zip(missing, zip(out.dense, out.sparse, strict=True), strict=True))
        with self._lock:
            self.hits += len(texts) - len(missing)
            self.misses += len(missing)
        dense = (np.stack([found[t][0] for t in texts]) if texts
                 else np.zeros((0, self.model.dense_dim), np.float32))
        return EncodeOutput(dense, [found[t][1] for t in texts], None)

    def _keep(self, kind: str, texts: Sequence[str], out: EncodeOutput) -> None:
        if self.max_items == 0 or out.dense is None or out.sparse is None:
            return
        with self._lock:
            for text, dense, sparse in zip(texts, out.dense, out.sparse, strict=True):
                self._items[(kind, text)] = (dense.copy(), sparse)  # not a view of the batch
                self._items.move_to_end((kind, text))
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)


def rerank_scores(
    model: Encoder,
    query: str,
    texts: Sequence[str],
    *,
    weights: Sequence[float] | None = None,
    batch_size: int = 256,
) -> tuple[NDArray[np.float64], dict[str, NDArray[np.float32]]]:
    """Scores of ``texts`` against ``query`` for a reranker: ColBERT MaxSim, or combined.

    One encoding call for the query and one for all the texts.

    Args:
        model: The model (a :class:`~bgem3.BGEM3` or any :class:`~bgem3._types.Encoder`).
        query: The query.
        texts: The candidate texts.
        weights: ``None``: the ColBERT score alone; ``(w_dense, w_sparse, w_colbert)``:
            FlagEmbedding's weighted average of the three.
        batch_size: Encoding batch size.

    Returns:
        The score of each text, and the per-mode scores (``"colbert"``, plus ``"dense"``
        and ``"sparse"`` with ``weights``).
    """
    from bgem3.scoring import colbert_scores, dense_scores, fuse_scores, sparse_scores

    check_query(query)
    if weights is not None:
        fuse_scores(0.0, 0.0, 0.0, weights)  # validates the weights before any encoding
    combined = weights is not None
    q = model.encode_queries([query], dense=combined, sparse=combined, colbert=True)
    d = model.encode_documents(texts, dense=combined, sparse=combined, colbert=True,
                               batch_size=batch_size)
    if q.colbert is None or d.colbert is None:
        raise RuntimeError("internal error: the ColBERT outputs that were requested are missing")
    per_mode = {"colbert": colbert_scores(q.colbert[0], d.colbert)}
    if weights is None:
        return per_mode["colbert"].astype(np.float64), per_mode
    if q.dense is None or d.dense is None or q.sparse is None or d.sparse is None:
        raise RuntimeError("internal error: the outputs that were requested are missing")
    per_mode["dense"] = dense_scores(q.dense, d.dense)[0]
    per_mode["sparse"] = sparse_scores(q.sparse, d.sparse)[0]
    fused = fuse_scores(per_mode["dense"], per_mode["sparse"], per_mode["colbert"], weights)
    return fused, per_mode


def with_scores(metadata: Mapping[str, Any], scores: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a document's ``metadata`` with ``scores`` under their keys, losing nothing.

    The rule of every retriever and reranker of the framework packages: the scores take
    their keys (``relevance_score``, ``dense_score``...), and a value already under one
    of those keys moves to the same key prefixed with ``previous_`` (a value there moves
    on the same way). So a reranker after a retriever keeps the retriever's score as
    ``previous_relevance_score``, and a user's own ``relevance_score`` is never lost.

    Example:
        >>> with_scores({"relevance_score": "high", "lang": "en"}, {"relevance_score": 0.5})
        {'relevance_score': 0.5, 'lang': 'en', 'previous_relevance_score': 'high'}
    """
    out = dict(metadata)
    for key, value in scores.items():
        chain = [key]
        while chain[-1] in out:
            chain.append(f"previous_{chain[-1]}")
        for newer, older in reversed(list(itertools.pairwise(chain))):
            out[older] = out[newer]
        out[key] = value
    return out


def check_query(query: Any) -> str:
    """``query`` if it is a non-empty string; a ``TypeError`` or ``ValueError`` otherwise."""
    if not isinstance(query, str):
        raise TypeError(f"query must be a str, got {type(query).__name__}")
    if not query.strip():
        raise ValueError("query is empty")
    return query


def new_index(model: Encoder, qdrant_client: Any = None, collection: str = "bgem3"
              ) -> HybridIndex | QdrantHybridIndex:
    """An embedded :class:`~bgem3.HybridIndex`, or a Qdrant one when a client is given."""
    if qdrant_client is not None:
        from bgem3.index.qdrant import QdrantHybridIndex

        return QdrantHybridIndex(model, qdrant_client, collection)
    from bgem3.index.embedded import HybridIndex

    return HybridIndex(model)
