"""Saving and loading a ``HybridIndex``: ``.npy`` arrays plus JSON, never pickle.

Layout of an index directory::

    INDEX/CURRENT            name of the live version, replaced atomically
    INDEX/.lock              taken by writers (one save at a time)
    INDEX/v-<hex>/manifest.json
    INDEX/v-<hex>/dense.npy, sparse_*.npy, colbert*.npy, documents.json

A save takes the writer lock, checks the directory (under the lock: a concurrent first
save's half-made directory is an index in the making, not a stranger's directory), writes a
complete new version directory, flushes it to disk,
then points ``CURRENT`` at it with one atomic ``os.replace`` (the commit point), and only
then removes every other version directory (the previous one, and any that a killed save
left behind). Nothing after the commit point can make the save fail. A save that fails or
is killed before it leaves ``CURRENT`` naming a complete version, so the previous index
stays loadable. Loads take no lock: a load that finds its version removed by a concurrent
save reads ``CURRENT`` again and loads the new version.

Everything read is checked before it is used (the manifest's fields, every array's shape,
dtype, ranges and finiteness, the documents against a checksum), and every problem raises
:class:`~bgem3.IndexFormatError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bgem3._files import fsync_path
from bgem3._types import Encoder
from bgem3.errors import IndexFormatError
from bgem3.index.state import IndexState

__all__ = ["SavedIndex", "check_model", "is_saved_index", "read_index", "read_manifest",
           "write_index"]

logger = logging.getLogger(__name__)

FORMAT = "bgem3.hybrid_index"
FORMAT_VERSION = 1
POINTER = "CURRENT"
LOCK = ".lock"
ARRAYS = {"dense": ("float32", "float16"), "sparse_indptr": ("int64",),
          "sparse_indices": ("int32",), "sparse_values": ("float32",),
          "colbert": ("float16",), "colbert_offsets": ("int64",), "dense_hnsw": ("uint8",)}
_VERSION_NAME = re.compile(r"v-[0-9a-f]{32}")



@contextlib.contextmanager
def _writer_lock(root: Path) -> Iterator[None]:
    """Hold the index's exclusive writer lock (one save at a time, across processes)."""
    fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if os.name == "nt":  # pragma: no cover - exercised on Windows only
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_LOCK, 1)  # type: ignore[attr-defined]
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@dataclass(frozen=True)
class SavedIndex:
    """One version of a saved index, read and checked.

    Attributes:
        directory: The version directory it was read from.
        manifest: Its checked manifest.
        state: The documents and their vectors.
        graph: The HNSW graph's bytes (``None`` when none was saved, or when it was
            refused), built with ``manifest["hnsw"]``'s parameters.
        graph_refused: Why a saved graph was refused (its checksum differs from the
            manifest's), or ``None``; the graph can be rebuilt from ``state.dense``.
    """

    directory: Path
    manifest: dict[str, Any]
    state: IndexState
    graph: NDArray[np.uint8] | None
    graph_refused: str | None = None


def _own_entry(name: str) -> bool:
    """Whether a save makes entries of this name in an index directory."""
    return (name in (POINTER, LOCK) or bool(_VERSION_NAME.fullmatch(name))
            or name.startswith(f".{POINTER}."))


def _check_target(root: Path) -> None:
    """Refuse to write into a file or into a directory of something else.

    A directory holding only what saves make (a lock, version directories, pointer
    files: a concurrent or killed first save) is an index in the making.
    """
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root} exists and is not a directory")
    if root.is_dir() and not (root / POINTER).is_file():
        foreign = [entry.name for entry in root.iterdir() if not _own_entry(entry.name)]
        if foreign:
            raise FileExistsError(f"{root} is a non-empty directory that is not a bgem3 index "
                                  f"(it holds {sorted(foreign)[:3]}); refusing to write into it")


def _sha256(array: NDArray[Any]) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).reshape(-1).view(np.uint8).data
                          ).hexdigest()


