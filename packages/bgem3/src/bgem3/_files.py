"""Durable writes: what the atomic writers (indexes, training checkpoints) flush to disk."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_path"]


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a file's contents, or a directory's entries, to disk.

    Example:
        >>> import tempfile
        >>> fsync_path(tempfile.gettempdir())
    """
    fd = os.open(Path(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
