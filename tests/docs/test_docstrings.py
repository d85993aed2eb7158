"""Docstrings fit for a reference: every public name, method and CLI flag says what it is.

The public names are those of the API-coverage test (the ``__all__`` of ``bgem3``, of its
public modules and of the adapter packages). Each must have a docstring (a constant or alias
its attribute docstring, the string literal under the assignment that autodoc reads), and so
must the public methods and properties a public class defines itself; no docstring may hold a
placeholder (``TODO``, ``FIXME``, ``XXX``, ``TBD``, or ``...`` standing for missing text,
outside a doctest), and the first line of a constant's or attribute's docstring must not read
as a type to napoleon (``"Text: more text"`` renders as the type ``Text``). Every flag and
argument of every ``bgem3`` command has a help text.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import inspect
import re
from collections.abc import Iterator
from typing import Any

import pytest
from sphinx.ext.napoleon import Config
from sphinx.ext.napoleon.docstring import GoogleDocstring
from sphinx.pycode import ModuleAnalyzer

from tests.docs.test_api_coverage import MODULES, origin, public_names

PLACEHOLDER = re.compile(r"\b(?:TODO|FIXME|XXX|TBD)\b")
# "..." standing for missing text: a line of its own, or ending a line of prose ("Encode
# the texts..."); "(...)" in a call, "[...]" in a shape and doctest prompts are real text
ELLIPSIS_PROSE = re.compile(r"(?:^|\w)\.\.\.$")


def placeholder(doc: str) -> str | None:
    """The first placeholder line of a docstring, outside doctests and literal blocks."""
    in_example = False
    for line in inspect.cleandoc(doc).splitlines():
        text = line.strip()
        if text.startswith(">>>"):
            in_example = True
        elif not text:
            in_example = False
        if in_example:
            continue
        if PLACEHOLDER.search(text) or ELLIPSIS_PROSE.search(text):
            return text
    return None


def test_placeholders_are_told_from_real_text() -> None:
    assert placeholder("TODO: say what this does.") == "TODO: say what this does."
    assert placeholder("Encode the texts...") == "Encode the texts..."
    assert placeholder("Scores.\n\n...\n") == "..."
    assert placeholder("Scores ``model(...)``; shape ``[n, ...]``.") is None
    assert placeholder("Example:\n    >>> for x in []:\n    ...     pass\n    ...\n") is None
    assert placeholder("The XXL model, TODOS and to-dos.") is None


def read_as_type(doc: str, what: str = "data") -> str | None:
    """The type napoleon reads from the first line of a data or attribute docstring, if any."""
    lines = str(GoogleDocstring(inspect.cleandoc(doc), Config(), what=what, name="x"))
    return next((line.removeprefix(":type:").strip() for line in lines.splitlines()
                 if line.startswith(":type:")), None)


def test_a_colon_in_the_first_line_is_caught() -> None:
    assert read_as_type("Tokens in one row: short texts end to end.") == "Tokens in one row"
    assert read_as_type("Kept; the default lives in :data:`DEFAULT_SEARCH`.") is None
    assert read_as_type("The device (``\"cuda:1\"``).\n\nMore: here.") is None


def _attribute_docs(module: str) -> dict[tuple[str, str], list[str]]:
    return ModuleAnalyzer.for_module(module).find_attr_docs()


def _definitions() -> Iterator[tuple[str, str, str]]:
    """``(public name, defining module, name there)`` for each public object, once."""
    seen = set()
    for module, name in public_names():
        where = origin(module, name)
        if where not in seen:
            seen.add(where)
            yield f"{module}.{name}", *where


def _docstring(module: str, name: str) -> str | None:
    """The docstring autodoc shows for ``module.name`` (a module, class, function or data)."""
    if not name:  # a public submodule named in a package's __all__
        return importlib.import_module(module).__doc__
    obj = getattr(importlib.import_module(module), name)
    if inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj):
        return obj.__doc__
    lines = _attribute_docs(module).get(("", name))
    return "\n".join(lines) if lines else None


def _is_data(module: str, name: str) -> bool:
    if not name:
        return False
    obj = getattr(importlib.import_module(module), name)
    return not (inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj))


def _members(cls: type) -> Iterator[tuple[str, Any]]:
    """The public methods and properties ``cls`` defines itself (not inherited ones)."""
    for attr, value in vars(cls).items():
        if attr.startswith("_"):
            continue
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if inspect.isfunction(value) or isinstance(value, (property,
                                                           functools.cached_property)):
            yield attr, value


def _class_problems(cls: type, public: str) -> Iterator[str]:
    for attr, member in _members(cls):
        # an override without its own docstring shows the one it overrides (autodoc's
        # inherited docstrings), which must then exist
        doc = member.__doc__ or next(
            (vars(base)[attr].__doc__ for base in cls.__mro__[1:]
             if attr in vars(base) and vars(base)[attr].__doc__), None)
        if not doc or not doc.strip():
            yield f"{public}.{attr}: no docstring"
        elif found := placeholder(doc):
            yield f"{public}.{attr}: placeholder {found!r}"


def _problems() -> Iterator[str]:
    for public, module, name in _definitions():
        doc = _docstring(module, name)
        if not doc or not doc.strip():
            yield f"{public}: no docstring"
            continue
        if found := placeholder(doc):
            yield f"{public}: placeholder {found!r}"
        if _is_data(module, name) and (found := read_as_type(doc)):
            yield f"{public}: napoleon reads {found!r} as its type (no colon in line 1)"
        obj = getattr(importlib.import_module(module), name) if name else None
        if inspect.isclass(obj):
            yield from _class_problems(obj, public)
            for (owner, attr), lines in _attribute_docs(module).items():
                if owner == name and not attr.startswith("_") and (
                        found := read_as_type("\n".join(lines), "attribute")):
                    yield (f"{public}.{attr}: napoleon reads {found!r} as its type "
                           "(no colon in line 1)")


def test_the_public_surface_is_documented() -> None:
    found = list(_problems())
    assert not found, f"{len(found)} docstring problem(s):\n" + "\n".join(found)


def test_a_member_without_a_docstring_is_caught() -> None:
    class Base:
        def inherited(self) -> None:
            """Documented once, on the base."""

    class Public(Base):
        """A public class."""

        def inherited(self) -> None:  # shows the base's docstring
            pass

        def undocumented(self) -> None:
            pass

        @property
        def size(self) -> int:
            """TODO."""
            return 0

        def _private(self) -> None:
            pass

    assert sorted(_class_problems(Public, "Public")) == [
        "Public.size: placeholder 'TODO.'", "Public.undocumented: no docstring"]


def test_constants_are_read_with_their_attribute_docstrings() -> None:
    assert _docstring("bgem3.scoring", "RRF_K")
    assert any(m.startswith("langchain_bgem3") for m in MODULES)


def _actions(parser: argparse.ArgumentParser, prog: str) -> Iterator[tuple[str, argparse.Action]]:
    """Every action of the parser and of each subcommand's, named by their command."""
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            helped = {choice.dest: choice for choice in action._choices_actions}
            for command, sub in action.choices.items():
                if command in helped:
                    yield f"{prog} {command}", helped[command]
                else:
                    yield f"{prog} {command}", argparse.Action([], command, help=None)
                yield from _actions(sub, f"{prog} {command}")
            continue
        yield prog, action


def test_every_cli_flag_has_a_help_text() -> None:
    from bgem3.cli import build_parser

    actions = list(_actions(build_parser(), "bgem3"))
    assert any(prog == "bgem3 search" for prog, _ in actions)
    empty = [f"{prog}: {'/'.join(action.option_strings) or action.dest}"
             for prog, action in actions
             if action.help is not argparse.SUPPRESS and not (action.help or "").strip()]
    assert not empty, f"{len(empty)} CLI argument(s) without help: {', '.join(empty)}"


@pytest.mark.parametrize("help_text", ["", "  ", None])
def test_an_empty_help_is_caught(help_text: str | None) -> None:
    parser = argparse.ArgumentParser(prog="x")
    parser.add_argument("--flag", help=help_text)
    (_, action), = _actions(parser, "x")
    assert not (action.help or "").strip()
