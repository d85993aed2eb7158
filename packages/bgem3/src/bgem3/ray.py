"""Encode a corpus on Ray Data: one model per actor, Arrow tables in the fixed schema out.

``encode_dataset`` adds a ``map_batches`` stage with a callable class: each actor loads the
model once, then encodes the rows Ray gives it with the usual token-budget batching and
returns an Arrow table in :mod:`bgem3.arrow`'s schema. Returning Arrow tables (not numpy
object columns) keeps one schema across all blocks, so ``Dataset.write_parquet`` writes files
that plain ``pyarrow.parquet.read_table`` reads and that ``add_parquet`` loads into both index
backends. Ray does not keep row order: every row needs an id.

Install with ``pip install "bgem3[ray]"``. Example (tested in ``tests/core/test_ray.py``)::

    import ray, bgem3.ray
    ds = ray.data.read_parquet("corpus/")                     # columns: id, text
    vectors = bgem3.ray.encode_dataset(ds, model="BAAI/bge-m3", num_actors=4, num_gpus=1,
                                       dense=True, sparse=True, colbert=False)
    vectors.write_parquet("vectors/")
    bgem3.HybridIndex(bgem3.BGEM3("BAAI/bge-m3")).add_parquet("vectors/")
"""

from __future__ import annotations

import os
from typing import Any

from bgem3._inputs import positive_int

__all__ = ["encode_dataset"]


def _ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ImportError('bgem3.ray needs Ray Data: pip install "bgem3[ray]"') from exc
    return ray


class _EncodeActor:
    """The callable class each Ray actor runs: the model is loaded once, in ``__init__``.

    Args:
        model: Hub id or checkpoint directory.
        text_column: Column with the texts.
        id_column: Column with the ids.
        keep_columns: Input columns copied to the output (``text_column`` keeps the texts).
        options: Encoding and storage options (see :func:`encode_dataset`).
    """

    def __init__(self, model: str, text_column: str, id_column: str,
                 keep_columns: tuple[str, ...], options: dict[str, Any]) -> None:
        import torch

        from bgem3.encoder import BGEM3

        threads = options.get("threads")
        if threads:
            torch.set_num_threads(int(threads))
        self.model = BGEM3(model, device=options.get("device"), dtype=options.get("dtype"),
                           dense_only=not (options["sparse"] or options["colbert"]))
        self.text_column, self.id_column = text_column, id_column
        self.keep_columns = keep_columns
        self.options = options

    def __call__(self, batch: Any) -> Any:
        """Encode one batch (a ``pyarrow.Table``) into a table of the fixed schema."""
        from bgem3.arrow import to_arrow

        options = self.options
        texts = batch.column(self.text_column).to_pylist()
        ids = [str(i) for i in batch.column(self.id_column).to_pylist()]
        out = self.model.encode_documents(
            texts, dense=options["dense"], sparse=options["sparse"],
            colbert=options["colbert"], max_length=options.get("max_length"),
            batch_size=options["rows_per_forward"], show_progress=False)
        table = to_arrow(out, ids, texts=texts if self.text_column in self.keep_columns
                         else None, model=self.model, dense_dtype=options["dense_dtype"],
                         colbert_dtype=options["colbert_dtype"],
                         max_length=options.get("max_length"))
        for name in self.keep_columns:
            if name not in (self.text_column, self.id_column):
                table = table.append_column(name, batch.column(name))
        return table


