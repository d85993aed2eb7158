"""What the commands share: the model options, loading the model, one-line errors."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from bgem3.encoder import BGEM3

__all__ = [
    "DEFAULT_MODEL",
    "CLIError",
    "Commands",
    "add_model_options",
    "env_model",
    "load_model",
    "model_name",
    "run_command",
]

from bgem3.checkpoint import BACKENDS, DEFAULT_BACKEND, DEFAULT_MODEL
from bgem3.errors import BGEM3Error

Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""The ``add_subparsers()`` object each command module adds its commands to."""


class CLIError(Exception):
    """A problem the user can fix: printed as one line, exit status 1."""


def env_model() -> str:
    """The default model: ``$BGEM3_MODEL``, else BAAI/bge-m3."""
    return os.environ.get("BGEM3_MODEL") or DEFAULT_MODEL


def add_model_options(parser: argparse.ArgumentParser, default: str | None) -> None:
    """``--model``, ``--device``, ``--dtype``, ``--backend`` (``default=None``: the index's)."""
    fallback = DEFAULT_MODEL if default else "the model that built the index"
    parser.add_argument("--model", default=default,
                        help=f"hub id or checkpoint directory (default: $BGEM3_MODEL, else "
                             f"{fallback})")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: the best available)")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16", "int8"],
                        help="default: float16 on CUDA, float32 elsewhere; int8: CPU, "
                             "ONNX Runtime")
    parser.add_argument("--backend", choices=list(BACKENDS), default=DEFAULT_BACKEND,
                        help="run the backbone in torch or ONNX Runtime (default: auto, "
                             "ONNX Runtime on a CPU where it is installed, else torch)")


def load_model(args: argparse.Namespace, name: str | None = None) -> BGEM3:
    """The model of ``--model`` (or ``name``) on ``--device`` in ``--dtype``."""
    from transformers.utils import logging as hf_logging

    from bgem3.encoder import BGEM3

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # no weight-loading bar
    return BGEM3(model_name(name or args.model), device=args.device, dtype=args.dtype,
                 backend=args.backend)


def model_name(name: str) -> str:
    """A local checkpoint as an absolute path (an index records it); hub ids unchanged."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed command; errors the user can fix become one line and status 1."""
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            args.run(args)
        sys.stdout.flush()
    except KeyboardInterrupt:
        print("bgem3: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`bgem3 encode ... | head`): not an error
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (CLIError, BGEM3Error, OSError, ValueError, TypeError, KeyError, ImportError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"bgem3: error: {message}", file=sys.stderr)
        hint = _hint(exc)
        if hint:
            print(f"bgem3: hint: {hint}", file=sys.stderr)
        return 1
    return 0


def _show_warning(message: Warning | str, category: type[Warning], filename: str,
                  lineno: int, file: Any = None, line: str | None = None) -> None:
    """Warnings as one line on stderr, without the library's source location."""
    print(f"bgem3: warning: {message}", file=sys.stderr)


def _hint(exc: BaseException) -> str | None:
    from bgem3.errors import CheckpointNotFoundError

    if isinstance(exc, CheckpointNotFoundError):
        return "pass --model /path/to/checkpoint or set BGEM3_MODEL to use a local checkpoint"
    return None
