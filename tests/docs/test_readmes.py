"""The READMEs start a reader and send them on: short, self-contained, every link alive."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bgem3", "langchain-bgem3", "llama-index-bgem3")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_root_readme_is_short_and_its_relative_links_resolve() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    for target in LINK.findall(text):
        if not target.startswith(("https://", "http://", "#")):
            assert (ROOT / target.split("#")[0]).exists(), target


@pytest.mark.parametrize("package", PACKAGES)
def test_package_readme_fits_pypi(package: str) -> None:
    text = (ROOT / "packages" / package / "README.md").read_text(encoding="utf-8")
    assert 40 <= len(text.splitlines()) <= 60
    links = LINK.findall(text)
    assert links and all(t.startswith("https://") for t in links), links
    # links into the repository ([project.urls] Repository) point at files that exist
    pyproject = tomllib.loads((ROOT / "packages" / package / "pyproject.toml").read_text("utf-8"))
    prefix = pyproject["project"]["urls"]["Repository"].rstrip("/") + "/blob/main/"
    assert any(t.startswith(prefix) for t in links)
    for target in links:
        if target.startswith(prefix):
            assert (ROOT / target.removeprefix(prefix).split("#")[0]).exists(), target
