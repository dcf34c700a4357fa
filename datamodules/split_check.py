"""Is a labeled train/test split fit for a linear probe?

A probe on a degenerate split still prints a figure, and the figure means nothing: with one class
in the test split every prediction of that class is right (100%), and a class that has test clips
but no train clip can never be predicted. Such splits are refused with a message that names the
classes and where their skipped files are listed. A small test split is allowed, with a warning:
top-1 moves in steps of 1 / (test clips), so with fewer than `MIN_TEST_CLIPS` clips one clip
moves it by more than 5 points (docs/export.md).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

from datamodules.errors import DataSourceError

log = logging.getLogger(__name__)

MIN_TEST_CLIPS = 20  # fewer test clips than this: warn that the figure is coarse
_NAMED = 5  # class names quoted in a message; the rest are counted


def _names(names: Sequence[str]) -> str:
    more = f" and {len(names) - _NAMED} more" if len(names) > _NAMED else ""
    return ", ".join(names[:_NAMED]) + more


def check_split(train_labels: Sequence[int], test_labels: Sequence[int], class_names: Sequence[str],
                source: str, report_location: str) -> None:
    """Refuses a split a linear probe cannot give a meaningful figure on.

    Args:
        train_labels: the label of each usable train clip.
        test_labels: the label of each usable test clip.
        class_names: the name of each label.
        source: the labeled data as the user set it, e.g. ``"probe.data=/labeled"``.
        report_location: where the skipped files are listed, e.g. ``"probe.json ('skipped')"``.

    Raises:
        DataSourceError: fewer than 2 classes have usable clips in the train or in the test
            split, or a class has test clips but no usable train clip.
    """
    skipped = f"skipped files are listed in {report_location}"
    for split, labels in (("train", train_labels), ("test", test_labels)):
        present = sorted(set(labels))
        if len(present) < 2:
            absent = [name for label, name in enumerate(class_names) if label not in present]
            raise DataSourceError(
                f"{source}: the {split} split has usable clips of {len(present)} class(es) "
                f"({_names([class_names[label] for label in present]) or 'none'}), a linear probe needs at "
                f"least 2; no usable {split} clip for: {_names(absent)} ({skipped}). Fix or replace "
                "those files, add labeled files, or remove the folders of classes you do not probe.")
    test_only = sorted(set(test_labels) - set(train_labels))
    if test_only:
        raise DataSourceError(
            f"{source}: class(es) {_names([class_names[label] for label in test_only])} have test clips but "
            f"no usable train clip, so the probe could never predict them ({skipped}). Add usable "
            "train files for them, or remove their folders from both splits.")


def warn_if_small(test_labels: Sequence[int], class_names: Sequence[str], source: str) -> None:
    """Logs a warning when the test split has fewer than `MIN_TEST_CLIPS` clips."""
    if len(test_labels) < MIN_TEST_CLIPS:
        counts = Counter(test_labels)
        per_class = ", ".join(f"{class_names[label]}: {n}" for label, n in sorted(counts.items()))
        log.warning("%s: the test split has only %d clips (%s), fewer than %d: top-1 moves in steps of "
                    "%.0f points, so small differences mean nothing; add labeled files or raise the test "
                    "fraction of a folder-per-class set.", source, len(test_labels), per_class, MIN_TEST_CLIPS,
                    100 / max(len(test_labels), 1))
