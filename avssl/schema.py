"""Declarative value constraints for configuration dataclasses.

A constraint lives next to the field it guards, as dataclass field metadata::

    lr: float = field(default=1e-4, metadata=positive())

`avssl.config.validate` walks a config tree and reports the first violated constraint with the
full key path (``optim.lr=-1.0: must be > 0``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

Check = Callable[[Any], "str | None"]


def _constraint(check: Check) -> dict[str, Check]:
    return {"check": check}


def positive() -> dict[str, Check]:
    """The value must be > 0."""
    return _constraint(lambda v: None if v > 0 else "must be > 0")


def non_negative() -> dict[str, Check]:
    """The value must be >= 0."""
    return _constraint(lambda v: None if v >= 0 else "must be >= 0")


def in_range(low: float, high: float, *, include_low: bool = True, include_high: bool = True) -> dict[str, Check]:
    """The value must lie in [low, high]; either end may be open."""
    left = "[" if include_low else "("
    right = "]" if include_high else ")"

    def check(v: Any) -> str | None:
        above = v >= low if include_low else v > low
        below = v <= high if include_high else v < high
        return None if above and below else f"must be in {left}{low}, {high}{right}"

    return _constraint(check)


def one_of(choices: Iterable[Any]) -> dict[str, Check]:
    """The value must be one of `choices`."""
    allowed = list(choices)
    return _constraint(lambda v: None if v in allowed else f"must be one of {allowed}")


def all_positive() -> dict[str, Check]:
    """Every element of a list must be > 0."""
    return _constraint(lambda v: None if all(x > 0 for x in v) else "every element must be > 0")