def write_index(path: str | os.PathLike[str], state: IndexState, header: Mapping[str, Any],
                graph: NDArray[np.uint8] | None = None,
                graph_params: Mapping[str, int] | None = None) -> None:
    """Write ``state`` to the directory ``path`` (created if missing), atomically.

    Args:
        path: The index directory.
        state: What the index holds.
        header: The manifest's description of the index: ``model``,
            ``model_fingerprint``, ``dense_dim``, ``colbert_dim``, ``vocab_size``,
            ``store_colbert``, ``dense_search``, ``ef_search``.
        graph: An HNSW graph over exactly ``state.dense``, as bytes, or ``None``; its
            checksum goes into the manifest, binding it to this version's vectors.
        graph_params: The graph's ``m`` and ``ef_construction``.

    Raises:
        FileExistsError: ``path`` is a file or a non-empty directory of something else.
        TypeError: Metadata that JSON cannot represent.
    """
    root = Path(path)
    _check_target(root)  # before making anything in a stranger's directory; again under the lock
    documents = {"ids": state.ids, "texts": state.texts, "metadata": state.metadata}
    try:
        documents_json = json.dumps(documents, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"metadata must be JSON-serialisable to save the index: {exc}") from exc
    arrays: dict[str, np.ndarray] = {
        "dense": state.dense, "sparse_indptr": state.sparse_indptr,
        "sparse_indices": state.sparse_indices, "sparse_values": state.sparse_values,
    }
    if state.colbert is not None and state.colbert_offsets is not None:
        arrays["colbert"] = state.colbert
        arrays["colbert_offsets"] = state.colbert_offsets
    if graph is not None and graph_params is not None:
        arrays["dense_hnsw"] = graph
    encoded = documents_json.encode("utf-8")
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": header["model"],
        "model_fingerprint": header["model_fingerprint"],
        "fingerprint_version": 2,
        "dense_dim": header["dense_dim"],
        "colbert_dim": header["colbert_dim"],
        "vocab_size": header["vocab_size"],
        "store_colbert": header["store_colbert"],
        "count": len(state.ids),
        "documents_sha256": hashlib.sha256(encoded).hexdigest(),
        "dense_search": header["dense_search"],
        "ef_search": header["ef_search"],
        "hnsw": ({"m": int(graph_params["m"]),
                  "ef_construction": int(graph_params["ef_construction"]),
                  "sha256": _sha256(arrays["dense_hnsw"])}
                 if "dense_hnsw" in arrays and graph_params is not None else None),
        "arrays": {name: {"shape": list(a.shape), "dtype": str(a.dtype)}
                   for name, a in arrays.items()},
    }
    root.mkdir(parents=True, exist_ok=True)
    with _writer_lock(root):
        _check_target(root)
        version = f"v-{uuid.uuid4().hex}"
        target = root / version
        target.mkdir()
        pointer_tmp = root / f".{POINTER}.{uuid.uuid4().hex}"
        try:
            for name, array in arrays.items():
                np.save(target / f"{name}.npy", array, allow_pickle=False)
            (target / "documents.json").write_bytes(encoded)
            (target / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
            for file in target.iterdir():
                fsync_path(file)
            fsync_path(target)
            pointer_tmp.write_text(version, encoding="utf-8")
            fsync_path(pointer_tmp)
            os.replace(pointer_tmp, root / POINTER)  # the commit point
        except BaseException:
            with contextlib.suppress(OSError):
                pointer_tmp.unlink(missing_ok=True)
                _remove_version(target)
            raise
        # committed: from here on nothing may fail the save
        try:
            fsync_path(root)
            _remove_stale(root, keep=version)
        except OSError as exc:  # pragma: no cover - e.g. a read-only parent directory
            logger.warning("index saved to %s; cleaning up old versions failed: %s", root, exc)


def _current_version(root: Path) -> str | None:
    pointer = root / POINTER
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return name if _VERSION_NAME.fullmatch(name) else None


def _remove_version(directory: Path) -> None:
    """Delete a version directory: only the files a save writes, then the directory."""
    names = {f"{a}.npy" for a in ARRAYS} | {"documents.json", "manifest.json"}
    with contextlib.suppress(FileNotFoundError):
        for file in directory.iterdir():
            if file.name in names:
                file.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # something else lives there: leave it alone
        directory.rmdir()


def _remove_stale(root: Path, keep: str) -> None:
    """Remove every version but ``keep`` and leftover pointer files (under the lock)."""
    for entry in root.iterdir():
        if entry.is_dir() and _VERSION_NAME.fullmatch(entry.name) and entry.name != keep:
            _remove_version(entry)
        elif entry.name.startswith(f".{POINTER}.") and entry.is_file():
            entry.unlink(missing_ok=True)


def is_saved_index(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a directory holding a saved bgem3 index (a valid pointer file).

    Cheap (reads one small file); :func:`read_manifest` checks the manifest as well.

    Example:
        >>> import tempfile
        >>> is_saved_index(tempfile.mkdtemp())
        False
    """
    root = Path(path)
    return root.is_dir() and _current_version(root) is not None


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checked manifest of the current version of the index at ``path``.

    Raises:
        FileNotFoundError: No directory at ``path``.
        IndexFormatError: Not a bgem3 index, an unreadable manifest, or an unknown version.
    """
    return _current_manifest(Path(path))[1]


_MANIFEST_TYPES: dict[str, Any] = {
    "model": str, "model_fingerprint": str, "dense_dim": int, "vocab_size": int,
    "store_colbert": bool, "count": int, "arrays": dict,
}


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
    for key, kind in _MANIFEST_TYPES.items():
        value = manifest.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise IndexFormatError(f"{directory}: manifest.json field {key!r} is missing or "
                                   f"not a {kind.__name__}")
    colbert_dim = manifest.get("colbert_dim")
    if colbert_dim is not None and (not isinstance(colbert_dim, int) or colbert_dim < 1):
        raise IndexFormatError(f"{directory}: manifest.json field 'colbert_dim' is invalid")
    return directory, manifest


def _read_arrays(directory: Path, manifest: dict[str, Any]) -> dict[str, np.ndarray]:
    expected = set(ARRAYS) - {"dense_hnsw"}
    if not manifest["store_colbert"]:
        expected -= {"colbert", "colbert_offsets"}
    if manifest.get("hnsw") is not None:
        expected.add("dense_hnsw")
    specs = manifest["arrays"]
    if set(specs) != expected:
        raise IndexFormatError(f"{directory}: the manifest lists arrays {sorted(specs)}, "
                               f"expected {sorted(expected)}")
    arrays = {}
    for name in sorted(expected):
        spec = specs[name]
        if (not isinstance(spec, dict) or not isinstance(spec.get("shape"), list)
                or spec.get("dtype") not in ARRAYS[name]):
            raise IndexFormatError(f"{directory}: the manifest's entry for {name} is invalid")
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
    return arrays


def _read_state(directory: Path, manifest: dict[str, Any]
                ) -> tuple[IndexState, dict[str, np.ndarray]]:
    arrays = _read_arrays(directory, manifest)
    try:
        raw = (directory / "documents.json").read_bytes()
    except OSError as exc:
        raise IndexFormatError(f"{directory}: documents.json is missing ({exc})") from exc
    checksum = manifest.get("documents_sha256")  # absent in indexes saved before it existed
    if checksum is not None and hashlib.sha256(raw).hexdigest() != checksum:
        raise IndexFormatError(f"{directory}: documents.json does not belong to this index "
                               "(its checksum differs from the manifest's)")
    try:
        documents = json.loads(raw.decode("utf-8"))
        ids, texts, metadata = documents["ids"], documents["texts"], documents["metadata"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise IndexFormatError(f"{directory}: documents.json is corrupt ({exc})") from exc
    if not all(isinstance(x, list) for x in (ids, texts, metadata)) \
            or len(ids) != manifest["count"]:
        raise IndexFormatError(f"{directory}: documents.json does not hold "
                               f"{manifest['count']} documents")
    return IndexState(ids=ids, texts=texts, metadata=metadata, dense=arrays["dense"],
                      sparse_indptr=arrays["sparse_indptr"],
                      sparse_indices=arrays["sparse_indices"],
                      sparse_values=arrays["sparse_values"], colbert=arrays.get("colbert"),
                      colbert_offsets=arrays.get("colbert_offsets")), arrays


def check_model(root: Path, manifest: Mapping[str, Any], model: Encoder) -> None:
    """Refuse a model other than the one that built the index (by weights' fingerprint).

    Raises:
        IndexFormatError: Another model, or other dimensions.
    """
    if manifest.get("fingerprint_version") != 2:  # saved by bgem3 0.1: the older fingerprint
        from bgem3.checkpoint import legacy_fingerprint

        path = getattr(model, "path", None)  # a local checkpoint; remote encoders have none
        if path is None:
            raise IndexFormatError(f"{root} was saved by bgem3 0.1 and can only be opened with "
                                   "a bgem3.BGEM3 model loaded from its checkpoint")
        expected = legacy_fingerprint(path)
    else:
        expected = model.fingerprint
    if manifest["model_fingerprint"] != expected:
        raise IndexFormatError(
            f"{root} was built with model {manifest['model']!r} (fingerprint "
            f"{manifest['model_fingerprint']}), not with {model.name!r} (fingerprint "
            f"{model.fingerprint}); encode the documents again with this model"
        )
    if (manifest["dense_dim"], manifest["vocab_size"]) != (model.dense_dim, model.vocab_size):
        raise IndexFormatError(f"{root}: the manifest's dimensions do not match the model")


def read_index(path: str | os.PathLike[str],
               check: Callable[[Path, dict[str, Any]], None] | None = None) -> SavedIndex:
    """Read the current version of the index at ``path``, checking everything read.

    Args:
        path: The index directory.
        check: Called with the root and the manifest before the arrays are read (e.g.
            :func:`check_model`); an :class:`IndexFormatError` it raises is the caller's.

    Raises:
        FileNotFoundError: No directory at ``path``.
        IndexFormatError: Not a bgem3 index, corrupt or truncated files, an unknown format
            version, or whatever ``check`` refuses.
    """
    root = Path(path)
    for attempt in range(3):
        seen = _current_version(root)
        try:
            directory, manifest = _current_manifest(root)
            if check is not None:
                check(root, manifest)
            state, arrays = _read_state(directory, manifest)
        except IndexFormatError:
            if attempt < 2 and seen is not None and _current_version(root) != seen:
                continue  # a concurrent save replaced the version while we read it
            raise
        graph, refused = arrays.get("dense_hnsw"), None
        if graph is not None:
            spec = manifest["hnsw"]
            if not isinstance(spec, dict) or not all(
                    isinstance(spec.get(key), int) for key in ("m", "ef_construction")):
                raise IndexFormatError(f"{directory}: the manifest's hnsw entry is invalid")
            checksum = spec.get("sha256")  # absent in indexes saved before it existed
            if checksum is not None and _sha256(graph) != checksum:
                graph, refused = None, "dense_hnsw.npy's checksum differs from the manifest's"
        return SavedIndex(directory, manifest, state, graph, refused)
    raise IndexFormatError(f"{root} changed during every attempt to load it")  # pragma: no cover
