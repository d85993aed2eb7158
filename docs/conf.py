"""Sphinx configuration of the documentation site (``make docs``).

Markdown pages through MyST-Parser, the API reference from the docstrings through autodoc and
napoleon (Google sections, reST roles), the CLI reference from the real parser through
sphinx-argparse, the furo theme. The build is offline: no intersphinx inventory is fetched, so
names of other projects that cannot resolve are listed in ``nitpick_ignore_regex``, one
narrow pattern per package.
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import version as _version
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
_PYPROJECT = tomllib.loads((ROOT / "packages" / "bgem3" / "pyproject.toml").read_text("utf-8"))
# The repository's address is declared once, in the packages' [project.urls].
REPO_URL = _PYPROJECT["project"]["urls"]["Repository"].rstrip("/")

project = "bgem3"
author = "The bgem3 authors"
copyright = "the bgem3 authors, MIT License"
release = _version("bgem3")
version = release

# docs/reference/_apiref.py: a reference autodoc cannot resolve is resolved by object identity
sys.path.insert(0, str(Path(__file__).parent / "reference"))

extensions = [
    "_apiref",
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.extlinks",
    "sphinx.ext.viewcode",
    "sphinxarg.ext",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = [
    "_build",
    "conftest.py",
]

# MyST: ::: fences, definition lists, anchors for headings (links such as page.md#section)
myst_enable_extensions = ["colon_fence", "deflist", "attrs_inline"]
myst_heading_anchors = 3
# links that are not pages or anchors resolve in these domains only (sphinx-argparse's own
# domain cannot answer MyST's "any" look-ups)
myst_ref_domains = ["std", "py"]

# {repo}`notebooks/01_quickstart.ipynb` links to a file of the repository on GitHub
extlinks = {"repo": (REPO_URL + "/blob/main/%s", "%s")}

# autodoc + napoleon: Google sections as they are written in the docstrings
# Sphinx 9's new autodoc fails to import pydantic models with extra fields (FastAPI's own among
# them: "__pydantic_extra__ must be dict[str, ...]", sphinx-doc/sphinx#14089); the class-based
# implementation imports them (Sphinx 8, on Python 3.10, has only that one)
autodoc_use_legacy_class_based = True
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_preserve_defaults = True
autodoc_class_signature = "separated"
autodoc_default_options = {"members": True, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True

# Broken references fail the build (make docs: -W -n --keep-going). No intersphinx (offline):
# names that belong to other projects cannot resolve, and are ignored here, package by package.
nitpicky = True
_EXTERNAL = [
    "numpy", "np", "NDArray", "numpy.typing", "npt", "scipy", "torch", "transformers",
    "tokenizers", "huggingface_hub", "safetensors", "pyarrow", "pa", "ray", "pyspark",
    "qdrant_client", "pymilvus", "langchain_core", "langchain", "langchain_classic",
    "langchain_milvus", "langchain_qdrant", "llama_index.core", "pydantic", "fastapi",
    "starlette", "uvicorn", "httpx", "openai", "onnxruntime", "onnx", "faiss", "accelerate",
    "datasets", "tqdm", "filelock",
]
nitpick_ignore_regex = [
    (r"py:.*", re.escape(name) + r"(\..*)?") for name in _EXTERNAL
] + [
    # the standard library's names, without its inventory (offline)
    (r"py:.*", r"(os|pathlib|collections\.abc|typing|typing_extensions|concurrent\.futures"
               r"|asyncio|logging|io|json|enum|dataclasses|argparse|threading|weakref"
               r"|contextlib|types|_io|re)\..*"),
    (r"py:class", r"(Path|PathLike|Iterable|Iterator|Sequence|Mapping|Callable|Any|Literal"
                  r"|NamedTuple|Protocol|Self|TypeAlias|ClassVar|Enum|Exception|BaseException"
                  r"|ValueError|TypeError|KeyError|RuntimeError|FileNotFoundError|OSError"
                  r"|UserWarning|Warning|UnicodeWarning|RuntimeWarning|ImportError)"),
    (r"py:class", r"abc\.ABC"),
    # our private modules' classes, named in signatures and bases: the reference documents
    # the public surface only
    (r"py:class", r"(bgem3|langchain_bgem3)(\.\w+)*\._\w+(\.\w+)*"),
    # other projects' classes named the short way in docstrings and signatures
    (r"py:class", r"(ConfigDict|SecretStr|BaseModel)"),  # pydantic
    (r"py:class", r"(BaseNode|NodeWithScore|QueryBundle)"),  # llama_index
    (r"py:class", r"(Document|BaseRetriever|CallbackManagerForRetrieverRun)"),  # langchain_core
    (r"py:class", r"(csr_matrix|csc_matrix)"),  # scipy
    (r"py:class", r"FastAPI"),  # fastapi
    (r"py:class", r"Application"),  # ray.serve
    (r"py:class", r"(int|float|str|bytes|bool|object|dict|list|tuple|set|frozenset|type|None"
                  r"|complex|slice|memoryview|bytearray|range)"),
]

html_theme = "furo"
html_title = f"bgem3 {release}"
html_static_path: list[str] = []
html_theme_options = {
    "source_repository": REPO_URL,
    "source_branch": "main",
    "source_directory": "docs/",
}
