"""Opt-in data-parallel encoding: one worker process per device, results in input order.

Nothing here starts on its own: a pool exists only inside ``with EncodePool(...)`` (or
until :meth:`EncodePool.close`), and its processes load their own copy of the model.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from bgem3._inputs import as_texts, positive_int
from bgem3._types import EncodeKeywords, EncodeOutput, Encoder, SparseVector
from bgem3.errors import TruncationWarning

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11

    from bgem3.encoder import BGEM3

__all__ = ["EncodePool"]

_STOP = "stop"
# what a worker reports once its model is loaded: the pool answers these for the model
_DESCRIPTION = ("name", "path", "dense_dim", "colbert_dim", "vocab_size", "has_heads",
                "max_length", "query_max_length", "document_max_length")


def _worker(
    model: str,
    device: str,
    options: dict[str, Any],
    threads: int | None,
    tasks: Any,
    results: Any,
) -> None:
    """Load the model once, describe it, then encode chunks until told to stop."""
    import torch

    from bgem3.encoder import BGEM3

    if threads:
        torch.set_num_threads(threads)
    try:
        encoder = BGEM3(model, device=device, **options)
    except Exception as exc:  # any failure is handed to the parent, which re-raises it
        results.put(("failed", -1, exc))
        return
    results.put(("ready", -1, {name: getattr(encoder, name) for name in _DESCRIPTION}))
    while True:
        task = tasks.get()
        if task == _STOP:
            return
        chunk_id, (method, texts, options) = task
        try:
            with warnings.catch_warnings():  # the parent warns once for the whole call
                warnings.simplefilter("ignore", TruncationWarning)
                output = getattr(encoder, method)(texts, show_progress=False, **options)
            flags = output.truncated
            results.put(("done", chunk_id, (output, 0 if flags is None else int(flags.sum()))))
        except Exception as exc:  # any failure is handed to the parent, which re-raises it
            results.put(("failed", chunk_id, exc))


class EncodePool:
    """Encode with several processes at once: many CPU cores or several GPUs.

    Each worker loads the model on its device; a call splits the texts into chunks of
    similar lengths, hands them out longest first and returns the outputs in input order,
    exactly as :class:`~bgem3.BGEM3` would (the same numbers, up to float rounding).

    A pool is an :class:`~bgem3._types.Encoder`, like the model it runs: it can feed a
    :class:`~bgem3.HybridIndex`, evaluation or mining.

    Args:
        model: Hub id or checkpoint directory (a loaded :class:`~bgem3.BGEM3` gives its own).
        devices: One entry per worker, e.g. ``["cuda:0", "cuda:1"]`` or ``["cpu"] * 4``.
        threads_per_worker: Torch threads of each worker; ``None`` splits the CPU cores
            evenly between CPU workers and leaves GPU workers at torch's default.
        chunk_size: Texts per chunk handed to a worker.
        **options: Passed to each worker's :class:`~bgem3.BGEM3` (``dtype``, ``batch_tokens``...).

    Attributes:
        name: The checkpoint's hub id or path.
        path: The local checkpoint directory.
        dense_dim: Width of the dense vectors.
        colbert_dim: Width of the ColBERT vectors (``None`` without heads).
        vocab_size: Number of token ids.
        has_heads: Whether sparse and ColBERT outputs are available.
        max_length: The model's limit in tokens.
        query_max_length: Default ``max_length`` of :meth:`encode_queries`.
        document_max_length: Default ``max_length`` of :meth:`encode_documents`.

    Raises:
        ValueError: ``devices`` is not a non-empty list, or ``chunk_size`` is not positive.
        TypeError: ``model`` is neither a name, a path nor a loaded ``BGEM3``.

    Example (tested in ``tests/core/test_parallel.py``)::

        with EncodePool("BAAI/bge-m3", devices=["cuda:0", "cuda:1"]) as pool:
            out = pool.encode_documents(corpus, dense=True, sparse=True)
            index = bgem3.HybridIndex(pool)  # a pool encodes for an index too
    """

    name: str
    path: Path
    dense_dim: int
    colbert_dim: int | None
    vocab_size: int
    has_heads: bool
    max_length: int
    query_max_length: int
    document_max_length: int

    def __init__(
        self,
        model: str | os.PathLike[str] | BGEM3,
        devices: Sequence[str],
        *,
        threads_per_worker: int | None = None,
        chunk_size: int = 1024,
        **options: Any,
    ) -> None:
        if isinstance(devices, str) or not devices:
            raise ValueError(f"devices must be a non-empty list of device names, got {devices!r}")
        self._chunk_size = positive_int(chunk_size, "chunk_size")
        self._fingerprint: str | None = None
        if not isinstance(model, (str, os.PathLike)):
            from bgem3.encoder import BGEM3  # torch is loaded already if model is one

            if not isinstance(model, BGEM3):
                raise TypeError("model must be a hub id, a checkpoint directory or a loaded "
                                f"bgem3.BGEM3, got {type(model).__name__}")
            options = {"dtype": model.dtype, "batch_tokens": model.batch_tokens,
                       "dense_only": not model.has_heads, "backend": model.backend, **options}
            model = model.path
        self._model = os.fspath(model)
        n_cpu = sum(str(d).startswith("cpu") for d in devices)
        if threads_per_worker is None and n_cpu:
            threads_per_worker = max(1, (os.cpu_count() or 1) // n_cpu)
        context = mp.get_context("spawn")
        self._tasks: Any = context.Queue()
        self._results: Any = context.Queue()
        self._workers = [
            context.Process(
                target=_worker,
                args=(self._model, str(device), options,
                      threads_per_worker if str(device).startswith("cpu") else None,
                      self._tasks, self._results),
                daemon=True,
            )
            for device in devices
        ]
        for worker in self._workers:
            worker.start()
        try:
            for _ in self._workers:
                status, _, payload = self._next_result()
                if status == "failed":
                    raise payload
                for key, value in payload.items():
                    setattr(self, key, value)
        except BaseException:
            self.close()
            raise

    @property
    def fingerprint(self) -> str:
        """Identifies the checkpoint's weights, as :attr:`bgem3.BGEM3.fingerprint` does."""
        if self._fingerprint is None:
            from bgem3.checkpoint import fingerprint

            self._fingerprint = fingerprint(self.path)
        return self._fingerprint

    def __repr__(self) -> str:
        return f"EncodePool({self.name!r}, workers={len(self._workers)})"

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> EncodePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers and wait for them to exit."""
        for worker in self._workers:
            if worker.is_alive():
                self._tasks.put(_STOP)
        for worker in self._workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.terminate()
        self._workers = []

    def _next_result(self) -> tuple[str, int, Any]:
        while True:
            try:
                result: tuple[str, int, Any] = self._results.get(timeout=1.0)
                return result
            except queue.Empty:
                dead = [w for w in self._workers if not w.is_alive()]
                if dead:
                    raise RuntimeError(
                        f"an encode worker exited unexpectedly (exit code {dead[0].exitcode})"
                    ) from None

    # ------------------------------------------------------------------ encoding
    def encode(self, texts: Sequence[str], *, mcls: bool = False,
               **options: Unpack[EncodeKeywords]) -> EncodeOutput:
        """Like :meth:`bgem3.BGEM3.encode`, spread over the workers.

        ``show_progress`` shows a bar that advances as chunks come back; ``None`` shows it
        when the texts fill more than one chunk.
        """
        return self._map("encode", "texts", texts, {"mcls": mcls, **options})

    def encode_queries(self, texts: Sequence[str], **options: Unpack[EncodeKeywords]
                       ) -> EncodeOutput:
        """Like :meth:`bgem3.BGEM3.encode_queries`, spread over the workers."""
        return self._map("encode_queries", "queries", texts, {**options})

    def encode_documents(self, texts: Sequence[str], *, mcls: bool = False,
                         **options: Unpack[EncodeKeywords]) -> EncodeOutput:
        """Like :meth:`bgem3.BGEM3.encode_documents`, spread over the workers."""
        return self._map("encode_documents", "documents", texts, {"mcls": mcls, **options})

    def _map(self, method: str, what: str, texts: Sequence[str],
             options: dict[str, Any]) -> EncodeOutput:
        """``method`` of the workers' models on ``texts``, chunk by chunk; ``what`` names them.

        ``options`` are that method's keywords; ``show_progress`` is the pool's own bar.
        """
        from tqdm.auto import tqdm

        if not self._workers:
            raise RuntimeError("the pool is closed")
        items = as_texts(texts, what)
        # Longest first, in chunks of similar lengths; idle workers take the next chunk.
        order = np.argsort([-len(t) for t in items], kind="stable").astype(np.int64)
        chunks = [order[i : i + self._chunk_size]
                  for i in range(0, len(items), self._chunk_size)] or [order]
        show_progress = options.pop("show_progress", None)
        for chunk_id, chunk in enumerate(chunks):
            self._tasks.put((chunk_id, (method, [items[i] for i in chunk], options)))
        parts: dict[int, EncodeOutput] = {}
        n_truncated, failure = 0, None
        shown = len(chunks) > 1 if show_progress is None else show_progress
        with tqdm(total=len(items), disable=not shown, unit="text", desc="bgem3") as bar:
            for _ in chunks:
                status, chunk_id, payload = self._next_result()
                if status == "failed":
                    failure = failure or payload
                    continue
                parts[chunk_id], truncated = payload
                n_truncated += truncated
                bar.update(len(chunks[chunk_id]))
        if failure is not None:
            raise failure
        if n_truncated:
            warnings.warn(f"{n_truncated} of {len(items)} texts were truncated",
                          TruncationWarning, stacklevel=3)
        return _reassemble(chunks, [parts[i] for i in range(len(chunks))], len(items))


def _reassemble(chunks: list[NDArray[np.int64]], parts: list[EncodeOutput],
                n: int) -> EncodeOutput:
    """Put chunk outputs back into input order."""
    positions = np.concatenate(chunks)
    inverse = np.empty(n, dtype=np.int64)
    inverse[positions] = np.arange(n)
    first = parts[0]
    dense = None
    if first.dense is not None:
        dense = np.concatenate([p.dense for p in parts if p.dense is not None])[inverse]
    sparse: list[SparseVector] | None = None
    if first.sparse is not None:
        flat_sparse = [v for p in parts for v in (p.sparse or [])]
        sparse = [flat_sparse[i] for i in inverse]
    colbert: list[NDArray[np.float32]] | None = None
    if first.colbert is not None:
        flat_colbert = [a for p in parts for a in (p.colbert or [])]
        colbert = [flat_colbert[i] for i in inverse]
    tokens = truncated = None
    if first.tokens is not None and all(p.tokens is not None for p in parts):
        tokens = np.concatenate([p.tokens for p in parts if p.tokens is not None])[inverse]
    if first.truncated is not None and all(p.truncated is not None for p in parts):
        truncated = np.concatenate([p.truncated for p in parts
                                    if p.truncated is not None])[inverse]
    return EncodeOutput(dense=dense, sparse=sparse, colbert=colbert, tokens=tokens,
                        truncated=truncated)


if TYPE_CHECKING:  # mypy checks that a pool stands wherever an Encoder is expected
    _POOL_IS_AN_ENCODER: type[Encoder] = EncodePool
