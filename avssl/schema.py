"""Declarative value constraints for configuration dataclasses.

A constraint lives next to the field it guards, as dataclass field metadata::

    lr: float = field(default=1e-4, metadata=positive())

`avssl.config.load_config` walks a config tree and reports the first violated constraint with the
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


def each(element: dict[str, Check], *, length: int) -> dict[str, Check]:
    """The value must be a list of `length` elements, each satisfying the constraint `element`.

    Examples:
        >>> betas: list[float] = field(default_factory=lambda: [0.9, 0.999],
        ...                            metadata=each(in_range(0.0, 1.0, include_high=False), length=2))
    """
    element_check = element["check"]

    def check(v: Any) -> str | None:
        if len(v) != length:
            return f"must be a list of {length} values, got {len(v)}"
        for i, x in enumerate(v):
            problem = element_check(x)
            if problem:
                return f"element {i} ({x}) {problem}"
        return None

    return _constraint(check)


def min_max(element: dict[str, Check] | None = None) -> dict[str, Check]:
    """The value must be a range ``[min, max]``: 2 values, min <= max, each satisfying `element` (if given).

    Examples:
        >>> scale: list[float] = field(default_factory=lambda: [1.0, 1.0],
        ...                            metadata=min_max(in_range(0.0, 1.0, include_low=False)))
    """
    element_check = element["check"] if element is not None else None

    def check(v: Any) -> str | None:
        if len(v) != 2:
            return f"must be [min, max], got {len(v)} values"
        for name, x in zip(("min", "max"), v):
            problem = element_check(x) if element_check is not None else None
            if problem:
                return f"{name} ({x}) {problem}"
        if v[0] > v[1]:
            return f"min {v[0]} is above max {v[1]}; give [min, max] with min <= max"
        return None

    return _constraint(check)


def count_or_fraction() -> dict[str, Check]:
    """The value must be a whole count >= 0 or a fraction in [0.0, 1.0] (Lightning's ``limit_*_batches``)."""

    def check(v: Any) -> str | None:
        if isinstance(v, int) and not isinstance(v, bool):
            return None if v >= 0 else "must be a count >= 0 or a fraction in [0.0, 1.0]"
        if isinstance(v, float):
            return None if 0.0 <= v <= 1.0 else "a fraction must be in [0.0, 1.0] (give a whole number for a count)"
        return "must be a count >= 0 (e.g. 100) or a fraction in [0.0, 1.0] (e.g. 0.25)"

    return _constraint(check)


def flag_or_count() -> dict[str, Check]:
    """The value must be true, false or a whole count >= 0 (Lightning's ``fast_dev_run``)."""

    def check(v: Any) -> str | None:
        if isinstance(v, bool) or (isinstance(v, int) and v >= 0):
            return None
        return "must be true, false or a number of batches >= 0"

    return _constraint(check)


def satisfies(check: Check) -> dict[str, Check]:
    """The value must pass `check`, which returns None or what is wrong (for checks that need a library)."""
    return _constraint(check)
