"""Find a BGE-M3 checkpoint (local directory or hub id) and validate its files.

A checkpoint is a Hugging Face model directory (``config.json``, tokenizer files,
``model.safetensors`` or ``pytorch_model.bin``) plus two head files, ``colbert_linear.pt``
and ``sparse_linear.pt`` (``nn.Linear`` state dicts). From the hub only these files are
fetched, never the ``onnx/`` folder that ``BAAI/bge-m3`` also carries.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bgem3.errors import CheckpointError, CheckpointNotFoundError

__all__ = ["BACKENDS", "DEFAULT_BACKEND", "DEFAULT_MODEL", "Checkpoint", "cache_dir",
           "files_digest", "fingerprint", "legacy_fingerprint", "load_config", "load_head",
           "resolve_checkpoint"]

DEFAULT_MODEL = "BAAI/bge-m3"
"""The checkpoint every entry point loads when none is named (the CLI and the adapters too)."""
BACKENDS = ("auto", "torch", "onnx")
"""What may run the backbone (``BGEM3(backend=...)``, ``--backend``)."""
DEFAULT_BACKEND = "auto"
"""ONNX Runtime on a CPU where it is installed, torch elsewhere (see ``bgem3._placement``)."""

COLBERT_HEAD = "colbert_linear.pt"
SPARSE_HEAD = "sparse_linear.pt"
HEAD_FILES = (COLBERT_HEAD, SPARSE_HEAD)
TOKENIZER_FILES = ("tokenizer.json", "sentencepiece.bpe.model")
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# Top-level files only: fnmatch patterns without a "/" still match "onnx/x" for "*x",
# so every pattern here starts with a literal name.
_HUB_PATTERNS = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "sentencepiece.bpe.model",
    *HEAD_FILES,
)
_SAFETENSORS_PATTERNS = ("model.safetensors", "model.safetensors.index.json", "model-*.safetensors")
_BIN_PATTERNS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*.bin")


@dataclass(frozen=True)
class Checkpoint:
    """A validated checkpoint directory.

    Attributes:
        path: The local directory (a hub snapshot for hub ids).
        name: What the user asked for (hub id or path), for messages and manifests.
        has_heads: Whether both head files are present.
    """

    path: Path
    name: str
    has_heads: bool


def _looks_like_path(model: str) -> bool:
    return (
        os.path.isabs(model)
        or model.startswith((".", "~"))
        or model.count("/") > 1
        or (os.sep != "/" and os.sep in model)
    )


def _download(
    repo_id: str,
    *,
    revision: str | None,
    cache_dir: str | os.PathLike[str] | None,
    token: str | bool | None,
    local_files_only: bool,
) -> Path:
    """Fetch (or find in the HF cache) only the files BGE-M3 needs from a hub repository.

    Weights come as safetensors when the repository has them, else as ``.bin``; a snapshot
    that is cached already is used as is when the hub is unreachable or offline mode is on.
    """
    import huggingface_hub
    from huggingface_hub.errors import (
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    def fetch(patterns: Sequence[str]) -> Path:
        return Path(
            huggingface_hub.snapshot_download(
                repo_id,
                revision=revision,
                cache_dir=None if cache_dir is None else os.fspath(cache_dir),
                token=token,
                local_files_only=local_files_only,
                allow_patterns=list(patterns),
            )
        )

    try:
        folder = fetch(_HUB_PATTERNS)
        if not any((folder / f).is_file() for f in WEIGHT_FILES[:2]):
            folder = fetch(_SAFETENSORS_PATTERNS)
        if not any((folder / f).is_file() for f in WEIGHT_FILES[:2]):
            folder = fetch(_BIN_PATTERNS)
    except HFValidationError as exc:
        raise CheckpointNotFoundError(
            f"{repo_id!r} is neither an existing directory nor a valid Hugging Face hub id "
            "(expected 'org/name')"
        ) from exc
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise CheckpointNotFoundError(
            f"hub repository {repo_id!r} (revision {revision or 'main'}) was not found, "
            "and no local directory has that name"
        ) from exc
    except LocalEntryNotFoundError as exc:
        raise CheckpointNotFoundError(
            f"{repo_id!r} is not a local directory, not in the Hugging Face cache, and the "
            "hub cannot be reached (or HF_HUB_OFFLINE=1 is set). Download it once with "
            "network access, or pass the path of a local checkpoint directory."
        ) from exc
    return folder


def resolve_checkpoint(
    model: str | os.PathLike[str],
    *,
    require_heads: bool = True,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> Checkpoint:
    """Locate a checkpoint and check that every file BGE-M3 needs is there.

    Args:
        model: A local directory or a hub id such as ``"BAAI/bge-m3"``.
        require_heads: Fail when a head file is missing (``False`` allows dense-only use).
        revision: Hub branch, tag or commit.
        cache_dir: Hugging Face cache directory (default: the HF cache).
        token: Hub token for private repositories.
        local_files_only: Never touch the network (``HF_HUB_OFFLINE=1`` does the same).

    Returns:
        The validated checkpoint.

    Raises:
        CheckpointNotFoundError: The directory, repository or a required file is missing.
        TypeError: ``model`` is not a string or path.
    """
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a hub id or a path, got {type(model).__name__}")
    name = os.fspath(model)
    if not name.strip():
        raise CheckpointNotFoundError("model must be a hub id or a path, got an empty string")
    local = Path(name).expanduser()
    if local.is_dir():
        path = local
    elif local.exists():
        raise CheckpointNotFoundError(f"{name!r} is a file; expected a checkpoint directory")
    elif _looks_like_path(name):
        raise CheckpointNotFoundError(f"checkpoint directory {name!r} does not exist")
    else:
        path = _download(
            name,
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only,
        )
    return _validate(path, name, require_heads=require_heads)


def _validate(path: Path, name: str, *, require_heads: bool) -> Checkpoint:
    where = f"checkpoint {name!r} ({path})"
    if not (path / "config.json").is_file():
        raise CheckpointNotFoundError(f"{where} has no config.json")
    try:
        config: Any = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{where}: config.json is not readable JSON ({exc})") from exc
    if not isinstance(config, dict) or "hidden_size" not in config:
        raise CheckpointError(f"{where}: config.json does not describe a transformer model")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise CheckpointNotFoundError(
            f"{where} has no tokenizer: expected one of {', '.join(TOKENIZER_FILES)}"
        )
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        raise CheckpointNotFoundError(
            f"{where} has no weights: expected one of {', '.join(WEIGHT_FILES)}"
        )
    missing = [f for f in HEAD_FILES if not (path / f).is_file()]
    if missing and require_heads:
        raise CheckpointNotFoundError(
            f"{where} is missing {' and '.join(missing)}; BGE-M3 needs both "
            f"{' and '.join(HEAD_FILES)} for sparse and ColBERT outputs. Pass "
            "dense_only=True to load the backbone for dense embeddings alone."
        )
    return Checkpoint(path=path, name=name, has_heads=not missing)


def load_head(path: Path, in_features: int, out_features: int | None = None) -> Any:
    """Load an ``nn.Linear`` head from a ``.pt`` state dict, safely and with shape checks.

    Args:
        path: The head file (``colbert_linear.pt`` or ``sparse_linear.pt``).
        in_features: Expected input width (the backbone's hidden size).
        out_features: Expected output width; ``None`` takes it from the file.

    Returns:
        An fp32 ``torch.nn.Linear`` holding the file's weights.

    Raises:
        CheckpointError: The file is not a Linear state dict of the expected shape.
    """
    import pickle

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"cannot read head file {path}: {exc}") from exc
    weight = state.get("weight") if isinstance(state, dict) else None
    bias = state.get("bias") if isinstance(state, dict) else None
    if (
        not isinstance(weight, torch.Tensor)
        or weight.ndim != 2
        or not isinstance(bias, torch.Tensor)
        or bias.shape != weight.shape[:1]
        or set(state) != {"weight", "bias"}
    ):
        got = (
            {k: tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
             for k, v in state.items()}
            if isinstance(state, dict) else type(state).__name__
        )
        raise CheckpointError(
            f"head file {path} must hold an nn.Linear state dict {{'weight': [out, in], "
            f"'bias': [out]}}, got {got}"
        )
    out_dim, in_dim = weight.shape
    if in_dim != in_features or (out_features is not None and out_dim != out_features):
        expected = f"[{out_features if out_features is not None else 'any'}, {in_features}]"
        raise CheckpointError(
            f"head file {path} has weight shape {list(weight.shape)}, expected {expected}"
        )
    head = torch.nn.Linear(in_dim, out_dim)
    head.load_state_dict({"weight": weight.float(), "bias": bias.float()})
    return head


def cache_dir() -> Path:
    """bgem3's cache: ``$BGEM3_CACHE_DIR``, else ``$XDG_CACHE_HOME/bgem3`` or ``~/.cache/bgem3``."""
    base = os.environ.get("BGEM3_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "bgem3")
    return Path(base)


def fingerprint(path: Path) -> str:
    """A short hash that identifies a checkpoint's weights, whatever dtype it is loaded in.

    SHA-256 over ``config.json``, the head files and every byte of every weight file, so
    that an index refuses any other model, a fine-tune of only the last layers included.
    Hashing gigabytes takes a few seconds, so each file's digest is cached (in
    ``$XDG_CACHE_HOME/bgem3/fingerprints.json``) under its path, size, modification time
    and inode: a file is hashed again only when it changes (``$BGEM3_CACHE_DIR`` moves it).

    Args:
        path: A checkpoint directory.

    Returns:
        16 hex digits.
    """
    return files_digest(path, ("config.json", *HEAD_FILES, *_weight_files(path)),
                        b"bgem3-fingerprint-v2")[:16]


def files_digest(path: Path, names: Sequence[str], salt: bytes) -> str:
    """SHA-256 over ``salt`` and the names and contents of those of ``names`` in ``path``.

    Each file's own digest comes from the on-disk cache :func:`fingerprint` keeps (hashed
    again only when the file changes).
    """
    import hashlib

    digest = hashlib.sha256(salt)
    cache = _DigestCache.open()
    for name in names:
        file = path / name
        if file.is_file():
            digest.update(name.encode())
            digest.update(cache.digest(file).encode())
    cache.close()
    return digest.hexdigest()


def legacy_fingerprint(path: Path) -> str:
    """The fingerprint of bgem3 0.1 indexes (``config.json``, heads, first MiB of weights).

    Kept so that indexes saved before the full-file fingerprint still load.
    """
    import hashlib

    digest = hashlib.sha256()
    for name in ("config.json", *HEAD_FILES, *WEIGHT_FILES):
        file = path / name
        if file.is_file():
            digest.update(name.encode())
            with file.open("rb") as handle:
                digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:16]


def _weight_files(path: Path) -> list[str]:
    """The weight files of a checkpoint: single files, index files and their shards."""
    names = [n for n in WEIGHT_FILES if (path / n).is_file()]
    shards = sorted(p.name for p in path.glob("model-*.safetensors")) + sorted(
        p.name for p in path.glob("pytorch_model-*.bin"))
    return names + shards


class _DigestCache:
    """SHA-256 digests of files keyed by path, size, mtime and inode, kept on disk (JSON)."""

    def __init__(self, location: Path | None, entries: dict[str, str]) -> None:
        self.location = location
        self.entries = entries
        self.changed = False

    @classmethod
    def open(cls) -> _DigestCache:
        location = cache_dir() / "fingerprints.json"
        try:
            entries = json.loads(location.read_text(encoding="utf-8"))
            if not isinstance(entries, dict):
                entries = {}
        except (OSError, ValueError):
            entries = {}
        return cls(location, entries)

    def digest(self, file: Path) -> str:
        import hashlib

        stat = file.stat()
        key = f"{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}"
        cached = self.entries.get(key)
        if isinstance(cached, str):
            return cached
        sha = hashlib.sha256()
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                sha.update(block)
        self.entries[key] = sha.hexdigest()
        self.changed = True
        return self.entries[key]

    def close(self) -> None:
        """Write the cache back (atomically); a cache that cannot be written is skipped."""
        if not self.changed or self.location is None:
            return
        try:
            self.location.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.location.with_name(  # (one per process and thread)
                f".{self.location.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps(dict(list(self.entries.items())[-512:])),
                           encoding="utf-8")
            os.replace(tmp, self.location)
        except OSError:
            pass


# what encoding reads of a config; a config.json that has them all is read without transformers
_CONFIG_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "max_position_embeddings", "pad_token_id", "vocab_size")


def load_config(checkpoint: Checkpoint) -> Any:
    """The backbone's config, without its weights (for a backbone that is not a torch module).

    ``config.json`` as attributes when it states what encoding reads (BGE-M3's does: no
    transformers import, which takes longer than the rest of a cached ONNX load), else
    transformers' ``AutoConfig``.

    Raises:
        CheckpointError: The config cannot be read.
    """
    import types

    try:
        data = json.loads((checkpoint.path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    if isinstance(data, dict) and all(isinstance(data.get(key), (int, str))
                                      for key in _CONFIG_KEYS):
        return types.SimpleNamespace(**data)
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(checkpoint.path))
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"cannot read the config of checkpoint {checkpoint.name!r} ({checkpoint.path}): "
            f"{exc}") from exc
