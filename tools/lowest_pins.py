"""Print ``name==version`` pins at the lower bound of every dependency of our packages.

``make test-lowest`` resolves the development environment with these pins as constraints, so
the packages' own dependencies sit at the lowest versions their ``pyproject.toml`` allows while
test tools float to whatever fits. Extras named in ``requirements-dev.in`` are included.
"""

from __future__ import annotations

import sys
from pathlib import Path

from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

OURS = {"bgem3", "langchain-bgem3", "llama-index-bgem3"}


def lower_bounds(pyproject: Path) -> dict[str, str]:
    """Map each dependency (and optional dependency) to the version of its ``>=`` bound."""
    project = tomllib.loads(pyproject.read_text())["project"]
    specs = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        specs.extend(extra)
    pins: dict[str, str] = {}
    for text in specs:
        req = Requirement(text)
        name = req.name.lower().replace("_", "-")
        if name in OURS:
            continue
        for spec in req.specifier:
            if spec.operator in (">=", "=="):
                pins[name] = spec.version
    return pins


def main(paths: list[str]) -> None:
    """Print the union of the lower bounds of the given ``pyproject.toml`` files."""
    pins: dict[str, str] = {}
    for path in paths:
        for name, version in lower_bounds(Path(path)).items():
            if name in pins and pins[name] != version:
                sys.exit(f"{name}: lower bounds differ between packages ({pins[name]}, {version})")
            pins[name] = version
    for name in sorted(pins):
        print(f"{name}=={pins[name]}")


if __name__ == "__main__":
    main(sys.argv[1:])
