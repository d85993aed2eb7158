"""Root pytest hooks: the notebooks run on a tiny random checkpoint unless BGEM3_MODEL is set."""

from __future__ import annotations

import os
import tempfile

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Point ``BGEM3_MODEL`` at a tiny checkpoint before any notebook kernel starts."""
    if not os.environ.get("BGEM3_MODEL"):
        from bgem3.testing import build_tiny_checkpoint

        os.environ["HF_HUB_OFFLINE"] = "1"  # a local checkpoint: nothing to download

        os.environ["BGEM3_MODEL"] = str(build_tiny_checkpoint(tempfile.mkdtemp(prefix="tiny-")))
