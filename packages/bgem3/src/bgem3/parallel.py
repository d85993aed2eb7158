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
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bgem3._types import EncodeOutput, SparseVector
from bgem3.errors import TruncationWarning

__all__ = ["EncodePool"]

_STOP = "stop"


def _worker(
    model: str,
    device: str,
    options: dict[str, Any],
    threads: int | None,
    tasks: Any,
    results: Any,
) -> None:
    """Load the model once, then encode chunks until told to stop."""
    import torch

    from bgem3.encoder import BGEM3

    if threads:
        torch.set_num_threads(threads)
    try:
        encoder = BGEM3(model, device=device, **options)
    except Exception as exc:  # any failure is handed to the parent, which re-raises it
        results.put(("failed", -1, exc))
        return
    results.put(("ready", -1, None))
    while True:
        task = tasks.get()
        if task == _STOP:
            return
        chunk_id, (texts, max_length, dense, sparse, colbert, batch_size, mcls, what) = task
        if max_length is None and what == "queries":
            max_length = encoder.query_max_length
        try:
            output, n_truncated, _ = encoder._encode(
                texts, max_length, dense, sparse, colbert, batch_size, False, mcls, what=what
            )
            results.put(("done", chunk_id, (output, n_truncated)))
        except Exception as exc:  # any failure is handed to the parent, which re-raises it
            results.put(("failed", chunk_id, exc))


class EncodePool:
    """Encode with several processes at once: many CPU cores or several GPUs.

    Each worker loads the model on its device; a call splits the texts into chunks of
    similar lengths, hands them out longest first and returns the outputs in input order,
    exactly as :class:`~bgem3.BGEM3` would (the same numbers, up to float rounding).

    Args:
        model: Hub id or checkpoint directory (a loaded :class:`~bgem3.BGEM3` gives its own).
        devices: One entry per worker, e.g. ``["cuda:0", "cuda:1"]`` or ``["cpu"] * 4``.
        threads_per_worker: Torch threads of each worker; ``None`` splits the CPU cores
            evenly between CPU workers and leaves GPU workers at torch's default.
        chunk_size: Texts per chunk handed to a worker.
        **options: Passed to each worker's :class:`~bgem3.BGEM3` (``dtype``, ``batch_tokens``...).

    Example (tested in ``tests/core/test_parallel.py``)::

        with EncodePool("BAAI/bge-m3", devices=["cuda:0", "cuda:1"]) as pool:
            out = pool.encode_documents(corpus, dense=True, sparse=True)
    """

    def __init__(
        self,
        model: Any,
        devices: Sequence[str],
        *,
        threads_per_worker: int | None = None,
        chunk_size: int = 1024,
        **options: Any,
    ) -> None:
        if isinstance(devices, str) or not devices:
            raise ValueError(f"devices must be a non-empty list of device names, got {devices!r}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        if hasattr(model, "path") and hasattr(model, "dtype"):  # a loaded BGEM3
            options = {"dtype": model.dtype, "batch_tokens": model.batch_tokens,
                       "dense_only": not model.has_heads,
                       "backend": getattr(model, "backend", "torch"), **options}
            model = model.path
        self._model = os.fspath(model)
        self._chunk_size = chunk_size
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
                status, _, error = self._next_result()
                if status == "failed":
                    raise error
        except BaseException:
            self.close()
            raise

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
    def encode(
        self,
        texts: Sequence[str],
        *,
        max_length: int | None = None,
        dense: bool = True,
        sparse: bool = False,
        colbert: bool = False,
        batch_size: int = 256,
        mcls: bool = False,
    ) -> EncodeOutput:
        """Like :meth:`bgem3.BGEM3.encode`, spread over the workers."""
        return self._map(texts, max_length, dense, sparse, colbert, batch_size, mcls, "texts")

    def encode_queries(self, texts: Sequence[str], *, max_length: int | None = None,
                       dense: bool = True, sparse: bool = False, colbert: bool = False,
                       batch_size: int = 256) -> EncodeOutput:
        """Like :meth:`bgem3.BGEM3.encode_queries`, spread over the workers."""
        return self._map(texts, max_length, dense, sparse, colbert, batch_size, False,
                         "queries")

    def encode_documents(self, texts: Sequence[str], *, max_length: int | None = None,
                         dense: bool = True, sparse: bool = False, colbert: bool = False,
                         batch_size: int = 256, mcls: bool = False) -> EncodeOutput:
        """Like :meth:`bgem3.BGEM3.encode_documents`, spread over the workers."""
        return self._map(texts, max_length, dense, sparse, colbert, batch_size, mcls,
                         "documents")

    def _map(self, texts: Sequence[str], max_length: int | None, dense: bool,
             sparse: bool, colbert: bool, batch_size: int, mcls: bool,
             what: str) -> EncodeOutput:
        from bgem3.encoder import _as_texts

        if not self._workers:
            raise RuntimeError("the pool is closed")
        items = _as_texts(texts, what)
        # Longest first, in chunks of similar lengths; idle workers take the next chunk.
        order = np.argsort([-len(t) for t in items], kind="stable").astype(np.int64)
        chunks = [order[i : i + self._chunk_size]
                  for i in range(0, len(items), self._chunk_size)] or [order]
        for chunk_id, chunk in enumerate(chunks):
            args = ([items[i] for i in chunk], max_length, dense, sparse, colbert,
                    batch_size, mcls, what)
            self._tasks.put((chunk_id, args))
        parts: dict[int, EncodeOutput] = {}
        n_truncated, failure = 0, None
        for _ in chunks:
            status, chunk_id, payload = self._next_result()
            if status == "failed":
                failure = failure or payload
                continue
            parts[chunk_id], truncated = payload
            n_truncated += truncated
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