def encode_dataset(
    dataset: Any,
    model: str | os.PathLike[str],
    *,
    text_column: str = "text",
    id_column: str = "id",
    dense: bool = True,
    sparse: bool = True,
    colbert: bool = False,
    keep_columns: tuple[str, ...] | None = None,
    num_actors: int | tuple[int, int] = 1,
    num_gpus: float = 0,
    num_cpus: float = 1,
    threads: int | None = None,
    rows_per_call: int = 1024,
    rows_per_forward: int = 256,
    tasks_per_actor: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
    max_length: int | None = None,
    dense_dtype: str = "float32",
    colbert_dtype: str = "float16",
) -> Any:
    """Add BGE-M3 encoding to a Ray dataset; returns the dataset of vectors (lazy).

    Args:
        dataset: A ``ray.data.Dataset`` with a text and an id column.
        model: Hub id or checkpoint directory (checked here, in the driver, before any
            actor starts).
        text_column: Column with the texts.
        id_column: Column with the ids (required: Ray does not keep row order).
        dense: Compute dense vectors.
        sparse: Compute lexical weights.
        colbert: Compute ColBERT vectors.
        keep_columns: Input columns copied to the output; default: the text column.
        num_actors: Actors (each loads the model once), or ``(min, max)`` to autoscale.
        num_gpus: GPUs per actor (e.g. 1, or 0.5 to share one).
        num_cpus: CPUs Ray reserves per actor.
        threads: torch threads per actor (default: torch's choice).
        rows_per_call: Rows Ray hands an actor per call.
        rows_per_forward: Most texts in one forward batch (the token budget also applies).
        tasks_per_actor: Calls Ray may queue on one actor (Ray's default: 4). With few
            large blocks, 1 spreads them over all actors instead of queueing them on the
            first one ready.
        device: Device in the actor (default: its GPU if it has one, else the CPU).
        dtype: Compute dtype (default: float16 on CUDA, float32 elsewhere).
        max_length: Tokens per text (default: the model's document length, 8192).
        dense_dtype: Storage of dense vectors: ``"float32"`` or ``"float16"``.
        colbert_dtype: Storage of ColBERT vectors: ``"float16"`` (default) or ``"float32"``.

    Returns:
        A ``ray.data.Dataset`` of Arrow tables in :mod:`bgem3.arrow`'s schema.

    Raises:
        ImportError: Ray is not installed (with the install command).
        CheckpointNotFoundError: The model path or hub id does not exist.
        ValueError: Bad options, or a missing text or id column.
    """
    ray = _ray()
    from bgem3.arrow import schema as arrow_schema
    from bgem3.checkpoint import resolve_checkpoint

    if not (dense or sparse or colbert):
        raise ValueError("request at least one output: dense, sparse or colbert")
    positive_int(rows_per_call, "rows_per_call")
    positive_int(rows_per_forward, "rows_per_forward")
    if tasks_per_actor is not None:
        positive_int(tasks_per_actor, "tasks_per_actor")
    arrow_schema(dense_dim=1, dense_dtype=dense_dtype, colbert_dtype=colbert_dtype)  # checks
    name = os.fspath(model)
    resolve_checkpoint(name, require_heads=sparse or colbert)  # a clear error, here
    if os.path.isdir(name):
        name = os.path.abspath(name)  # actors may run elsewhere
    columns = _columns(dataset)
    keep = (text_column,) if keep_columns is None else tuple(keep_columns)
    for column in (text_column, id_column, *keep):
        if columns is not None and column not in columns:
            raise ValueError(f"the dataset has no column {column!r} (it has {columns})")
    size = num_actors if isinstance(num_actors, tuple) else (num_actors, num_actors)
    options = {"dense": dense, "sparse": sparse, "colbert": colbert, "threads": threads,
               "rows_per_forward": rows_per_forward, "device": device, "dtype": dtype,
               "max_length": max_length, "dense_dtype": dense_dtype,
               "colbert_dtype": colbert_dtype}
    return dataset.map_batches(
        _EncodeActor,
        fn_constructor_kwargs={"model": name, "text_column": text_column,
                               "id_column": id_column, "keep_columns": keep,
                               "options": options},
        batch_size=rows_per_call,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(min_size=size[0], max_size=size[1],
                                           max_tasks_in_flight_per_actor=tasks_per_actor),
        num_gpus=num_gpus,
        num_cpus=num_cpus,
    )


def _columns(dataset: Any) -> list[str] | None:
    """The dataset's column names when Ray knows them without running it, else ``None``."""
    try:
        found = dataset.schema(fetch_if_missing=False)
    except TypeError:  # older signatures
        found = dataset.schema()
    return None if found is None else list(found.names)


def __getattr__(name: str) -> object:
    # the actor class was public by name before it became private (a LangChain class shares it)
    if name == "BGEM3Encoder":
        import warnings

        warnings.warn("bgem3.ray.BGEM3Encoder is deprecated and private now; use "
                      "bgem3.ray.encode_dataset", DeprecationWarning, stacklevel=2)
        return _EncodeActor
    raise AttributeError(f"module 'bgem3.ray' has no attribute {name!r}")
