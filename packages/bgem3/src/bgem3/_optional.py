"""Optional dependencies: imported on first use, or an ``ImportError`` with the install command."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, extra: str, needed_by: str, name: str | None = None) -> ModuleType:
    """Import ``module``, or say which extra of bgem3 brings it (``name``: how to call it).

    Raises:
        ImportError: ``module`` is not installed; the message has the pip command.

    Example:
        >>> require("json", "none", "this example").__name__
        'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f'{needed_by} needs {name or module.split(".")[0]}: pip install '
                          f'"bgem3[{extra}]"') from exc
