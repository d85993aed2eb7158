"""Command-line flags generated from a dataclass's fields, and the dataclass built back.

A field ``batch_size: int = 16`` becomes ``--batch-size`` (type ``int``, default 16); its
help is ``field.metadata["help"]``, its choices and metavar ``metadata["choices"]`` and
``metadata["metavar"]`` (a ``Literal`` annotation gives choices too). ``bool`` fields that
default to ``True`` get ``--x/--no-x``, the others ``--x``; ``X | None`` takes an ``X``;
``list[X]`` takes one or more. A field with ``metadata={"cli": False}`` gets no flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = ["add_field_flags", "flag_fields", "from_args"]

T = TypeVar("T")

_SCALARS = (str, int, float)


def flag_fields(cls: type[Any]) -> list[dataclasses.Field[Any]]:
    """The fields of the dataclass ``cls`` that have a flag."""
    return [f for f in dataclasses.fields(cls) if f.init and f.metadata.get("cli", True)]


def from_args(cls: type[T], args: argparse.Namespace) -> T:
    """An instance of ``cls`` from the parsed flags of :func:`add_field_flags`."""
    return cls(**{f.name: getattr(args, f.name) for f in flag_fields(cls)})


def add_field_flags(parser: argparse.ArgumentParser, cls: type[Any],
                    overrides: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Add one flag per field of the dataclass ``cls`` to ``parser``.

    Args:
        parser: The (sub)command's parser.
        cls: A dataclass.
        overrides: Per field name, keyword arguments of ``add_argument`` that replace the
            generated ones (``metavar``, ``choices``, ``type``, ``nargs``, ``default``,
            ``help``; ``None`` drops one), and ``"aliases"``: more option strings for the
            same flag.

    Raises:
        TypeError: A field of a type no flag can take (give it ``metadata={"cli": False}``).
    """
    hints = typing.get_type_hints(cls)
    for f in flag_fields(cls):
        override = dict((overrides or {}).get(f.name, {}))
        flags = [f"--{f.name.replace('_', '-')}", *override.pop("aliases", [])]
        kwargs = _kwargs(cls, f, hints[f.name])
        kwargs["help"] = str(f.metadata.get("help") or f"see {cls.__name__}.{f.name}"
                             ).replace("%", "%%")
        if "default" in override:
            kwargs.pop("required", None)
        kwargs.update(override)
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        shown = _shown(kwargs.get("default"), kwargs)
        if shown and "default" not in str(kwargs["help"]):
            kwargs["help"] = f"{kwargs['help']} (default: {shown})"
        parser.add_argument(*flags, dest=f.name, **kwargs)


def _kwargs(cls: type[Any], f: dataclasses.Field[Any], hint: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if f.default is not dataclasses.MISSING:
        kwargs["default"] = f.default
    elif f.default_factory is not dataclasses.MISSING:
        kwargs["default"] = f.default_factory()
    else:
        kwargs["required"] = True
    origin, members = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [m for m in members if m is not type(None)]
        if len(inner) == 1 and len(members) == 2 and inner[0] is not bool:
            hint = inner[0]
            origin, members = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        kwargs["action"] = (argparse.BooleanOptionalAction if kwargs.get("default")
                            else "store_true")
        kwargs.setdefault("default", False)
    elif origin is typing.Literal:
        kwargs["choices"] = list(members)
        kwargs["type"] = type(members[0])
    elif origin is list and len(members) == 1 and members[0] in _SCALARS:
        kwargs["nargs"] = "+"
        kwargs["type"] = members[0]
    elif hint in _SCALARS:
        kwargs["type"] = hint
    else:
        raise TypeError(f"{cls.__name__}.{f.name}: no command-line flag takes a {hint!r}; "
                        'give the field metadata={"cli": False}')
    for key in ("choices", "metavar"):
        if key in f.metadata:
            kwargs[key] = list(f.metadata[key]) if key == "choices" else f.metadata[key]
    return kwargs


def _shown(default: Any, kwargs: Mapping[str, Any]) -> str:
    """The default as the help text shows it (nothing for None, False and required flags)."""
    if default is None or isinstance(default, bool) or kwargs.get("required"):
        return ""
    if isinstance(default, (list, tuple)):
        return ("," if kwargs.get("nargs") is None else " ").join(map(str, default))
    return str(default)

