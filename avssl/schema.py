"""Declarative value constraints for configuration dataclasses.

A constraint lives next to the field it guards, as dataclass field metadata::

    lr: float = field(default=1e-4, metadata=in_range(0.0, 1000.0, include_low=False))

Every numeric field declares a range with finite ends (``metadata["range"]``; a test walks the
schema to keep it so), which also refuses ``nan`` and ``inf``. `first_violation` walks a config
tree and returns the first violated constraint with the full key path; `avssl.config.load_config`
reports it as ``optim.lr=inf: must be a finite number in (0.0, 1000.0]; set it ...``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields, is_dataclass
from typing import Any, Optional

Check = Callable[[Any], "str | None"]
Range = tuple[float, float]


def _constraint(check: Check, bounds: Optional[Range] = None) -> dict[str, Any]:
    return {"check": check} if bounds is None else {"check": check, "range": bounds}


def _typed(bound: float) -> str:
    """A bound as a user may type it: large integers with YAML's ``_`` separators (``1_000_000``)."""
    return f"{bound:_}" if isinstance(bound, int) and abs(bound) >= 10_000 else str(bound)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def non_finite(value: Any) -> bool:
    """Whether `value` is, or (a list) holds, a float ``nan`` or ``inf``."""
    values = value if isinstance(value, (list, tuple)) else [value]
    return any(isinstance(v, float) and not math.isfinite(v) for v in values)


def in_range(low: float, high: float, *, include_low: bool = True, include_high: bool = True,
             also: Mapping[Any, str] | None = None, hint: str = "") -> dict[str, Any]:
    """The value must be a finite number in [low, high] (either end may be open).

    Args:
        low, high: the ends; both finite, so that ``nan`` and ``inf`` are refused.
        include_low, include_high: whether each end is allowed.
        also: special values allowed besides the range, with their meaning (e.g. ``{-1: "no limit"}``).
        hint: why the bounds are where they are, quoted after them (e.g. which memory they protect).

    Examples:
        >>> in_range(0, 256, hint="worker processes")["check"](1000)
        'must be in [0, 256] (worker processes)'
    """
    left = "[" if include_low else "("
    right = "]" if include_high else ")"
    extra = dict(also or {})
    special = " or ".join(f"{v} ({meaning})" for v, meaning in extra.items())
    interval = f"{left}{_typed(low)}, {_typed(high)}{right}"
    expected = f"{special} or in {interval}" if special else f"in {interval}"
    why = f" ({hint})" if hint else ""

    def check(v: Any) -> str | None:
        if not _is_number(v):
            return f"must be a number {expected}{why}"
        if v in extra:
            return None
        if not math.isfinite(v):
            return f"must be a finite number {expected}{why}"
        above = v >= low if include_low else v > low
        below = v <= high if include_high else v < high
        return None if above and below else f"must be {expected}{why}"

    return _constraint(check, (low, high))


def one_of(choices: Iterable[Any], *, hint: str = "") -> dict[str, Any]:
    """The value must be one of `choices`; `hint` is quoted after them (e.g. what the others are for)."""
    allowed = list(choices)
    why = f" ({hint})" if hint else ""
    return _constraint(lambda v: None if v in allowed else f"must be one of {allowed}{why}")


def each(element: dict[str, Any], *, length: Optional[int] = None) -> dict[str, Any]:
    """The value must be a list (of `length` elements, if given), each satisfying the constraint `element`.

    Examples:
        >>> betas: list[float] = field(default_factory=lambda: [0.9, 0.999],
        ...                            metadata=each(in_range(0.0, 1.0, include_high=False), length=2))
    """
    element_check = element["check"]

    def check(v: Any) -> str | None:
        if not isinstance(v, (list, tuple)):
            return "must be a list" if length is None else f"must be a list of {length} values"
        if length is not None and len(v) != length:
            return f"must be a list of {length} values, got {len(v)}"
        for i, x in enumerate(v):
            problem = element_check(x)
            if problem:
                return f"element {i} ({x}) {problem}"
        return None

    return _constraint(check, element.get("range"))


def min_max(element: dict[str, Any]) -> dict[str, Any]:
    """The value must be a range ``[min, max]``: 2 values, min <= max, each satisfying `element`.

    Examples:
        >>> scale: list[float] = field(default_factory=lambda: [1.0, 1.0],
        ...                            metadata=min_max(in_range(0.0, 1.0, include_low=False)))
    """
    element_check = element["check"]

    def check(v: Any) -> str | None:
        if not isinstance(v, (list, tuple)):
            return "must be [min, max]"
        if len(v) != 2:
            return f"must be [min, max], got {len(v)} values"
        for name, x in zip(("min", "max"), v):
            problem = element_check(x)
            if problem:
                return f"{name} ({x}) {problem}"
        if v[0] > v[1]:
            return f"min {v[0]} is above max {v[1]}; give [min, max] with min <= max"
        return None

    return _constraint(check, element.get("range"))


def count_or_fraction(max_count: int) -> dict[str, Any]:
    """The value must be a whole count in [1, max_count] or a fraction in (0.0, 1.0] (Lightning's
    ``limit_*_batches``); 0 is refused: no batch would train."""
    expected = f"a count in [1, {_typed(max_count)}] (e.g. 100) or a fraction in (0.0, 1.0] (e.g. 0.25)"

    def check(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return f"must be {expected}"
        if v == 0:
            return f"must be {expected}; 0 would train on no batch"
        fits = 1 <= v <= max_count if isinstance(v, int) else 0.0 < v <= 1.0
        return None if fits else f"must be {expected}"

    return _constraint(check, (0, max_count))


def flag_or_count(max_count: int) -> dict[str, Any]:
    """The value must be true, false or a whole count in [0, max_count] (Lightning's ``fast_dev_run``)."""

    def check(v: Any) -> str | None:
        if isinstance(v, bool) or (isinstance(v, int) and 0 <= v <= max_count):
            return None
        return f"must be true, false or a number of batches in [0, {_typed(max_count)}]"

    return _constraint(check, (0, max_count))


def satisfies(check: Check, bounds: Optional[Range] = None) -> dict[str, Any]:
    """The value must pass `check`, which returns None or what is wrong (for checks that need a
    library, or that relate values); `bounds` declares the numeric range `check` enforces."""
    return _constraint(check, bounds)


def first_violation(node: Any, path: str = "") -> Optional[tuple[str, Any, str]]:
    """``(key, value, problem)`` of the first field of the dataclass `node` (and the dataclasses
    below it, also inside dicts) whose value breaks its constraint or is not finite; None: none.

    Examples:
        >>> first_violation(OptimConfig(lr=float("inf")), "optim")
        ('optim.lr', inf, 'must be a finite number in (0.0, 1000.0]')
    """
    for f in fields(node):
        value = getattr(node, f.name)
        key = f"{path}.{f.name}" if path else f.name
        check = f.metadata.get("check")
        problem = check(value) if check is not None and value is not None else None
        if problem is None and non_finite(value):
            problem = "must be a finite number"
        if problem:
            return key, value, problem
        children = value.items() if isinstance(value, dict) else [(None, value)]
        for name, child in children:
            if is_dataclass(child):
                found = first_violation(child, key if name is None else f"{key}.{name}")
                if found:
                    return found
    return None
