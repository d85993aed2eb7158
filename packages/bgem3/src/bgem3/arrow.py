"""BGE-M3 outputs as Arrow tables and Parquet files, in one fixed schema.

The schema depends only on the model and the options, never on a batch's content, so every
file written by any path (this module, ``bgem3.ray``, ``bgem3 encode --out x.parquet``, or a
Spark job using :func:`to_arrow`) reads back with plain ``pyarrow.parquet.read_table``:

==================  ===================================================  ==========================
column              type                                                 content
==================  ===================================================  ==========================
``id``              ``string`` (not null)                                document id
``text``            ``string``                                           the text (when kept)
``dense``           ``fixed_size_list<float32 | float16, dense_dim>``    normalised ``[CLS]``
``sparse_indices``  ``list<int32>``                                       token ids, increasing
``sparse_values``   ``list<float32>``                                    their lexical weights
``colbert``         ``list<fixed_size_list<float32 | float16, dim>>``    one vector per token
``tokens``          ``int32``                                            tokens encoded
``truncated``       ``bool``                                             cut at ``max_length``
==================  ===================================================  ==========================

Outputs that were not computed are absent. The schema metadata key ``bgem3`` holds JSON
naming the model (name and fingerprint), the dimensions, the dtypes and the maximum length;
readers check it and refuse a mismatch.

Example:
    >>> import tempfile, bgem3, bgem3.arrow
    >>> from bgem3.testing import build_tiny_checkpoint
    >>> model = bgem3.BGEM3(build_tiny_checkpoint(tempfile.mkdtemp()), device="cpu")
    >>> out = model.encode_documents(["a cat", "a dog"], dense=True, sparse=True)
    >>> table = bgem3.arrow.to_arrow(out, ["c", "d"], model=model)
    >>> table.column_names
    ['id', 'dense', 'sparse_indices', 'sparse_values', 'tokens', 'truncated']
    >>> ids, back = bgem3.arrow.from_arrow(table)
    >>> ids, bool((back.dense == out.dense).all())
    (['c', 'd'], True)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bgem3._types import EncodeOutput, Encoder, trusted_sparse

__all__ = [
    "FORMAT",
    "check_model",
    "from_arrow",
    "iter_parquet",
    "parquet_batches",
    "read_metadata",
    "schema",
    "to_arrow",
]

FORMAT = "bgem3.vectors"
"""The ``format`` of the schema metadata under the ``bgem3`` key; readers refuse any other."""
VERSION = 1
META_KEY = b"bgem3"
_FLOATS = ("float32", "float16")


def _pa() -> Any:
    try:
        import pyarrow
    except ImportError as exc:  # pragma: no cover - pyarrow is in every dev environment
        raise ImportError('bgem3.arrow needs pyarrow: pip install "bgem3[arrow]"') from exc
    return pyarrow


def schema(*, dense_dim: int | None, colbert_dim: int | None = None, sparse: bool = True,
           dense_dtype: str = "float32", colbert_dtype: str = "float32", text: bool = False,
           model: str | None = None, fingerprint: str | None = None,
           max_length: int | None = None) -> Any:
    """The Arrow schema of one kind of output (``None`` dims leave that column out).

    Args:
        dense_dim: Width of the dense vectors, or ``None`` without them.
        colbert_dim: Width of the ColBERT vectors, or ``None`` without them.
        sparse: Whether the lexical weights are there.
        dense_dtype: ``"float32"`` or ``"float16"``.
        colbert_dtype: ``"float32"`` or ``"float16"``.
        text: Whether a ``text`` column is there.
        model: Model name for the metadata.
        fingerprint: Model fingerprint for the metadata.
        max_length: Maximum tokens per text, for the metadata.

    Returns:
        A ``pyarrow.Schema`` with the ``bgem3`` metadata.
    """
    pa = _pa()
    for name, dtype in (("dense_dtype", dense_dtype), ("colbert_dtype", colbert_dtype)):
        if dtype not in _FLOATS:
            raise ValueError(f"{name} must be 'float32' or 'float16', got {dtype!r}")
    fields = [pa.field("id", pa.string(), nullable=False)]
    if text:
        fields.append(pa.field("text", pa.string()))
    if dense_dim is not None:
        fields.append(pa.field("dense", pa.list_(pa.from_numpy_dtype(np.dtype(dense_dtype)),
                                                 dense_dim)))
    if sparse:
        fields += [pa.field("sparse_indices", pa.list_(pa.int32())),
                   pa.field("sparse_values", pa.list_(pa.float32()))]
    if colbert_dim is not None:
        fields.append(pa.field("colbert", pa.list_(pa.list_(
            pa.from_numpy_dtype(np.dtype(colbert_dtype)), colbert_dim))))
    fields += [pa.field("tokens", pa.int32()), pa.field("truncated", pa.bool_())]
    meta = {"format": FORMAT, "version": VERSION, "model": model, "fingerprint": fingerprint,
            "dense_dim": dense_dim, "colbert_dim": colbert_dim, "sparse": sparse,
            "dense_dtype": dense_dtype, "colbert_dtype": colbert_dtype,
            "max_length": max_length}
    return pa.schema(fields, metadata={META_KEY: json.dumps(meta).encode()})


def _offsets(lengths: NDArray[np.int64]) -> NDArray[np.int32]:
    offsets = np.zeros(lengths.shape[0] + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] > np.iinfo(np.int32).max:
        raise ValueError("one Arrow table cannot hold more than 2**31 values in a list "
                         "column: convert fewer texts at a time")
    return offsets.astype(np.int32)


def _ids(ids: Sequence[str]) -> list[str]:
    """``ids`` as strings, refusing a null, empty or repeated one by its row."""
    raw = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
    id_list = []
    for row, value in enumerate(raw):
        if value is None or (isinstance(value, float) and np.isnan(value)):
            raise ValueError(f"row {row}: the id is null ({value!r}); every row needs a "
                             "unique, non-empty id")
        id_list.append(str(value))
    if len(set(id_list)) != len(id_list) or not all(id_list):
        first: dict[str, int] = {}
        for row, value in enumerate(id_list):
            if not value:
                raise ValueError(f"row {row}: the id is empty; ids must be unique and "
                                 "non-empty")
            if first.setdefault(value, row) != row:
                raise ValueError(f"rows {first[value]} and {row} have the same id {value!r}; "
                                 "ids must be unique and non-empty")
    return id_list


def _check_finite(stored: NDArray[Any], offsets: NDArray[np.int32] | None, ids: list[str],
                  column: str, dtype: str) -> None:
    """Refuse NaN or infinite values as stored, naming the first row that holds one.

    Args:
        stored: ``[rows, dim]`` one vector per row (``offsets`` is ``None``), or
            ``[items, ...]`` the items of all rows, row ``r`` at ``offsets[r]:offsets[r + 1]``.
        offsets: Where each row's items start, or ``None``.
        ids: The rows' ids.
        column: The column, for the message.
        dtype: The storage dtype, for the message.
    """
    finite = np.isfinite(stored)
    if finite.all():
        return
    bad = int(np.argmin(finite.reshape(finite.shape[0], -1).all(axis=1)))
    row = bad if offsets is None else int(np.searchsorted(offsets, bad, side="right")) - 1
    overflow = (" (stored as float16, whose largest value is 65504: larger ones become "
                "infinite)" if dtype == "float16" else "")
    raise ValueError(f"row {row} (id {ids[row]!r}): its {column} vector holds NaN or infinite "
                     f"values{overflow}; they cannot be read back or searched, so they are "
                     "not written: check the encoder's outputs")


def to_arrow(output: EncodeOutput, ids: Sequence[str], *, texts: Sequence[str] | None = None,
             model: Encoder | None = None, dense_dtype: str = "float32",
             colbert_dtype: str = "float32",
             max_length: int | None = None) -> Any:
    """An Arrow table of ``output`` in the fixed schema (see the module docstring).

    Args:
        output: What an ``encode_*`` call returned.
        ids: One id per text (required: distributed engines do not keep row order).
        texts: The texts, to keep them in a ``text`` column.
        model: The model that encoded them (a :class:`~bgem3.BGEM3` or any
            :class:`~bgem3._types.Encoder`), named in the metadata.
        dense_dtype: Storage of the dense vectors (``float32`` keeps them exactly).
        colbert_dtype: Storage of the ColBERT vectors (``float16`` halves the bytes; the
            embedded index stores them so).
        max_length: The ``max_length`` used, for the metadata (default: the model's
            ``document_max_length``, where it has one).

    Returns:
        A ``pyarrow.Table``.

    Raises:
        ValueError: Ids or texts of the wrong count; a null (``None`` or NaN), empty or
            duplicate id; NaN or infinite values in a vector (none can be read back). The
            error names the row.
    """
    pa = _pa()
    n = len(output)
    id_list = _ids(ids)
    if len(id_list) != n:
        raise ValueError(f"got {n} outputs but {len(id_list)} ids")
    if texts is not None and len(texts) != n:
        raise ValueError(f"got {n} outputs but {len(texts)} texts")
    dense_dim = None if output.dense is None else int(np.shape(output.dense)[1])
    colbert_dim = None
    if output.colbert is not None:
        widths = {int(np.shape(a)[1]) for a in output.colbert}
        if len(widths) > 1:
            raise ValueError(f"ColBERT arrays of different widths: {sorted(widths)}")
        colbert_dim = widths.pop() if widths else int(
            (None if model is None else model.colbert_dim) or 0)
    if max_length is None and model is not None:
        max_length = int(model.document_max_length)
    target = schema(
        dense_dim=dense_dim, colbert_dim=colbert_dim, sparse=output.sparse is not None,
        dense_dtype=dense_dtype, colbert_dtype=colbert_dtype, text=texts is not None,
        model=None if model is None else str(model.name),
        fingerprint=None if model is None else str(model.fingerprint),
        max_length=max_length)
    columns: dict[str, Any] = {"id": pa.array(id_list, pa.string())}
    if texts is not None:
        columns["text"] = pa.array(list(texts), pa.string())
    if output.dense is not None and dense_dim is not None:
        with np.errstate(over="ignore"):  # an overflow to float16 is refused just below
            stored = np.ascontiguousarray(output.dense, dtype=dense_dtype)
        _check_finite(stored, None, id_list, "dense", dense_dtype)
        columns["dense"] = pa.FixedSizeListArray.from_arrays(pa.array(stored.reshape(-1)),
                                                             dense_dim)
    if output.sparse is not None:
        lengths = np.fromiter((len(v) for v in output.sparse), np.int64, n)
        sparse_offsets = _offsets(lengths)
        offsets = pa.array(sparse_offsets)
        indices = (np.concatenate([v.indices for v in output.sparse]) if n
                   else np.zeros(0, np.int64)).astype(np.int32)
        values = (np.concatenate([v.values for v in output.sparse]) if n
                  else np.zeros(0, np.float32)).astype(np.float32)
        _check_finite(values, sparse_offsets, id_list, "sparse", "float32")
        columns["sparse_indices"] = pa.ListArray.from_arrays(offsets, pa.array(indices))
        columns["sparse_values"] = pa.ListArray.from_arrays(offsets, pa.array(values))
    if output.colbert is not None and colbert_dim is not None:
        lengths = np.fromiter((np.shape(a)[0] for a in output.colbert), np.int64, n)
        with np.errstate(over="ignore"):  # as for the dense vectors
            packed = (np.concatenate([np.asarray(a, dtype=colbert_dtype)
                                      for a in output.colbert])
                      if n else np.zeros((0, colbert_dim), colbert_dtype))
        row_offsets = _offsets(lengths)
        _check_finite(packed, row_offsets, id_list, "colbert", colbert_dtype)
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(packed.reshape(-1)), colbert_dim)
        columns["colbert"] = pa.ListArray.from_arrays(pa.array(row_offsets), vectors)
    tokens = output.tokens
    columns["tokens"] = (pa.nulls(n, pa.int32()) if tokens is None
                         else pa.array(np.asarray(tokens, np.int32), pa.int32()))
    truncated = output.truncated
    columns["truncated"] = (pa.nulls(n, pa.bool_()) if truncated is None
                            else pa.array(np.asarray(truncated, np.bool_)))
    return pa.Table.from_arrays([columns[f.name] for f in target], schema=target)


def read_metadata(arrow_schema: Any) -> dict[str, Any]:
    """The ``bgem3`` metadata of a schema.

    A schema without it (engines such as Spark drop schema metadata when they write
    Parquet) is accepted when its columns have the schema's types: the dimensions and
    dtypes are read from the column types, and the model is unknown (``None``).

    Raises:
        ValueError: Neither bgem3 metadata nor bgem3's column types, or a newer version.
    """
    raw = (arrow_schema.metadata or {}).get(META_KEY)
    try:
        meta = json.loads(raw) if raw is not None else None
    except (ValueError, UnicodeDecodeError):
        meta = None
    if meta is None:
        meta = _infer_metadata(arrow_schema)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError("not a bgem3 vectors table (no 'bgem3' schema metadata, and not "
                         "bgem3's column types)")
    if meta.get("version") != VERSION:
        raise ValueError(f"bgem3 vectors format version {meta.get('version')!r} is not "
                         f"supported (this bgem3 reads version {VERSION})")
    return meta


def _infer_metadata(arrow_schema: Any) -> dict[str, Any] | None:
    """Metadata read off the column types of a schema that lost its ``bgem3`` metadata."""
    pa = _pa()
    names = arrow_schema.names
    if "id" not in names or "tokens" not in names or "truncated" not in names:
        return None
    meta: dict[str, Any] = {"format": FORMAT, "version": VERSION, "model": None,
                            "fingerprint": None, "dense_dim": None, "colbert_dim": None,
                            "sparse": "sparse_indices" in names, "dense_dtype": "float32",
                            "colbert_dtype": "float32", "max_length": None}
    if "dense" in names:
        kind = arrow_schema.field("dense").type
        if not pa.types.is_fixed_size_list(kind):
            return None
        meta["dense_dim"], meta["dense_dtype"] = kind.list_size, str(kind.value_type)
    if "colbert" in names:
        kind = arrow_schema.field("colbert").type
        inner = getattr(kind, "value_type", None)
        if inner is None or not pa.types.is_fixed_size_list(inner):
            return None
        meta["colbert_dim"], meta["colbert_dtype"] = inner.list_size, str(inner.value_type)
    meta["dense_dtype"] = {"float": "float32", "halffloat": "float16"}.get(
        meta["dense_dtype"], meta["dense_dtype"])
    meta["colbert_dtype"] = {"float": "float32", "halffloat": "float16"}.get(
        meta["colbert_dtype"], meta["colbert_dtype"])
    return meta


def from_arrow(table: Any) -> tuple[list[str], EncodeOutput]:
    """Ids and outputs of a table (or record batch) in the fixed schema; ``to_arrow``'s inverse.

    Vectors come back as ``float32`` (from ``float16`` storage exactly as stored).

    Raises:
        ValueError: Not a bgem3 table, or content that breaks the schema's rules (nulls,
            token ids not increasing, non-finite values, widths that differ).
    """
    pa = _pa()
    meta = read_metadata(table.schema)
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    table = table.combine_chunks()
    n = table.num_rows

    def column(name: str) -> Any:
        array = table.column(name)
        array = array.chunk(0) if array.num_chunks else pa.array([], array.type)
        if array.null_count:
            raise ValueError(f"column {name!r} has {array.null_count} null value(s)")
        return array

    ids = column("id").to_pylist()
    dense = sparse = colbert = None
    if "dense" in table.column_names:
        values = column("dense").flatten().to_numpy(zero_copy_only=False)
        dense = values.astype(np.float32).reshape(n, int(meta["dense_dim"]))
        if not np.isfinite(dense).all():
            raise ValueError("column 'dense' holds NaN or infinite values")
    if "sparse_indices" in table.column_names:
        indices_col, values_col = column("sparse_indices"), column("sparse_values")
        offsets = indices_col.offsets.to_numpy()
        offsets = offsets - offsets[0]
        values_offsets = values_col.offsets.to_numpy()
        if not np.array_equal(offsets, values_offsets - values_offsets[0]):
            raise ValueError("sparse_indices and sparse_values differ in their lengths")
        indices = indices_col.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
        weights = values_col.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        starts = np.zeros(indices.shape[0], dtype=np.bool_)
        starts[offsets[:-1][offsets[:-1] < indices.shape[0]]] = True
        steps = np.diff(indices)
        if indices.size and (indices.min() < 0 or (steps[~starts[1:]] <= 0).any()):
            raise ValueError("sparse token ids must be non-negative and increasing per row")
        if not np.isfinite(weights).all():
            raise ValueError("column 'sparse_values' holds NaN or infinite values")
        bounds = offsets[1:-1]
        sparse = [trusted_sparse(i, v) for i, v in  # (np.split of 0 rows gives 1 piece)
                  zip(np.split(indices, bounds), np.split(weights, bounds), strict=True)
                  ] if n else []
    if "colbert" in table.column_names:
        rows = column("colbert")
        width = int(meta["colbert_dim"])
        flat = rows.flatten().flatten().to_numpy(zero_copy_only=False)
        vectors = flat.astype(np.float32).reshape(-1, width)
        if not np.isfinite(vectors).all():
            raise ValueError("column 'colbert' holds NaN or infinite values")
        offsets = rows.offsets.to_numpy()
        colbert = np.split(vectors, offsets[1:-1] - offsets[0]) if n else []
    tokens = table.column("tokens").to_numpy(zero_copy_only=False) \
        if table.column("tokens").null_count == 0 else None
    truncated = table.column("truncated").to_numpy(zero_copy_only=False) \
        if table.column("truncated").null_count == 0 else None
    return ids, EncodeOutput(
        dense=dense, sparse=sparse, colbert=colbert,
        tokens=None if tokens is None else tokens.astype(np.int32),
        truncated=None if truncated is None else truncated.astype(np.bool_))


def check_model(meta: dict[str, Any], model: Encoder, *, colbert: bool) -> None:
    """Refuse vectors made by another model, or missing what an index needs.

    Raises:
        ValueError: A different fingerprint or width, or a missing output.
    """
    if meta.get("fingerprint") not in (None, model.fingerprint):
        raise ValueError(f"these vectors were made by {meta.get('model')!r} (fingerprint "
                         f"{meta.get('fingerprint')}), not by {model.name!r} "
                         f"({model.fingerprint}); encode them again with this model")
    if meta.get("dense_dim") != model.dense_dim or not meta.get("sparse"):
        raise ValueError("an index needs dense vectors of the model's width and lexical "
                         "weights; these vectors lack them")
    if colbert and meta.get("colbert_dim") != model.colbert_dim:
        raise ValueError("this index stores ColBERT vectors, and these vectors have none of "
                         "the model's width (encode with colbert=True, or build the index with "
                         "store_colbert=False)")


def iter_parquet(path: str | os.PathLike[str], batch_rows: int = 8192,
                 columns: Sequence[str] | None = None
                 ) -> Iterator[tuple[Path, Any, dict[str, Any]]]:
    """``(file, record batch, metadata)`` of a Parquet file or a directory of them, streamed.

    Files of a directory are read in name order (``*.parquet``, recursively); no more than
    ``batch_rows`` rows are in memory at a time. ``columns`` (default: all) are the only
    ones read; those a file lacks are skipped.

    Raises:
        FileNotFoundError: No such file or directory, or a directory without Parquet files.
        ValueError: A file that is not Parquet or not written by bgem3 (the error names it).
    """
    import pyarrow.parquet as pq

    for file, meta in _parquet_files(path):
        reader = pq.ParquetFile(file)
        names = None if columns is None else [
            c for c in reader.schema_arrow.names if c in set(columns)]
        for batch in reader.iter_batches(batch_size=batch_rows, columns=names):
            yield file, batch, meta


def parquet_batches(path: str | os.PathLike[str], model: Encoder, *, colbert: bool,
                    text_column: str | None = "text",
                    metadata_columns: Sequence[str] = (), batch_rows: int = 8192
                    ) -> Iterator[tuple[list[str], list[str] | None, list[dict[str, Any]],
                                        EncodeOutput]]:
    """``(ids, texts, metadata, outputs)`` per batch of Parquet vectors, checked for ``model``.

    Every file's metadata is checked before the first batch is returned, so a file of
    another model stops the load before anything is added.

    Raises:
        FileNotFoundError: No such file or directory.
        ValueError: Vectors of another model, missing outputs or columns, bad content
            (the error names the file).
    """
    import pyarrow.parquet as pq

    for file, meta in _parquet_files(path):
        try:
            check_model(meta, model, colbert=colbert)
            names = set(pq.ParquetFile(file).schema_arrow.names)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{file}: {exc}") from exc
        missing = [c for c in metadata_columns if c not in names]
        if missing:
            raise ValueError(f"{file}: no column(s) {missing} for metadata")
    # only the columns used: decoding a ColBERT column costs far more than the rest
    wanted = ["id", "dense", "sparse_indices", "sparse_values", "tokens", "truncated",
              *(["colbert"] if colbert else []), *([text_column] if text_column else []),
              *metadata_columns]
    for file, batch, _ in iter_parquet(path, batch_rows, columns=wanted):
        try:
            ids, output = from_arrow(batch)
        except ValueError as exc:
            raise ValueError(f"{file}: {exc}") from exc
        names = batch.schema.names
        texts = (batch.column(names.index(text_column)).to_pylist()
                 if text_column and text_column in names else None)
        columns = {c: batch.column(names.index(c)).to_pylist() for c in metadata_columns}
        metadata = [{c: columns[c][i] for c in metadata_columns} for i in range(len(ids))]
        yield ids, texts, metadata, output


def _parquet_files(path: str | os.PathLike[str]) -> Iterator[tuple[Path, dict[str, Any]]]:
    import pyarrow.parquet as pq

    root = Path(path)
    if root.is_dir():
        files = sorted(p for p in root.rglob("*.parquet") if p.is_file())
        if not files:
            raise FileNotFoundError(f"{root}: no .parquet files in this directory")
    elif root.is_file():
        files = [root]
    else:
        raise FileNotFoundError(f"{root}: no such file or directory")
    for file in files:
        try:
            yield file, read_metadata(pq.ParquetFile(file).schema_arrow)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{file}: {exc}") from exc
