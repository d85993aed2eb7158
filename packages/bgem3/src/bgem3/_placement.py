"""Where and how a model runs: the device, the compute dtype and the backend, resolved once.

The rules ``BGEM3(device=..., dtype=..., backend=...)`` follows: ``None`` and ``"auto"``
mean the best this machine has (a GPU in torch; on a CPU, ONNX Runtime in float32 where it
is installed), and a combination that cannot run is a ``ValueError`` that says what can.
"""

from __future__ import annotations

import torch

__all__ = ["choose_backend", "cpu_lacks_bf16", "resolve_device", "resolve_dtype"]

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "int8": torch.int8,  # CPU, ONNX Runtime: int8 matrix products, float32 outputs
}
_DEVICE_LABELS = {"cuda": "CUDA", "mps": "Apple MPS", "xpu": "Intel XPU"}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The torch device for a device name, checked to be usable here.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"xpu"`` (any device type
            torch knows; any case, surrounding spaces ignored) or a ``torch.device``;
            ``None`` picks cuda, then mps, then cpu.

    Returns:
        The device.

    Raises:
        ValueError: Not a device name, or a device that this torch build or this machine
            does not have (``"xpu"`` on a torch without XPU support, ``"cuda:3"`` with two
            GPUs).

    Example:
        >>> resolve_device(" CPU ")
        device(type='cpu')
    """
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device.strip().lower() if isinstance(device, str) else device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device must be like 'cpu', 'cuda', 'cuda:1', 'mps' or 'xpu', got {device!r}"
        ) from exc
    kind = resolved.type
    if kind == "cpu":
        return resolved
    if kind == "mps":
        module: object = getattr(torch, "mps", None)
        available = torch.backends.mps.is_available()
    else:  # torch.cuda, torch.xpu, torch.mtia, or a backend plug-in's module (torch.hpu...)
        module = getattr(torch, kind, None)
        probe = getattr(module, "is_available", None)
        available = callable(probe) and bool(probe())
    if not available:
        label = _DEVICE_LABELS.get(kind, f"the {kind!r} device type")
        hint = ("; AMD GPUs are 'cuda' devices in a ROCm build of torch" if kind == "hip"
                else "")
        raise ValueError(f"device {device!r}: {label} is not available (this torch "
                         f"{torch.__version__} was built without it, or no such device is "
                         f"visible){hint}")
    count = getattr(module, "device_count", None)
    if resolved.index is not None and callable(count) and resolved.index >= count():
        raise ValueError(f"device {device!r}: only {count()} {_DEVICE_LABELS.get(kind, kind)} "
                         "device(s) are visible")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype) and dtype in _DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    raise ValueError(f"dtype must be one of float32, float16, bfloat16, int8, got {dtype!r}")


def choose_backend(requested: str, device: torch.device, dtype: torch.dtype,
                    compile: bool) -> str:
    """``"torch"`` or ``"onnx"``: what ``backend=requested`` means for this device and dtype.

    ``"auto"`` is ONNX Runtime on a CPU in float32 (or int8) when it is installed and
    ``compile`` is off, torch everywhere else.
    """
    int8 = dtype == torch.int8
    if compile and (int8 or requested == "onnx"):
        raise ValueError(f"compile=True applies to backend='torch'; "
                         f"{'dtype=int8' if int8 else 'backend=onnx'} runs in ONNX "
                         "Runtime, the other way to run faster on CPU: pick one")
    if int8:
        if device.type != "cpu" or requested == "torch":
            raise ValueError(f"dtype='int8' runs on the CPU in ONNX Runtime, not "
                             f"{'in torch' if requested == 'torch' else f'on {device}'}: "
                             "leave backend at 'auto' (or 'onnx') and device at 'cpu'")
        return "onnx"
    if requested == "onnx":
        if device.type != "cpu" or dtype != torch.float32:
            raise ValueError(f"backend='onnx' runs on the CPU in float32, not on {device} "
                             f"in {str(dtype).removeprefix('torch.')}: use backend='torch' "
                             "there")
        return "onnx"
    if requested == "torch" or compile or device.type != "cpu" or dtype != torch.float32:
        return "torch"
    from bgem3._onnx import available  # (imports torch only, never onnxruntime itself)

    return "onnx" if available() else "torch"


def cpu_lacks_bf16() -> bool:
    """True on a CPU without AVX512-BF16 or AMX, where bfloat16 runs slower than float32.

    Unknown (a torch without the probes) counts as supported: no warning.
    """
    probes = [getattr(torch.cpu, name, None)
              for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    found = [probe for probe in probes if callable(probe)]
    return len(found) == len(probes) and not any(probe() for probe in found)
