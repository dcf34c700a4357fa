"""Checking configured values against type annotations (free-form settings such as an objective's)."""

from typing import Any, Literal, Optional

import pytest

from avssl.value_types import as_typed, type_problem


@pytest.mark.parametrize(
    "value, annotation",
    [(1, float), (0.5, float), (3, int), (True, bool), ("x", str), (None, Optional[int]), (2, Optional[int]),
     (2.0, float | None), ([1, 2], list[int]), ([0.5, 1], list[float]), ("sum", Literal["mean", "sum"]),
     ({"a": 1}, Any), (object(), Any)],
)
def test_values_that_fit_their_annotation(value, annotation):
    assert type_problem(value, annotation) is None


@pytest.mark.parametrize(
    "value, annotation, example, problem",
    [
        ("abc", float, 0.05, "must be a float (e.g. 0.05)"),
        (True, float, 0.05, "must be a float (e.g. 0.05)"),  # a boolean is not a number
        (True, int, 4, "must be an integer (e.g. 4)"),
        (1.5, int, None, "must be an integer"),
        (None, float, 0.1, "must be a float (e.g. 0.1)"),  # null only for Optional
        (1, bool, False, "must be true or false (e.g. false)"),
        ("x", Optional[int], None, "must be an integer or null"),
        ([1, "a"], list[int], [1, 2], "must be a list of integers (e.g. [1, 2])"),
        (3, list[float], None, "must be a list of floats"),
        ("max", Literal["mean", "sum"], "mean", "must be one of ['mean', 'sum']"),
    ],
)
def test_values_that_do_not_fit_say_what_is_allowed(value, annotation, example, problem):
    assert type_problem(value, annotation, example) == problem


def test_values_are_shown_as_typed():
    assert [as_typed(v) for v in (None, True, False, 0.05, "abc", [1, 2])] == ["null", "true", "false", "0.05", "abc", "[1, 2]"]
