"""Sphinx extension: resolve Python cross-references by object identity.

A public object is documented once, under its public name (``bgem3.SparseVector``), but
type hints and docstrings name it where it is defined (``bgem3._types.SparseVector``) or
through another public module (``bgem3.index.options.SearchOptions``). When a ``py``
reference finds no target, this imports what it names and, if that object is documented
under another name, points the reference there. References to objects documented nowhere
stay broken, so ``-n`` still reports them.
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment

_MISSING = object()
# Types of other projects that type hints name without their module (imported only for type
# checking, so autodoc cannot qualify them): shown as text. Qualified names of other projects
# are in conf.py's nitpick_ignore_regex.
EXTERNAL = frozenset({"abc.ABC", "BaseModel", "SecretStr", "BaseNode", "FastAPI", "Application",
                      "csr_matrix",
                      # private classes of ours named without their module in type hints
                      "OnnxModule", "LowPrecisionLinear", "EncodeKeywords"})
PYDANTIC_MODULES = (
    "langchain_bgem3", "langchain_bgem3.milvus",
    "llama_index.embeddings.bgem3", "llama_index.sparse_embeddings.bgem3",
    "llama_index.retrievers.bgem3", "llama_index.postprocessor.bgem3",
    "bgem3.server.schemas", "bgem3.server.routes", "bgem3.server.app",
)
# id(object) -> (documented name, object type), rebuilt when the number of documented names
# changes; the object itself is kept so that its id stays its own.
_INDEX: dict[str, Any] = {"size": -1, "ids": {}}


def _lookup(target: str) -> Any:
    """The object a dotted name refers to, or ``_MISSING``."""
    parts = target.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except Exception:  # any failure to import means "not a module"
            continue
        for attr in parts[cut:]:
            try:
                obj = getattr(obj, attr)
            except Exception:  # a property that fails: nothing to point at
                return _MISSING
        return obj
    return _MISSING


def _identifiable(obj: Any) -> bool:
    return obj is not _MISSING and not isinstance(obj, (int, float, str, bytes, bool,
                                                        type(None)))


def _unwrap(obj: Any) -> Any:
    """The function under a bound method (``Class.classmethod`` is a new object each time)."""
    return getattr(obj, "__func__", obj)


def _documented(env: BuildEnvironment) -> dict[int, tuple[str, str, Any]]:
    objects = env.get_domain("py").objects  # type: ignore[attr-defined]
    if _INDEX["size"] != len(objects):
        ids: dict[int, tuple[str, str, Any]] = {}
        for name, entry in objects.items():
            if entry.aliased:
                continue
            obj = _unwrap(_lookup(name))
            if _identifiable(obj):
                ids.setdefault(id(obj), (name, entry.objtype, obj))
        _INDEX.update(size=len(objects), ids=ids)
    return _INDEX["ids"]  # type: ignore[no-any-return]


def _private(target: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in target.split("."))


def _has_attribute(cls: type, attr: str) -> bool:
    """Whether instances of ``cls`` have ``attr``: a field, an annotation or a ``self.attr =``."""
    if attr in {*getattr(cls, "__dataclass_fields__", {}), *getattr(cls, "model_fields", {}),
                *getattr(cls, "__annotations__", {})}:
        return True
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return False
    return re.search(rf"\bself\.{re.escape(attr)}\s*(:[^=\n]*)?=[^=]", source) is not None


def _documenting(node: Any) -> list[str]:
    """Where the reference was written: the object whose docstring holds it, and its parents.

    A docstring names things as its own module sees them (``EncodeStats`` in
    ``bgem3.encoder``), while the page documents the object under another module
    (``bgem3.BGEM3``).
    """
    source = str(node.source or "")
    if "docstring of " not in source:
        return []
    owner = source.rsplit("docstring of ", 1)[1].split(":")[0].strip()
    parts = owner.split(".")
    places = [".".join(parts[:cut]) for cut in range(len(parts), 0, -1)]
    obj = _lookup(owner)
    module = getattr(getattr(obj, "fget", obj), "__module__", None)  # a property: its getter's
    if isinstance(module, str):
        places.append(module)
    return places


def _resolve(app: Sphinx, env: BuildEnvironment, node: Any,
             contnode: nodes.Element) -> nodes.Element | None:
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"]
    if target in EXTERNAL or _private(target):
        # a type of another project that is named without its module, or a private name of
        # ours (a type hint's ``bgem3._types.EncodeKeywords``): shown as text, not linked
        return contnode
    contexts = [node.get("py:module"), node.get("py:class")]
    if node.get("py:module") and node.get("py:class"):
        contexts.append(f"{node['py:module']}.{node['py:class']}")
    contexts += _documenting(node)
    candidates = [target] + [f"{c}.{target}" for c in contexts if c]
    documented = _documented(env)
    domain = env.get_domain("py")
    for name in candidates:
        obj = _unwrap(_lookup(name))
        if _identifiable(obj) and id(obj) in documented:
            return domain.resolve_xref(  # type: ignore[no-any-return]
                env, node["refdoc"], app.builder, "obj", documented[id(obj)][0], node,
                contnode)
    # ``:attr:`weights``` in a class's docstring: its "Attributes" section documents the
    # fields and instance attributes on the class itself, so the reference goes to the class
    for name in candidates:
        owner, _, attr = name.rpartition(".")
        cls = _lookup(owner) if owner else _MISSING
        if isinstance(cls, type) and id(cls) in documented and _has_attribute(cls, attr):
            return domain.resolve_xref(  # type: ignore[no-any-return]
                env, node["refdoc"], app.builder, "obj", documented[id(cls)][0], node,
                contnode)
    return None


def setup(app: Sphinx) -> dict[str, Any]:
    # Sphinx 9's autodoc, documenting a pydantic model's members, walks its MRO and writes
    # annotations read from the source into ``pydantic.BaseModel.__annotations__``
    # (``_ensure_annotations_from_type_comments``); every pydantic model *defined* after that
    # fails ("The type annotation for `__pydantic_extra__` must be `dict[str, ...]`"). So
    # import every module of ours that defines pydantic models (and what they import) first.
    for name in PYDANTIC_MODULES:
        importlib.import_module(name)
    app.connect("missing-reference", _resolve)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
