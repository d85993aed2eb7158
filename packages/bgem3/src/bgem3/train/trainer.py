"""Deprecated module path: import ``FinetuneSettings`` and ``finetune`` from ``bgem3.train``.

Fine-tuning now lives in ``bgem3.train.settings`` and ``bgem3.train.finetuning``; a name
imported from here still works, with a ``DeprecationWarning``.
"""

from __future__ import annotations

import warnings

__all__: list[str] = []  # nothing new is exported from a deprecated path

_MOVED = {"FinetuneSettings": "bgem3.train.settings", "SETTINGS_FILE": "bgem3.train.settings",
          "read_settings": "bgem3.train.settings", "finetune": "bgem3.train.finetuning"}


def __getattr__(name: str) -> object:
    if name not in _MOVED:
        raise AttributeError(f"module 'bgem3.train.trainer' has no attribute {name!r}")
    warnings.warn(f"bgem3.train.trainer is deprecated: import {name} from bgem3.train",
                  DeprecationWarning, stacklevel=2)
    import importlib

    return getattr(importlib.import_module(_MOVED[name]), name)
