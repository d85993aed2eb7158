"""Every public name appears on a page of the API reference.

The public names are the ``__all__`` of ``bgem3``, of each of its public modules (no part of
the dotted name starts with ``_``) and of the two adapter packages. The pages are searched for
autodoc directives (``.. autoclass:: NAME``, also as MyST ``{autoclass}`` fences);
``automodule`` without ``:no-members:`` documents its module's whole ``__all__``. A name is
covered when the object it names is documented under any of its public names
(``bgem3.index.HybridIndex`` by ``.. autoclass:: bgem3.HybridIndex``). Everything is read from
the source files (no import, no Sphinx build), so the test is fast and offline.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SOURCES = [ROOT / "packages/bgem3/src", ROOT / "packages/langchain-bgem3/src",
           ROOT / "packages/llama-index-bgem3/src"]
ROOTS = ("bgem3", "langchain_bgem3", "llama_index")

DIRECTIVE = re.compile(
    r"^[ \t]*(?:\.\.[ \t]+(?P<rst>auto\w+)::|```+\{(?P<myst>auto\w+)\})[ \t]+(?P<name>[\w.]+)"
    r"(?P<options>(?:\n[ \t]*:[\w-]+:.*)*)", re.MULTILINE)


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    found = {}
    for src in SOURCES:
        for path in sorted(src.rglob("*.py")):
            parts = list(path.relative_to(src).with_suffix("").parts)
            if parts[0] not in ROOTS:
                continue
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = (path, ast.parse(path.read_text(encoding="utf-8")))
    return found


MODULES = _modules()


def _is_public(module: str) -> bool:
    parts = module.split(".")
    return parts[-1] != "__main__" and not any(p.startswith("_") and not p.startswith("__")
                                               for p in parts)


def _all(module: str) -> list[str]:
    for node in MODULES[module][1].body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__"
                                                for t in node.targets):
            return list(ast.literal_eval(node.value))
    return []


def _package(module: str) -> str:
    path = MODULES[module][0]
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _defines(tree: ast.Module, name: str) -> bool:
    """Whether the module binds ``name`` itself (a def, a class or an assignment)."""
    for top in tree.body:
        for node in ast.walk(top) if isinstance(top, (ast.If, ast.Try)) else [top]:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if node.name == name:
                    return True
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(n, ast.Name) and n.id == name
                       for t in targets for n in ast.walk(t)):
                    return True
    return False


def origin(module: str, name: str, seen: frozenset[tuple[str, str]] = frozenset()
           ) -> tuple[str, str]:
    """Where ``module.name`` is defined, following imports (lazy ones in functions too)."""
    if module not in MODULES or (module, name) in seen:
        return module, name
    tree = MODULES[module][1]
    if _defines(tree, name):
        return module, name
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        base = node.module or ""
        if node.level:
            anchor = _package(module).split(".")
            anchor = anchor[: len(anchor) - node.level + 1]
            base = ".".join([*anchor, *([base] if base else [])])
        for alias in node.names:
            if (alias.asname or alias.name) == name:
                if f"{base}.{alias.name}" in MODULES:  # a submodule
                    return f"{base}.{alias.name}", ""
                return origin(base, alias.name, seen | {(module, name)})
    return module, name


def resolve(dotted: str) -> tuple[str, str]:
    """The definition a documented dotted name refers to."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        if module in MODULES:
            rest = parts[cut:]
            if not rest:
                return module, ""
            found = origin(module, rest[0])
            return (found[0], ".".join(filter(None, [found[1], *rest[1:]])))
    return dotted, ""


def public_names() -> Iterator[tuple[str, str]]:
    for module in MODULES:
        if _is_public(module):
            for name in _all(module):
                yield module, name


def directives(root: Path = DOCS) -> Iterator[tuple[Path, str, str, str]]:
    """``(page, directive, target, options)`` for every autodoc directive of the docs."""
    for page in sorted([*root.rglob("*.md"), *root.rglob("*.rst")]):
        if "_build" in page.parts:
            continue
        for match in DIRECTIVE.finditer(page.read_text(encoding="utf-8")):
            yield (page, match.group("rst") or match.group("myst"), match.group("name"),
                   match.group("options"))


def documented(root: Path = DOCS) -> set[tuple[str, str]]:
    covered = set()
    for _, kind, target, options in directives(root):
        covered.add(resolve(target))
        if kind == "automodule" and ":no-members:" not in options:
            covered |= {origin(target, name) for name in _all(target)}
    return covered


def missing(root: Path = DOCS) -> list[str]:
    covered = documented(root)
    return sorted(f"{module}.{name}" for module, name in public_names()
                  if origin(module, name) not in covered)


def test_the_public_surface_is_found() -> None:
    names = {f"{m}.{n}" for m, n in public_names()}
    assert {"bgem3.BGEM3", "bgem3.index.QdrantHybridIndex", "bgem3.train.finetune",
            "langchain_bgem3.BGEM3HybridRetriever",
            "llama_index.retrievers.bgem3.BGEM3HybridRetriever"} <= names
    assert origin("bgem3", "BGEM3") == ("bgem3.encoder", "BGEM3")  # the lazy import
    assert origin("bgem3.index", "HybridIndex") == ("bgem3.index.embedded", "HybridIndex")


def test_every_public_name_is_on_a_reference_page() -> None:
    absent = missing()
    assert not absent, (f"{len(absent)} public name(s) appear on no page of docs/reference "
                        f"(add an autodoc directive): {', '.join(absent)}")


def test_every_directive_names_something_that_exists() -> None:
    wrong = [f"{page.relative_to(ROOT)}: {kind} {target}"
             for page, kind, target, _ in directives()
             if resolve(target)[0] not in MODULES
             or (resolve(target)[1] and not _defines(MODULES[resolve(target)[0]][1],
                                                    resolve(target)[1].split(".")[0]))]
    assert not wrong, wrong


def test_every_directive_is_needed() -> None:
    """Each object is documented once: deleting any directive uncovers a public name."""
    public = {origin(module, name) for module, name in public_names()}
    found = []
    for page, kind, target, options in directives():
        if kind == "automodule" and ":no-members:" in options:
            continue  # a module's own docstring: it documents no name
        names = {resolve(target)}
        if kind == "automodule":
            names |= {origin(target, name) for name in _all(target)}
        found.append((f"{page.relative_to(ROOT)}: {kind} {target}", names & public))
    count = Counter(name for _, names in found for name in names)
    redundant = [where for where, names in found if all(count[n] > 1 for n in names)]
    assert not redundant, f"documented twice, or not public: {redundant}"


def test_a_deleted_directive_is_caught(tmp_path: Path) -> None:
    page = DOCS / "reference" / "scoring.md"
    text = page.read_text(encoding="utf-8")
    assert ".. autofunction:: bgem3.maxsim" in text
    mirror = tmp_path / "docs"
    for other in DOCS.rglob("*.md"):
        if "_build" not in other.parts:
            copy = mirror / other.relative_to(DOCS)
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_text(other.read_text(encoding="utf-8"), encoding="utf-8")
    (mirror / "reference" / "scoring.md").write_text(
        text.replace(".. autofunction:: bgem3.maxsim\n", ""), encoding="utf-8")
    assert missing(mirror) == ["bgem3.maxsim", "bgem3.scoring.maxsim"]
