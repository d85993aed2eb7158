"""Print ``name==version`` pins at the lower bound of every dependency of our packages.

``make test-lowest`` resolves the development environment with these pins as constraints, so
the packages' own dependencies sit at the lowest versions their ``pyproject.toml`` allows while
test tools float to whatever fits. Extras named in ``requirements-dev.in`` are included.

``--floor name==version`` raises one pin where a test tool, or another of our packages'
dependencies, needs more than the bound (``make test-lowest-core`` checks the bound itself). A
floor at or below the bound is an error, so floors cannot outlive a raised bound.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

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


def main(argv: list[str] | None = None) -> None:
    """Print the union of the lower bounds of the given ``pyproject.toml`` files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyprojects", nargs="+", type=Path)
    parser.add_argument("--floor", action="append", default=[], metavar="NAME==VERSION")
    args = parser.parse_args(argv)
    pins: dict[str, str] = {}
    for path in args.pyprojects:
        for name, version in lower_bounds(path).items():
            if name in pins and pins[name] != version:
                parser.exit(1, f"{name}: lower bounds differ between packages "
                               f"({pins[name]}, {version})\n")
            pins[name] = version
    for floor in args.floor:
        name, _, version = floor.partition("==")
        name = name.strip().lower().replace("_", "-")
        if name not in pins:
            parser.exit(1, f"--floor {floor}: {name} is not a dependency of these packages\n")
        if Version(version) <= Version(pins[name]):
            parser.exit(1, f"--floor {floor}: not above the bound {name}>={pins[name]}; drop it\n")
        pins[name] = version
    for name in sorted(pins):
        print(f"{name}=={pins[name]}")


if __name__ == "__main__":
    main()
