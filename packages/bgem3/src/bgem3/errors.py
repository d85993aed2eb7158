"""Errors and warnings raised by bgem3.

Every error derives from :class:`BGEM3Error` and also from the builtin exception a
caller would naturally catch (``FileNotFoundError``, ``ValueError``), so both
``except bgem3.BGEM3Error`` and ``except FileNotFoundError`` work.
"""

from __future__ import annotations

import sys
import warnings

__all__ = [
    "BGEM3Error",
    "CheckpointError",
    "CheckpointNotFoundError",
    "CompileError",
    "DatasetError",
    "DatasetNotFoundError",
    "HeadNotLoadedError",
    "IndexFormatError",
    "TrainingDivergedError",
    "TruncationWarning",
    "warn_each_call",
]


class BGEM3Error(Exception):
    """Root of every error raised by bgem3."""


class CheckpointNotFoundError(BGEM3Error, FileNotFoundError):
    """A model directory, hub repository or one of its required files does not exist."""


class CheckpointError(BGEM3Error, ValueError):
    """A checkpoint exists but cannot be used (unreadable config, malformed head file)."""


class CompileError(BGEM3Error, RuntimeError):
    """``compile=True`` or ``backend="onnx"``, and torch cannot compile or export the model here.

    The usual causes: no C++ compiler (compile), a torch too old for transformers' code; the
    message carries torch's (or ONNX Runtime's) reason.
    """


class HeadNotLoadedError(BGEM3Error, ValueError):
    """Sparse or ColBERT output was requested from a model loaded with ``dense_only=True``."""


class IndexFormatError(BGEM3Error, ValueError):
    """A saved index is corrupt, truncated, of another format, or built by another model."""


class DatasetError(BGEM3Error, ValueError):
    """An evaluation or training data file is missing, unreadable or malformed.

    The message names the file and, where there is one, the line.
    """


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A data file or directory does not exist."""


class TrainingDivergedError(BGEM3Error, FloatingPointError):
    """The loss, a gradient or a weight became NaN or infinite: the run stopped there.

    Nothing from the step that diverged is logged or saved; the checkpoints saved before it
    hold finite weights.
    """


class TruncationWarning(UserWarning):
    """Some inputs were longer than ``max_length`` tokens and were truncated."""


def warn_each_call(message: str, category: type[Warning], stacklevel: int = 2) -> None:
    """Warn on every call, not once per call site as ``warnings.warn`` does by default.

    The warning is attributed to the caller ``stacklevel`` frames up (as with
    ``warnings.warn``) and still goes through the warning filters, so ``"error"``,
    ``"ignore"`` and ``"once"`` filters behave as usual.
    """
    frame = sys._getframe(stacklevel)
    warnings.warn_explicit(message, category, frame.f_code.co_filename, frame.f_lineno,
                           module=frame.f_globals.get("__name__"), registry={})
