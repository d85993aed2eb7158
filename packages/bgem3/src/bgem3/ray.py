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

``serve_app`` is the ``bgem3 serve`` app as a Ray Serve application: each replica loads the
model and builds :func:`bgem3.server.create_app` around it, so the routes, errors, limits,
API key and cross-request batching are those of ``bgem3 serve``. Install with
``pip install "bgem3[server]" "ray[serve]>=2.51"``. Example (tested in
``tests/server/test_ray_serve.py``)::

    from ray import serve
    import bgem3.ray
    from bgem3.server import ServerSettings
    serve.start(http_options={"host": "0.0.0.0", "port": 8000})  # Ray's default: 127.0.0.1
    serve.run(bgem3.ray.serve_app("BAAI/bge-m3", num_replicas=2,
                                  ray_actor_options={"num_gpus": 1},
                                  settings=ServerSettings(api_key="...")),
              name="bgem3", route_prefix="/")
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from bgem3._inputs import positive_int
from bgem3._optional import require
from bgem3.checkpoint import DEFAULT_MODEL

if TYPE_CHECKING:
    from ray.serve import Application

    from bgem3.server.settings import ServerSettings

__all__ = ["encode_dataset", "serve_app"]


def _ray() -> Any:
    require("ray.data", "ray", "bgem3.ray", "Ray Data")
    return require("ray", "ray", "bgem3.ray", "Ray Data")


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
        ids = _batch_ids(batch.column(self.id_column).to_pylist(), texts, self.id_column)
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


def _batch_ids(values: list[Any], texts: list[Any], column: str) -> list[str]:
    """The ids of one batch as strings; a null one is an error naming its row by its text.

    (Ray has no row numbers. A repeated id is refused by ``to_arrow``, naming it.)
    """
    for value, text in zip(values, texts, strict=True):
        if value is None:
            raise ValueError(f"a row has a null id (column {column!r}; its text begins "
                             f"{str(text)[:60]!r}): every row needs a unique id")
    return [str(value) for value in values]


def _check_ids(dataset: Any, id_column: str, text_column: str) -> None:
    """Refuse null or repeated ids anywhere in ``dataset``: a group-by on the id column.

    Each actor call sees only its own rows, so a repeat across calls needs this pass.
    """
    from ray.data.aggregate import Count

    count = f"{id_column} rows"
    counts = dataset.select_columns([id_column]).groupby(id_column).aggregate(
        Count(alias_name=count))
    bad = counts.map_batches(_null_or_repeated, batch_format="pyarrow",
                             fn_kwargs={"column": id_column, "count": count}).take(3)
    null = next((row[count] for row in bad if row[id_column] is None), 0)
    if null:
        example = dataset.map_batches(_null_or_repeated, batch_format="pyarrow",
                                      fn_kwargs={"column": id_column}).take(1)
        text = str(example[0][text_column])[:60] if example else ""
        raise ValueError(f"{null} row(s) have a null id in column {id_column!r} (one has the "
                         f"text {text!r}): every row needs a unique id")
    if bad:
        repeated = ", ".join(f"{row[id_column]!r} ({row[count]} rows)" for row in bad)
        raise ValueError(f"ids in column {id_column!r} must be unique; repeated: {repeated}")


def _null_or_repeated(batch: Any, column: str, count: str | None = None) -> Any:
    """The rows of a ``pyarrow.Table`` whose id is null, or (with ``count``) counted twice."""
    import pyarrow.compute as pc

    keep = pc.is_null(batch.column(column))
    if count is not None:
        keep = pc.or_(keep, pc.greater(batch.column(count), 1))
    return batch.filter(keep)


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
    check_ids: bool = True,
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
        check_ids: Check here that no id is null or repeated anywhere in the dataset (a
            group-by over the id column: it reads that column once, before any encoding).
            With ``False``, only the rows of one actor call are checked against each other
            (a null id always fails there).

    Returns:
        A ``ray.data.Dataset`` of Arrow tables in :mod:`bgem3.arrow`'s schema.

    Raises:
        ImportError: Ray is not installed (with the install command).
        CheckpointNotFoundError: The model path or hub id does not exist.
        ValueError: Bad options, a missing text or id column, or a null or repeated id
            (naming it, or the text of a row without one).
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
    if check_ids:
        _check_ids(dataset, id_column, text_column)
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


_SERVE_INSTALL = 'pip install "bgem3[ray-serve]"'
# set by serve_app's own arguments, so not accepted in deployment_options
_OWN_OPTIONS = frozenset({"num_replicas", "ray_actor_options", "max_ongoing_requests"})


def _serve() -> Any:
    try:
        from ray import serve
    except ImportError as exc:
        raise ImportError(f"bgem3.ray.serve_app needs Ray Serve: {_SERVE_INSTALL}") from exc
    try:
        import bgem3.server.app  # noqa: F401  (FastAPI and prometheus-client, here and in replicas)
    except ImportError as exc:
        raise ImportError(f"bgem3.ray.serve_app needs the server extra: {_SERVE_INSTALL}"
                          ) from exc
    return serve


