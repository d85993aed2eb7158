"""Root pytest hooks: the notebooks and the documentation's code blocks run on the tiny checkpoint.

The notebooks use a tiny random checkpoint unless BGEM3_MODEL is set; the pages' code blocks
(README.md, the packages' READMEs, docs/) run through Sybil, below.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sybil import Sybil
from sybil.parsers.myst import ClearNamespaceParser, PythonCodeBlockParser, SkipParser


def pytest_configure(config: pytest.Config) -> None:
    """Point ``BGEM3_MODEL`` at a tiny checkpoint before any notebook kernel starts."""
    if not os.environ.get("BGEM3_MODEL"):
        from bgem3.testing import build_tiny_checkpoint

        os.environ["HF_HUB_OFFLINE"] = "1"  # a local checkpoint: nothing to download

        os.environ["BGEM3_MODEL"] = str(build_tiny_checkpoint(tempfile.mkdtemp(prefix="tiny-")))


# --- The documentation's code blocks (README.md, packages/*/README.md, docs/**/*.md) ----------
# Sybil runs every ```python block of these pages as a test, in page order, one namespace per
# page. A block that needs what a test run cannot have (a server, Ray, Spark, a GPU, the
# network) follows `<!-- skip: next -->` and its page says why. The pages load the model the
# way users do, `bgem3.BGEM3("BAAI/bge-m3")`: here that hub id resolves, offline, through a
# Hugging Face cache that holds the tiny seeded checkpoint under that name, so every loading
# code path is the real one and only the weights are not BGE-M3's.

_DOCS_REPO = "BAAI/bge-m3"
_DOCS_COMMIT = "0" * 40


@pytest.fixture(scope="session")
def _docs_hub_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hugging Face cache with the tiny checkpoint as ``BAAI/bge-m3`` (and bgem3's cache)."""
    from bgem3.testing import build_tiny_checkpoint

    root = tmp_path_factory.mktemp("docs-hub")
    repo = root / "hub" / f"models--{_DOCS_REPO.replace('/', '--')}"
    snapshot = repo / "snapshots" / _DOCS_COMMIT
    prebuilt = os.environ.get("BGEM3_TEST_CHECKPOINT")
    if prebuilt:
        shutil.copytree(prebuilt, snapshot)
    else:
        build_tiny_checkpoint(snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(_DOCS_COMMIT, encoding="utf-8")
    return root


@pytest.fixture(scope="module")  # Sybil: one page is one module
def _docs_page(_docs_hub_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Each page runs offline in its own empty working directory, with the docs' hub cache."""
    import huggingface_hub.constants

    workdir = tmp_path_factory.mktemp("docs-page")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(_docs_hub_cache / "hub"))
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("HF_HUB_CACHE", str(_docs_hub_cache / "hub"))  # worker processes too
        if "BGEM3_CACHE_DIR" not in os.environ:  # ONNX exports of the tiny model, not the user's
            patch.setenv("BGEM3_CACHE_DIR", str(_docs_hub_cache / "bgem3-cache"))
        patch.chdir(workdir)
        yield workdir


def _docs_teardown(namespace: dict[str, Any]) -> None:
    """Close what a page opened (pools, clients) and drop its objects."""
    for value in namespace.values():
        close = getattr(value, "close", None)
        if callable(close) and type(value).__module__.startswith(("bgem3", "qdrant_client")):
            close()
    namespace.clear()


pytest_collect_file = Sybil(
    parsers=[PythonCodeBlockParser(), SkipParser(), ClearNamespaceParser()],
    patterns=["README.md", "docs/*.md", "docs/*/*.md"],
    excludes=["notebooks/*", "benchmarks/*", "tests/*", "docs/_build/*", "docs/*/_*.md"],
    fixtures=["_docs_page"],
    teardown=_docs_teardown,
).pytest()

# docs/conf.py is Sphinx's configuration, not a test module (--doctest-modules would import it)
collect_ignore = ["docs/conf.py", "docs/_build"]
