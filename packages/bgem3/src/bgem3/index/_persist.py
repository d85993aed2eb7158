"""Saving and loading a ``HybridIndex``: ``.npy`` arrays plus JSON, never pickle.

Layout of an index directory::

    INDEX/CURRENT            name of the live version, replaced atomically
    INDEX/v-<hex>/manifest.json
    INDEX/v-<hex>/dense.npy, sparse_*.npy, colbert*.npy, documents.json

A save writes a complete new version directory, flushes it to disk, then points
``CURRENT`` at it with one atomic ``os.replace``, and only then removes the previous
version's files. A save that fails or is killed at any moment leaves ``CURRENT`` naming a
complete version, so the previous index stays loadable.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bgem3.errors import IndexFormatError
from bgem3.index._store import row_ranges

if TYPE_CHECKING:
    from bgem3.index.embedded import HybridIndex

__all__ = ["load_index", "save_index"]

FORMAT = "bgem3.hybrid_index"
FORMAT_VERSION = 1
POINTER = "CURRENT"
ARRAYS = ("dense", "sparse_indptr", "sparse_indices", "sparse_values", "colbert",
          "colbert_offsets")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def save_index(index: HybridIndex, path: str | os.PathLike[str]) -> None:
    """Write ``index`` to the directory ``path`` (created if missing), atomically."""
    root = Path(path)
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root} exists and is not a directory")
    if root.is_dir() and any(root.iterdir()) and not (root / POINTER).is_file():
        raise FileExistsError(f"{root} is a non-empty directory that is not a bgem3 index; "
                              "refusing to write into it")
    snap = index.snapshot()
    rows = np.flatnonzero(snap.alive)
    documents = {
        "ids": [snap.ids[r] for r in rows],
        "texts": [snap.texts[r] for r in rows],
        "metadata": [snap.metadata[r] for r in rows],
    }
    try:
        documents_json = json.dumps(documents, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"metadata must be JSON-serialisable to save the index: {exc}") from exc
    csr = snap.sparse.tocsr()[rows]
    arrays: dict[str, np.ndarray] = {
        "dense": snap.dense.take(rows),
        "sparse_indptr": csr.indptr.astype(np.int64),
        "sparse_indices": csr.indices.astype(np.int32),
        "sparse_values": csr.data.astype(np.float32),
    }
    if snap.colbert is not None and snap.colbert_offsets is not None:
        starts, ends = snap.colbert_offsets[rows], snap.colbert_offsets[rows + 1]
        lengths = ends - starts
        arrays["colbert"] = snap.colbert.take(row_ranges(starts, ends))
        arrays["colbert_offsets"] = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": index.model.name,
        "model_fingerprint": index.model.fingerprint,
        "dense_dim": index.dense_dim,
        "colbert_dim": index.colbert_dim,
        "vocab_size": index.vocab_size,
        "store_colbert": index.store_colbert,
        "count": int(rows.size),
        "arrays": {name: {"shape": list(a.shape), "dtype": str(a.dtype)}
                   for name, a in arrays.items()},
    }

    root.mkdir(parents=True, exist_ok=True)
    version = f"v-{uuid.uuid4().hex}"
    target = root / version
    target.mkdir()
    previous = _current_version(root)
    pointer_tmp = root / f".{POINTER}.{uuid.uuid4().hex}"
    try:
        for name, array in arrays.items():
            np.save(target / f"{name}.npy", array, allow_pickle=False)
        (target / "documents.json").write_text(documents_json, encoding="utf-8")
        _write_json(target / "manifest.json", manifest)
        for file in target.iterdir():
            _fsync(file)
        _fsync(target)
        pointer_tmp.write_text(version, encoding="utf-8")
        _fsync(pointer_tmp)
        os.replace(pointer_tmp, root / POINTER)  # the commit point
    except BaseException:
        pointer_tmp.unlink(missing_ok=True)
        _remove_version(target)
        raise
    _fsync(root)
    if previous and previous != version:
        _remove_version(root / previous)


def _current_version(root: Path) -> str | None:
    pointer = root / POINTER
    if not pointer.is_file():
        return None
    name = pointer.read_text(encoding="utf-8").strip()
    return name if name.startswith("v-") and "/" not in name and "\\" not in name else None


def _remove_version(directory: Path) -> None:
    """Delete a superseded version directory: only the files a save writes, then the dir."""
    names = {f"{a}.npy" for a in ARRAYS} | {"documents.json", "manifest.json"}
    for file in directory.iterdir():
        if file.name in names:
            file.unlink()
    with contextlib.suppress(OSError):  # something else lives there: leave it alone
        directory.rmdir()


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checked manifest of the current version of the index at ``path``.

    Raises:
        FileNotFoundError: No directory at ``path``.
        IndexFormatError: Not a bgem3 index, an unreadable manifest, or an unknown version.
    """
    return _current_manifest(Path(path))[1]


def _current_manifest(root: Path) -> tuple[Path, dict[str, Any]]:
    if not root.is_dir():
        raise FileNotFoundError(f"no index directory at {root}")
    version = _current_version(root)
    if version is None:
        raise IndexFormatError(f"{root} is not a bgem3 index (no valid {POINTER} file)")
    directory = root / version
    try:
        manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexFormatError(f"{directory}: unreadable manifest.json ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexFormatError(f"{directory} does not hold a bgem3 hybrid index")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexFormatError(
            f"{directory}: index format version {manifest.get('format_version')!r} is not "
            f"supported (this bgem3 reads version {FORMAT_VERSION})"
        )
    return directory, manifest


def load_index(path: str | os.PathLike[str], model: Any) -> HybridIndex:
    """Read an index written by :func:`save_index` and check it against ``model``."""
    from bgem3.index.embedded import HybridIndex

    root = Path(path)
    directory, manifest = _current_manifest(root)
    if manifest.get("model_fingerprint") != model.fingerprint:
        raise IndexFormatError(
            f"{root} was built with model {manifest.get('model')!r} (fingerprint "
            f"{manifest.get('model_fingerprint')}), not with {model.name!r} (fingerprint "
            f"{model.fingerprint}); encode the documents again with this model"
        )
    arrays = {}
    for name, spec in manifest["arrays"].items():
        try:
            array = np.load(directory / f"{name}.npy", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise IndexFormatError(
                f"{directory}: {name}.npy is missing or corrupt ({exc})"
            ) from exc
        if list(array.shape) != spec["shape"] or str(array.dtype) != spec["dtype"]:
            raise IndexFormatError(
                f"{directory}: {name}.npy has shape {list(array.shape)} {array.dtype}, the "
                f"manifest says {spec['shape']} {spec['dtype']}"
            )
        arrays[name] = array
    try:
        documents = json.loads((directory / "documents.json").read_text(encoding="utf-8"))
        ids, texts, metadata = documents["ids"], documents["texts"], documents["metadata"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise IndexFormatError(f"{directory}: documents.json is missing or corrupt") from exc
    count = manifest["count"]
    if not (len(ids) == len(texts) == len(metadata) == count == arrays["dense"].shape[0]):
        raise IndexFormatError(f"{directory}: document and vector counts disagree")

    index = HybridIndex(model, store_colbert=bool(manifest["store_colbert"]),
                        dense_dtype=str(arrays["dense"].dtype))
    index._restore(ids, texts, metadata, arrays)
    return index
