"""Where and how a model runs: the device, the compute dtype and the backend, resolved once.

The rules ``BGEM3(device=..., dtype=..., backend=...)`` follows: ``None`` and ``"auto"``
mean the best this machine has (a GPU in torch; on a CPU, ONNX Runtime in float32 where it
is installed), and a combination that cannot run is a ``ValueError`` that says what can.

Devices and dtypes are settled by name (``"cpu"``, ``"float32"``), so that a model that
runs in ONNX Runtime never imports torch (over a second and 200 MB): torch is asked only
about the devices it alone can see, and only where one could exist.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["choose_backend", "cpu_lacks_bf16", "device_name", "dtype_name", "resolve_device",
           "torch_dtype"]

# every spelling a user may write -> the dtype's name
_DTYPE_NAMES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "int8": "int8",  # CPU, ONNX Runtime: int8 matrix products, float32 outputs
}
_DEVICE_LABELS = {"cuda": "CUDA", "mps": "Apple MPS", "xpu": "Intel XPU"}
# device nodes without which torch.cuda finds no GPU on Linux: NVIDIA's driver, WSL's GPU
# paravirtualisation, AMD's ROCm
_GPU_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg", "/dev/kfd")


def _torch_loaded() -> bool:
    return "torch" in sys.modules


def _gpu_possible() -> bool:
    """Whether ``device=None`` could find a GPU here: decided without importing torch.

    False only where none can exist: Linux without any GPU driver's device node. Where
    torch is already imported it is asked instead (at no cost).
    """
    if _torch_loaded() or not sys.platform.startswith("linux"):
        return True  # (macOS: Apple MPS; elsewhere, nothing cheap to look at)
    return any(os.path.exists(node) for node in _GPU_NODES)


def device_name(device: str | torch.device | None) -> str:
    """:func:`resolve_device` as a name (``"cpu"``, ``"cuda:1"``), torch imported only if needed.

    Example:
        >>> device_name(" CPU ")
        'cpu'
    """
    if isinstance(device, str) and device.strip().lower() == "cpu":
        return "cpu"
    if device is None and not _gpu_possible():
        return "cpu"
    return str(resolve_device(device))


def dtype_name(dtype: str | torch.dtype | None, device: str) -> str:
    """The compute dtype's name (``"float32"``...) for a dtype option on ``device``.

    ``None`` is float16 on CUDA and float32 elsewhere.

    Raises:
        ValueError: Not one of float32, float16, bfloat16, int8 (or their short names).

    Example:
        >>> dtype_name("FP32", "cpu"), dtype_name(None, "cuda:0")
        ('float32', 'float16')
    """
    if dtype is None:
        return "float16" if device.split(":")[0] == "cuda" else "float32"
    name = dtype.lower() if isinstance(dtype, str) else None
    if _torch_loaded():
        import torch

        if isinstance(dtype, torch.dtype):
            name = str(dtype).removeprefix("torch.")
    if name in _DTYPE_NAMES:
        return _DTYPE_NAMES[name]
    raise ValueError(f"dtype must be one of float32, float16, bfloat16, int8, got {dtype!r}")


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a :func:`dtype_name`."""
    import torch

    dtype: torch.dtype = getattr(torch, name)
    return dtype


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The torch device for a device name, checked to be usable here (imports torch).

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
    import torch

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


def choose_backend(requested: str, device: str, dtype: str, compile: bool) -> str:
    """``"torch"`` or ``"onnx"``: what ``backend=requested`` means for this device and dtype.

    ``"auto"`` is ONNX Runtime on a CPU in float32 (or int8) when it is installed and
    ``compile`` is off, torch everywhere else.

    Args:
        requested: ``"auto"``, ``"torch"`` or ``"onnx"``.
        device: A :func:`device_name`.
        dtype: A :func:`dtype_name`.
        compile: Whether ``compile=True`` was asked for.

    Raises:
        ValueError: A combination that cannot run, saying what can.

    Example:
        >>> choose_backend("torch", "cpu", "float32", compile=False)
        'torch'
    """
    int8 = dtype == "int8"
    on_cpu = device.split(":")[0] == "cpu"
    if compile and (int8 or requested == "onnx"):
        raise ValueError(f"compile=True applies to backend='torch'; "
                         f"{'dtype=int8' if int8 else 'backend=onnx'} runs in ONNX "
                         "Runtime, the other way to run faster on CPU: pick one")
    if int8:
        if not on_cpu or requested == "torch":
            raise ValueError(f"dtype='int8' runs on the CPU in ONNX Runtime, not "
                             f"{'in torch' if requested == 'torch' else f'on {device}'}: "
                             "leave backend at 'auto' (or 'onnx') and device at 'cpu'")
        return "onnx"
    if requested == "onnx":
        if not on_cpu or dtype != "float32":
            raise ValueError(f"backend='onnx' runs on the CPU in float32, not on {device} "
                             f"in {dtype}: use backend='torch' there")
        return "onnx"
    if requested == "torch" or compile or not on_cpu or dtype != "float32":
        return "torch"
    from bgem3._onnx import available  # (imports neither onnxruntime nor torch)

    return "onnx" if available() else "torch"


def cpu_lacks_bf16() -> bool:
    """True on a CPU without AVX512-BF16 or AMX, where bfloat16 runs slower than float32.

    Unknown (a torch without the probes) counts as supported: no warning.
    """
    import torch

    probes = [getattr(torch.cpu, name, None)
              for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    found = [probe for probe in probes if callable(probe)]
    return len(found) == len(probes) and not any(probe() for probe in found)
