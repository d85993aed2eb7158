"""The backbone in ONNX Runtime, for ``BGEM3(backend="onnx")``: exported once, cached, loaded.

The XLM-R backbone is exported with torch's ONNX exporter (any batch size and length),
cached on disk under the checkpoint's fingerprint and the torch and transformers versions,
and run by an ONNX Runtime CPU session. The heads and the pooling stay in torch, in
:class:`~bgem3.model.BGEM3Module`, which sees an ordinary backbone. The export is written
to a temporary directory and renamed into place, so an interrupted export leaves nothing
half-written behind; a cached file that ONNX Runtime cannot read is exported again.
"""

from __future__ import annotations

import contextlib
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


def onnx_backbone(backbone: nn.Module, fingerprint: str, name: str) -> OnnxBackbone:
    """The exported ``backbone`` in an ONNX Runtime session, exported now unless cached.

    Args:
        backbone: The loaded fp32 transformers backbone.
        fingerprint: The checkpoint's fingerprint (part of the cache key).
        name: The checkpoint's name, for messages.

    Returns:
        A module to put in the backbone's place.

    Raises:
        ModuleNotFoundError: onnxruntime or onnx is not installed.
        CompileError: torch cannot export the backbone, or ONNX Runtime cannot load it.
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
            root.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".export-", dir=root))
            try:
                _export(backbone, staging)
                with contextlib.suppress(OSError):  # an existing one (a parallel export) wins
                    os.replace(staging, final)
            except Exception as exc:  # the exporter raises many kinds; each is one clear error
                raise CompileError(
                    f"backend='onnx': torch cannot export the backbone of {name!r} to ONNX; "
                    f"load it with backend='torch' (the default). torch says: "
                    f"{type(exc).__name__}: {str(exc).strip()}") from exc
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        try:
            return OnnxBackbone(_session(final))
        except Exception as exc:  # onnxruntime's own error types: a corrupt or foreign file
            if attempt:
                raise CompileError(
                    f"backend='onnx': ONNX Runtime cannot load the export of {name!r} in "
                    f"{final}: {type(exc).__name__}: {str(exc).strip()}") from exc
            shutil.rmtree(final, ignore_errors=True)  # exported again on the next pass
    raise AssertionError("unreachable")