def _app_builder(model: str, settings: ServerSettings | None,
                 model_options: dict[str, Any]) -> Callable[[], Any]:
    """The function each replica calls once, at start, for its ASGI app.

    Ray Serve calls an ingress builder without arguments and runs the app's lifespan
    afterwards (that starts the batching thread); a closure carries the arguments.
    """

    def build_bgem3_app() -> Any:
        from bgem3.encoder import BGEM3
        from bgem3.server.app import create_app

        return create_app(BGEM3(model, **model_options), settings)

    return build_bgem3_app


def serve_app(
    model: str | os.PathLike[str] = DEFAULT_MODEL,
    *,
    num_replicas: int | Literal["auto"] = 1,
    ray_actor_options: Mapping[str, Any] | None = None,
    settings: ServerSettings | None = None,
    max_ongoing_requests: int | None = None,
    deployment_options: Mapping[str, Any] | None = None,
    **model_options: Any,
) -> Application:
    """The ``bgem3 serve`` app as a Ray Serve application (FastAPI ingress), one model a replica.

    Each replica loads ``BGEM3(model, **model_options)`` once and serves
    ``create_app(model, settings)``: the same routes, errors, API key, limits and batching
    across requests as ``bgem3 serve``; its batching thread starts and stops with the
    app's lifespan, which Ray Serve runs in the replica. Ray's proxy spreads requests over
    the replicas; run it with ``serve.run(app, name=..., route_prefix="/")``.

    Args:
        model: Hub id or checkpoint directory. A directory that exists here is checked
            here and passed on as an absolute path; anything else is resolved in the
            replicas (a hub id, or a path that exists on the worker nodes only).
        num_replicas: Replicas (each loads the model), or ``"auto"`` to autoscale (with
            ``deployment_options={"autoscaling_config": ...}``).
        ray_actor_options: Resources per replica, e.g. ``{"num_gpus": 1}`` or
            ``{"num_cpus": 4}`` (Ray's default: one CPU; torch in a replica runs as many
            threads as its ``num_cpus``); also ``runtime_env``.
        settings: The server's limits, API key, CORS and logging (default:
            :class:`~bgem3.server.ServerSettings`); carried to the replicas.
        max_ongoing_requests: Requests Ray lets into one replica at once, where they are
            batched together (default: ``settings.max_queued_requests``; Ray's own default,
            5, would cap each batch at 5 requests). More wait in Ray's proxy, unbounded
            unless ``deployment_options`` sets ``max_queued_requests``.
        deployment_options: Other options of ``ray.serve.deployment`` (``name``,
            ``autoscaling_config``, ``max_queued_requests``, ``health_check_period_s``...).
        **model_options: Passed to :class:`~bgem3.BGEM3` in each replica (``device``,
            ``dtype``, ``dense_only``, ``batch_tokens``, ``backend``, ``revision``...).

    Returns:
        A ``ray.serve.Application`` for ``serve.run``.

    Raises:
        ImportError: Ray Serve, FastAPI or prometheus-client is missing (with the install
            command).
        CheckpointNotFoundError: ``model`` is a local directory that is not a checkpoint.
        TypeError: An option :class:`~bgem3.BGEM3` does not take.
        ValueError: Bad ``num_replicas`` or ``max_ongoing_requests``, or an option in
            ``deployment_options`` that has its own argument here.
    """
    serve = _serve()
    from bgem3.checkpoint import resolve_checkpoint
    from bgem3.encoder import BGEM3
    from bgem3.server.settings import ServerSettings

    if num_replicas != "auto":
        positive_int(num_replicas, "num_replicas")
    settings = settings if settings is not None else ServerSettings()
    if not isinstance(settings, ServerSettings):
        raise TypeError(f"settings must be a ServerSettings, got {type(settings).__name__}")
    ongoing = positive_int(settings.max_queued_requests if max_ongoing_requests is None
                           else max_ongoing_requests, "max_ongoing_requests")
    extra = dict(deployment_options or {})
    clash = sorted(_OWN_OPTIONS.intersection(extra))
    if clash:
        raise ValueError(f"pass {', '.join(clash)} as serve_app's own argument, not in "
                         "deployment_options")
    accepted = set(inspect.signature(BGEM3).parameters) - {"model"}
    unknown = sorted(set(model_options) - accepted)
    if unknown:  # here, not in every replica
        raise TypeError(f"BGEM3 takes no option {', '.join(unknown)}; its options are "
                        f"{', '.join(sorted(accepted))}")
    name = os.fspath(model)
    if os.path.isdir(os.path.expanduser(name)):
        name = os.path.abspath(os.path.expanduser(name))  # replicas run elsewhere
        resolve_checkpoint(name, require_heads=not model_options.get("dense_only", False))
    options: dict[str, Any] = {"name": "BGEM3", **extra, "num_replicas": num_replicas,
                               "max_ongoing_requests": ongoing}
    if ray_actor_options is not None:
        options["ray_actor_options"] = dict(ray_actor_options)
    ingress = serve.ingress(_app_builder(name, settings, dict(model_options)))()
    return serve.deployment(ingress, **options).bind()  # type: ignore[no-any-return]


def __getattr__(name: str) -> object:
    # the actor class was public by name before it became private (a LangChain class shares it)
    if name == "BGEM3Encoder":
        import warnings

        warnings.warn("bgem3.ray.BGEM3Encoder is deprecated and private now; use "
                      "bgem3.ray.encode_dataset", DeprecationWarning, stacklevel=2)
        return _EncodeActor
    raise AttributeError(f"module 'bgem3.ray' has no attribute {name!r}")
