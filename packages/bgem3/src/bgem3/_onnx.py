"""The backbone in ONNX Runtime, for ``BGEM3(backend="onnx")``: exported once, cached, loaded.

The XLM-R backbone is exported with torch's ONNX exporter (any batch size and length),
cached on disk under the checkpoint's fingerprint and the torch and transformers versions,
and run by an ONNX Runtime CPU session. The heads and the pooling stay in torch, in
:class:`~bgem3.model.BGEM3Module`, which sees an ordinary backbone. The export is written
to a temporary directory, stamped with its cache key inside the ONNX file's own metadata,
and renamed into place, so an interrupted export leaves nothing half-written behind. A cached
file that ONNX Runtime cannot read, or whose stamp is not the key it lies under (an export
of other weights copied there, or one from before the stamp), is exported again. A cache
directory that cannot be written is an ``OSError`` that names it, not an export failure.
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bgem3.checkpoint import cache_dir
from bgem3.errors import CompileError

__all__ = ["OnnxBackbone", "onnx_backbone"]

ONNX_FILE = "backbone.onnx"
OPSET = 17
# metadata_props of an export: the cache key it was made for, and the model's name
STAMP = "bgem3.cache_key"
STAMP_MODEL = "bgem3.model"
# a write that failed for lack of room or rights, as opposed to a model torch cannot export
_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS,
                             errno.EACCES, errno.EPERM, errno.EIO})


@dataclass(frozen=True)
class _Output:
    last_hidden_state: torch.Tensor


class OnnxBackbone(nn.Module):
    """Stands in for the transformers backbone: same call, ``last_hidden_state`` from ORT.

    Args:
        session: An ``onnxruntime.InferenceSession`` of the exported backbone.
    """

    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                return_dict: bool = True) -> _Output:
        """Run the session on ``int64 [B, L]`` ids and mask; ``[B, L, hidden]`` fp32 out."""
        (hidden,) = self.session.run(["last_hidden_state"], {
            "input_ids": input_ids.cpu().numpy(), "attention_mask": attention_mask.cpu().numpy()})
        return _Output(torch.from_numpy(hidden))


class _LastHidden(nn.Module):
    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden: torch.Tensor = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, return_dict=True
        ).last_hidden_state
        return hidden


def _export(backbone: nn.Module, target: Path) -> None:
    """Export ``backbone`` to ``target/backbone.onnx`` (weights beside it above 2 GB)."""
    pad = int(getattr(backbone.config, "pad_token_id", 1) or 0)
    token = pad + 4  # an ordinary token id (0-3 are XLM-R's special tokens)
    input_ids = torch.full((2, 6), token, dtype=torch.long)
    mask = torch.ones_like(input_ids)
    input_ids[1, -2:], mask[1, -2:] = pad, 0  # a padded row: the mask path is traced too
    axes = {"input_ids": {0: "batch", 1: "length"}, "attention_mask": {0: "batch", 1: "length"},
            "last_hidden_state": {0: "batch", 1: "length"}}
    kwargs: dict[str, Any] = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the TorchScript exporter: no onnxscript needed
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation notes, not for our users
        torch.onnx.export(
            _LastHidden(backbone), (input_ids, mask), str(target / ONNX_FILE),
            input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
            dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True, **kwargs)


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path / ONNX_FILE), options,
                                providers=["CPUExecutionProvider"])


def _stamp(path: Path, key: str, name: str) -> None:
    """Write the cache key (the weights' fingerprint and the versions) into the export.

    It goes into the model's own ``metadata_props``, so it travels with the file: an
    export copied under another key is recognised on load. Only the graph is read and
    written again; weights stored beside it (above 2 GB) are left alone.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for entry_key, value in ((STAMP, key), (STAMP_MODEL, name)):
        entry = model.metadata_props.add()
        entry.key, entry.value = entry_key, value
    onnx.save(model, str(path))


def _storage_error(exc: BaseException) -> OSError | None:
    """The error of the file system behind ``exc`` (its cause or context), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno in _STORAGE_ERRNOS:
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _cache_error(exc: OSError, root: Path) -> OSError:
    """One clear error for a cache directory that cannot hold the export, naming the fix."""
    reason = exc.strerror or str(exc)
    if isinstance(exc.filename, str) and Path(exc.filename) != root:
        reason = f"{reason}: {exc.filename}"
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    kind = type(exc) if type(exc).__module__ == "builtins" else OSError
    error = kind(
        f"backend='onnx' cannot write its export of the backbone to the cache directory "
        f"{root} ({reason}): {'free space there' if full else 'make it a writable directory'}"
        ", or set BGEM3_CACHE_DIR to another directory")
    error.errno = exc.errno  # (no strerror: the message stays the one above)
    return error


def _export_cached(backbone: nn.Module, root: Path, final: Path, key: str, name: str) -> None:
    """Export into a staging directory under ``root``, stamp it, rename it to ``final``."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".export-", dir=root))
    except OSError as exc:
        raise _cache_error(exc, root) from exc
    try:
        try:
            _export(backbone, staging)
        except Exception as exc:  # the exporter raises many kinds; each is one clear error
            storage = _storage_error(exc)
            if storage is not None:  # a full disk is not a model torch cannot export
                raise _cache_error(storage, root) from exc
            raise CompileError(
                f"backend='onnx': torch cannot export the backbone of {name!r} to ONNX; "
                f"load it with backend='torch' (the default). torch says: "
                f"{type(exc).__name__}: {str(exc).strip()}") from exc
        try:
            _stamp(staging / ONNX_FILE, key, name)
        except OSError as exc:
            raise _cache_error(exc, root) from exc
        with contextlib.suppress(OSError):  # an existing one (a parallel export) wins
            os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def onnx_backbone(backbone: nn.Module, fingerprint: str, name: str) -> OnnxBackbone:
    """The exported ``backbone`` in an ONNX Runtime session, exported now unless cached.

    A cached export is used only if the cache key stamped inside it (the weights'
    fingerprint, the torch, transformers and opset versions) is this one; an export of
    other weights, or one without the stamp, is exported again, with a warning.

    Args:
        backbone: The loaded fp32 transformers backbone.
        fingerprint: The checkpoint's fingerprint (part of the cache key).
        name: The checkpoint's name, for messages.

    Returns:
        A module to put in the backbone's place.

    Raises:
        ModuleNotFoundError: onnxruntime or onnx is not installed.
        CompileError: torch cannot export the backbone, or ONNX Runtime cannot load it.
        OSError: The cache directory cannot hold the export (not writable, not a
            directory, or full); the message names it and the way out (``BGEM3_CACHE_DIR``).
    """
    import transformers

    for package in ("onnxruntime", "onnx"):
        try:
            __import__(package)
        except ImportError as exc:
            raise ModuleNotFoundError(
                f"backend='onnx' needs {package}: pip install 'bgem3[onnx]'", name=package
            ) from exc
    key = (f"{fingerprint}-torch{torch.__version__}-transformers{transformers.__version__}"
           f"-opset{OPSET}").replace("+", "_")
    root = cache_dir() / "onnx"
    final = root / key
    for attempt in range(2):
        if not (final / ONNX_FILE).is_file():
            _export_cached(backbone, root, final, key, name)
        try:
            session = _session(final)
        except Exception as exc:  # onnxruntime's own error types: a corrupt or foreign file
            if attempt:
                raise CompileError(
                    f"backend='onnx': ONNX Runtime cannot load the export of {name!r} in "
                    f"{final}: {type(exc).__name__}: {str(exc).strip()}") from exc
            shutil.rmtree(final, ignore_errors=True)  # exported again on the next pass
            continue
        stamp = session.get_modelmeta().custom_metadata_map
        if stamp.get(STAMP) == key:
            return OnnxBackbone(session)
        made_of = (f"was exported from {stamp.get(STAMP_MODEL)!r} ({stamp[STAMP]})"
                   if STAMP in stamp else "does not say which weights it was exported from")
        if attempt:
            raise CompileError(
                f"backend='onnx': the export in {final} {made_of}, not from {name!r} "
                f"({key}), and it could not be replaced: delete {final}")
        warnings.warn(f"backend='onnx': the cached export in {final} {made_of}, not from "
                      f"{name!r}; exporting it again", UserWarning, stacklevel=3)
        shutil.rmtree(final, ignore_errors=True)
    raise AssertionError("unreachable")
