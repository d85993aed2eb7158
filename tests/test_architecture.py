"""The layering rules of the packages, checked on their source (no imports run).

- No import circles between modules (lazy imports inside functions count too).
- No module imports another module's private name (``from m import _x``), nor a private
  module of a package it does not belong to (``bgem3.index._store`` outside ``bgem3.index``).
- No code touches a private attribute of an object that its own module does not define
  (``encoder._module`` in the training code; ``self._x`` is always allowed).
- No core module is over 800 lines.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "packages/bgem3/src", ROOT / "packages/langchain-bgem3/src",
           ROOT / "packages/llama-index-bgem3/src"]
OURS = ("bgem3", "langchain_bgem3", "llama_index.embeddings.bgem3",
        "llama_index.sparse_embeddings.bgem3", "llama_index.postprocessor.bgem3",
        "llama_index.retrievers.bgem3")


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    found = {}
    for src in SOURCES:
        for path in sorted(src.rglob("*.py")):
            parts = list(path.relative_to(src).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join(parts)
            found[name] = (path, ast.parse(path.read_text(encoding="utf-8")))
    return found


MODULES = _modules()


def _ours(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in OURS)


def _package(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _imports(module: str, path: Path, tree: ast.Module) -> Iterator[tuple[str, str, int]]:
    """``(imported module, imported name or "", line)`` for each import of our code."""
    package = _package(module, path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _ours(alias.name):
                    yield alias.name, "", node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if not _ours(base):
                continue
            for alias in node.names:
                if f"{base}.{alias.name}" in MODULES:  # a submodule, imported by name
                    yield f"{base}.{alias.name}", "", node.lineno
                else:
                    yield base, alias.name, node.lineno


def _private(part: str) -> bool:
    return part.startswith("_") and not part.startswith("__")


def test_no_private_imports_across_modules() -> None:
    wrong = []
    for module, (path, tree) in MODULES.items():
        for target, name, line in _imports(module, path, tree):
            where = f"{path.relative_to(ROOT)}:{line}"
            if name and _private(name):
                wrong.append(f"{where} imports the private name {target}.{name}")
            parts = target.split(".")
            for i, part in enumerate(parts):
                if _private(part):
                    owner = ".".join(parts[:i])
                    if not (module == owner or module.startswith(owner + ".")):
                        wrong.append(f"{where} imports {target}, private to {owner}")
                    break
    assert not wrong, "\n".join(wrong)


def _defined_private_names(tree: ast.Module) -> set[str]:
    """Private names a module defines: functions, classes, attributes it assigns."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return {n for n in names if _private(n)}


# Private attributes of third-party objects that we use knowingly, each with its reason.
THIRD_PARTY = {
    "_client": "qdrant-client: QdrantClient._client tells local mode from a server",
    "_asdict": "NamedTuple's public API despite the underscore",
    "_getframe": "sys._getframe: the caller's frame for a warning's stacklevel",
}


def test_no_private_attributes_of_other_modules() -> None:
    wrong = []
    for module, (path, tree) in MODULES.items():
        own = _defined_private_names(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and _private(node.attr)):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            if node.attr in own or node.attr in THIRD_PARTY:
                continue
            wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} reads .{node.attr}, which "
                         f"{module} does not define")
    assert not wrong, "\n".join(wrong)


def test_no_import_circles() -> None:
    graph: dict[str, set[str]] = {}
    for module, (path, tree) in MODULES.items():
        targets = set()
        for target, _, _ in _imports(module, path, tree):
            if target in MODULES and target != module and not module.startswith(target + "."):
                targets.add(target)
        graph[module] = targets
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*trail[trail.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("bgem3")))
def test_core_modules_stay_small(module: str) -> None:
    path = MODULES[module][0]
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= 800, f"{path.relative_to(ROOT)} has {lines} lines"
