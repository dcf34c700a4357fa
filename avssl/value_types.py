"""Checking a configured value against a Python type annotation.

Sections with a schema are typed by OmegaConf; free-form settings (an objective's keyword
arguments) are checked here against the annotation of the parameter they are passed to, with the
same rules: an integer is accepted for a float, a boolean is not a number, and None (``null``) is
accepted only for an ``Optional`` parameter. Annotations this module does not know (``Any``, a
class) accept any value: the receiving ``__init__`` still checks it.

Examples:
    >>> type_problem("abc", float, example=0.05)
    'must be a float (e.g. 0.05)'
    >>> type_problem(3, float) is None
    True
"""

from __future__ import annotations

import types
from typing import Any, Literal, Optional, Union, get_args, get_origin

_NOUNS: dict[type, str] = {bool: "true or false", int: "an integer", float: "a float", str: "a string"}


def _describe(annotation: Any) -> Optional[str]:
    """What a value of `annotation` is, in words (None: an annotation `_matches` does not check)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation in _NOUNS:
        return _NOUNS[annotation]
    if origin is Literal:
        return f"one of {list(args)}"
    if origin is list:
        element = _describe(args[0]) if args else None
        return f"a list of {_plural(element)}" if element else "a list"
    if origin in (Union, types.UnionType):  # only reached when no member matched, so each is described
        words = [_describe(arg) for arg in args if arg is not type(None)]
        return " or ".join([*words, "null"] if type(None) in args else words)
    return None


def _plural(noun: str) -> str:
    return {"true or false": "true/false values"}.get(noun, noun.removeprefix("a ").removeprefix("an ") + "s")


def _matches(value: Any, annotation: Any) -> bool:
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin is Literal:
        return value in args
    if origin in (Union, types.UnionType):
        return any(value is None if arg is type(None) else _matches(value, arg) for arg in args)
    if origin is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value) if args else isinstance(value, list)
    return True  # not a checked annotation (Any, a class): the receiver checks it


def as_typed(value: Any) -> str:
    """`value` as a user types it in a recipe or override: ``null``, ``true``, ``0.05``, ``abc``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def type_problem(value: Any, annotation: Any, example: Any = None) -> Optional[str]:
    """None if `value` fits `annotation`, else what it must be (``"must be a float (e.g. 0.05)"``).

    Args:
        value: a configured value (plain YAML data: bool, int, float, str, None, list).
        annotation: the resolved type annotation, e.g. ``float``, ``Optional[int]``, ``list[int]``,
            ``Literal["mean", "sum"]``.
        example: a valid value quoted in the message (e.g. the parameter's default); None: none.
    """
    if _matches(value, annotation):
        return None
    described = _describe(annotation)
    hint = f" (e.g. {as_typed(example)})" if example is not None and get_origin(annotation) is not Literal else ""
    return f"must be {described}{hint}"
