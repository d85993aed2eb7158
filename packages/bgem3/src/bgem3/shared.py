"""What framework integrations share: one model per checkpoint or server, and recent outputs.

The adapters' components run a local :class:`~bgem3.BGEM3` (``model_name=``), a
``bgem3 serve`` server through :class:`~bgem3.remote.RemoteBGEM3` (``base_url=``: no torch
in the process), or any :class:`~bgem3.Encoder` given as ``model=``; :func:`resolve_model`
chooses, and components built alike share one model (:func:`shared_model`,
:func:`shared_remote`). LangChain's and LlamaIndex's vector stores ask for dense and sparse
embeddings of the same texts in two separate calls. BGE-M3 computes both in one forward
pass, so :class:`OutputCache` keeps the dense and sparse outputs of recent texts: the
second call finds them and the model runs once.

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
import os
import sys
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Literal,
    NamedTuple,
    NoReturn,
    SupportsIndex,
    TypeVar,
)

import numpy as np
from numpy.typing import NDArray

from bgem3._inputs import as_texts
from bgem3._types import EncodeOutput, Encoder, SparseVector
from bgem3.server.settings import API_KEY_ENV

if TYPE_CHECKING:
    from bgem3.encoder import BGEM3
    from bgem3.index.embedded import HybridIndex
    from bgem3.index.qdrant import QdrantHybridIndex
    from bgem3.remote import RemoteBGEM3

__all__ = [
    "API_KEY_ENV",
    "LiveIndexMixin",
    "ModelReference",
    "OutputCache",
    "SharedModelMixin",
    "SharedModelPickling",
    "check_query",
    "model_reference",
    "new_index",
    "output_cache",
    "rerank_scores",
    "resolve_model",
    "resolve_reference",
    "shared_model",
    "shared_remote",
    "with_scores",
]


_T = TypeVar("_T")

_models: weakref.WeakValueDictionary[tuple[str, str | None, str | None], BGEM3] = (
    weakref.WeakValueDictionary())
_remotes: weakref.WeakValueDictionary[tuple[str, str | None], RemoteBGEM3] = (
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


def shared_remote(base_url: str, api_key: str | None = None) -> RemoteBGEM3:
    """The :class:`~bgem3.remote.RemoteBGEM3` for ``(base_url, api_key)``, connected once.

    Every caller with the same server and key gets the same client (and so one
    :class:`OutputCache`) while any of them holds it. Nothing here imports torch.

    Args:
        base_url: The ``bgem3 serve`` server, e.g. ``"http://127.0.0.1:8000"``.
        api_key: Its key; ``None``: the ``BGEM3_API_KEY`` environment variable, if set.

    Raises:
        ValueError: ``base_url`` is empty.
        RemoteError: The server cannot be reached.
        PermissionError: It refuses the key.
    """
    from bgem3.remote import RemoteBGEM3

    if not isinstance(base_url, str) or not base_url.strip():
        raise ValueError(f"base_url must be a server's URL such as 'http://127.0.0.1:8000', "
                         f"got {base_url!r}")
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
    registry_key = (base_url.rstrip("/"), key)
    with _lock:
        remote = _remotes.get(registry_key)
        if remote is None:
            remote = RemoteBGEM3(base_url, api_key=key)
            _remotes[registry_key] = remote
        return remote


class ModelReference(NamedTuple):
    """What a framework object pickles instead of its model: the fields that find it again.

    A local model is named by ``model_name``, ``device`` and ``dtype``; a server by
    ``base_url`` (``model_name`` is then the server's model, for the record). The key of
    a server is never part of a reference.
    """

    model_name: str
    device: str | None = None
    dtype: str | None = None
    base_url: str | None = None


def _local_class() -> type[BGEM3] | None:
    """:class:`~bgem3.BGEM3` if its module is imported (else no object can be one): no torch."""
    encoder = sys.modules.get("bgem3.encoder")
    return None if encoder is None else encoder.BGEM3


def _remote_class() -> type[RemoteBGEM3]:
    from bgem3.remote import RemoteBGEM3

    return RemoteBGEM3


def model_reference(model: Encoder) -> ModelReference:
    """The :class:`ModelReference` from which :func:`resolve_reference` gives ``model`` back.

    A local :class:`~bgem3.BGEM3`: its key in the registry when it was loaded by
    :func:`shared_model`, else its name, device and dtype (then resolving loads it once
    into the registry); other load options (``batch_tokens``...) are not part of the
    reference. A :class:`~bgem3.remote.RemoteBGEM3`: its ``base_url``.

    Raises:
        TypeError: ``model`` is another kind of encoder, which has no reference.
    """
    if isinstance(model, _remote_class()):
        return ModelReference(model.name, base_url=model.base_url)
    local = _local_class()
    if local is None or not isinstance(model, local):
        raise TypeError(
            f"a {type(model).__name__} cannot be pickled or serialised by reference: only a "
            "bgem3.BGEM3 (by name, device and dtype) or a bgem3.remote.RemoteBGEM3 (by "
            "base_url) can. Build the object with model_name= or base_url=, or pass the "
            "model again instead of pickling")
    with _lock:
        for key, shared in _models.items():
            if shared is model:
                return ModelReference(*key)
    return ModelReference(str(model.name), str(model.device),
                          str(model.dtype).removeprefix("torch."))


def resolve_reference(reference: ModelReference) -> Encoder:
    """The model a :class:`ModelReference` names: what unpickling runs on.

    A local model: :func:`shared_model`. A server: :func:`shared_remote` with the key of
    the ``BGEM3_API_KEY`` environment variable, as references carry no key.

    Raises:
        PermissionError: The server refuses the environment's key (or wants one).
    """
    if reference.base_url is None:
        return shared_model(reference.model_name, device=reference.device,
                            dtype=reference.dtype)
    try:
        return shared_remote(reference.base_url)
    except PermissionError as exc:
        raise PermissionError(
            f"{exc}. A pickled or serialised object names its server ({reference.base_url}) "
            f"but never its key: set {API_KEY_ENV} where it is loaded") from exc


def _secret(value: object) -> str | None:
    """The text of a key given as a ``str`` or a pydantic ``SecretStr`` (``None`` stays)."""
    if value is None:
        return None
    reveal = getattr(value, "get_secret_value", None)
    return str(reveal() if callable(reveal) else value)


def resolve_model(model: Encoder | None = None, model_name: str | None = None, *,
                  device: str | None = None, dtype: str | None = None,
                  base_url: str | None = None, api_key: object = None) -> Encoder:
    """``model`` if given, else the shared client of ``base_url``, else the shared local model.

    Loading a local model imports torch; the other two paths do not.

    Args:
        model: A loaded :class:`~bgem3.BGEM3`, a :class:`~bgem3.remote.RemoteBGEM3` or any
            other :class:`~bgem3.Encoder`.
        model_name: Hub id or checkpoint directory of a local model (ignored when
            ``model`` or ``base_url`` is given).
        device: Device of a local model loaded here.
        dtype: Dtype of a local model loaded here.
        base_url: A ``bgem3 serve`` server: :func:`shared_remote`.
        api_key: The server's key, a ``str`` or a pydantic ``SecretStr`` (``None``: the
            ``BGEM3_API_KEY`` environment variable, if set).

    Raises:
        TypeError: ``model`` is not an encoder.
        ValueError: Neither ``model``, ``base_url`` nor ``model_name`` is given; ``model``
            and ``base_url`` both; ``device`` or ``dtype`` with ``base_url`` (the server's
            own); ``api_key`` without ``base_url``.
        RemoteError: The server cannot be reached.
        PermissionError: The server refuses the key.
    """
    if api_key is not None and base_url is None:
        raise ValueError("api_key= is the key of a server: pass it with base_url=")
    if model is not None:
        if not isinstance(model, Encoder):
            raise TypeError("model must be a bgem3.BGEM3, a bgem3.remote.RemoteBGEM3 or "
                            f"another bgem3.Encoder, got {type(model).__name__}")
        if base_url is not None:
            raise ValueError("pass model= or base_url=, not both")
        return model
    if base_url is not None:
        if device is not None or dtype is not None:
            raise ValueError(f"device={device!r} and dtype={dtype!r} are the server's "
                             "(bgem3 serve --device/--dtype): leave them out with base_url=")
        return shared_remote(base_url, _secret(api_key))
    if not model_name:
        raise ValueError("pass model=<bgem3.BGEM3>, model_name='BAAI/bge-m3' (or a path) or "
                         "base_url='http://host:8000' (a bgem3 serve server)")
    return shared_model(model_name, device=device, dtype=dtype)


class SharedModelPickling:
    """Mixin for the adapters' pydantic classes that hold a model in ``_bgem3``.

    Pickles by reference (:func:`model_reference`: a local model's name, device and dtype,
    never its weights; a server's ``base_url``, never its key): unpickling resolves it
    through :func:`resolve_reference` (a server's key from ``BGEM3_API_KEY``), so objects
    unpickled in one process share one model. A deep copy copies the settings and shares
    the model. Put it before the pydantic base class.
    """

    _bgem3: Any
    model_name: str
    device: str | None
    dtype: str | None
    base_url: str | None
    api_key: Any

    def __getstate__(self) -> dict[Any, Any]:
        """The pydantic state with the model replaced by its reference, without the key."""
        reference = model_reference(self._bgem3)
        clone = self.model_copy(  # type: ignore[attr-defined]
            update={"model": None, "api_key": None, **reference._asdict()})
        clone._bgem3 = None
        state: dict[Any, Any] = super(SharedModelPickling, clone).__getstate__()  # type: ignore[misc]
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        """Restore onto the shared model of the pickled reference."""
        super().__setstate__(state)  # type: ignore[misc]
        if self._bgem3 is None:
            self._bgem3 = resolve_reference(ModelReference(
                self.model_name, self.device, self.dtype, self.base_url))

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Any:
        """A deep copy of the settings that shares the loaded model."""
        memo = {} if memo is None else memo
        memo[id(self._bgem3)] = self._bgem3
        return super().__deepcopy__(memo)  # type: ignore[misc]


class SharedModelMixin(SharedModelPickling):
    """Mixin for the adapters' pydantic model bases: the model, loaded once, and its cache.

    The adapter declares the fields ``model``, ``model_name``, ``device``, ``dtype``,
    ``base_url`` and ``api_key`` and the private attribute ``_bgem3`` in its framework's
    way; this mixin resolves them when the object is built (:func:`resolve_model`: a bad
    name, an unreachable server or a refused key fails at construction), gives the model
    and its shared :class:`OutputCache`, and pickles and deep-copies as
    :class:`SharedModelPickling`. Put it before the pydantic base class.
    """

    model: Any

    def model_post_init(self, context: Any, /) -> None:
        """Load (or reuse) the model now, so that a bad name or server fails at construction."""
        self._bgem3 = resolve_model(self.model, self.model_name, device=self.device,
                                    dtype=self.dtype, base_url=self.base_url,
                                    api_key=self.api_key)
        if self.model is not None or self.base_url is not None:
            self.model_name = self._bgem3.name  # what runs, whatever the default said
        if self.model is not None and isinstance(self.model, _remote_class()):
            self.base_url = self.model.base_url  # a config dump names the server

    @property
    def bgem3(self) -> Encoder:
        """The model this object runs (a :class:`~bgem3.BGEM3`, a server's client...)."""
        model: Encoder = self._bgem3
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
