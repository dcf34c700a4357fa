"""Manifests: a CSV or JSONL file listing videos, with optional time windows and labels.

A manifest lets one file give several windows, and points at videos anywhere without a folder
layout. Each row is checked when the source is opened, so a typo stops the run at once with the
file and line; a listed video that is missing is not a manifest error (the decoder reports it
as ``unreadable``, like any bad file).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Optional

from datamodules.errors import DataSourceError
from datamodules.sources import VideoRef

COLUMNS = ("path", "start_s", "end_s", "label")
_EXAMPLE = {".csv": "a header row such as 'path,start_s,end_s,label'",
            ".jsonl": 'one JSON object per line, e.g. {"path": "a.mp4", "start_s": 0, "end_s": 10}'}


def read_manifest(path: str | Path, key: str = "data.source.path") -> list[VideoRef]:
    """The videos a ``.csv`` or ``.jsonl`` manifest lists, in its order.

    CSV has a header row (``path`` required; ``start_s``, ``end_s``, ``label`` optional; other
    columns ignored); empty cells mean "not given". JSONL has one object per line with the same
    keys (null means "not given"); blank lines are skipped. Both are UTF-8, a BOM is tolerated.
    Relative video paths are relative to the manifest's folder.

    Args:
        path: the manifest.
        key: the config key that names it, quoted in errors.

    Raises:
        DataSourceError: a missing ``path`` column, text that is not UTF-8, or a bad row:
            an empty path, a window that is not numbers with ``0 <= start_s < end_s``, a JSONL
            line that is not an object.
    """
    path = Path(path)
    rows = _csv_rows if path.suffix.lower() == ".csv" else _jsonl_rows
    where = f"{key}={path}"
    try:
        return [_video_ref(row, path.parent, f"{where}, line {line}") for line, row in rows(path, where)]
    except UnicodeDecodeError as err:
        raise DataSourceError(f"{where}: not UTF-8 text ({err}); save the manifest as UTF-8.") from None


def _csv_rows(path: Path, where: str) -> Iterator[tuple[int, Mapping[str, Any]]]:
    with open(path, encoding="utf-8-sig", newline="") as file:
        reader = csv.DictReader(file)
        if reader.fieldnames is None or "path" not in reader.fieldnames:
            raise DataSourceError(f"{where}, line 1: the header {reader.fieldnames or '(empty file)'} has no "
                                  f"'path' column; expected {_EXAMPLE['.csv']} (only path is required).")
        for row in reader:
            yield reader.line_num, row


def _jsonl_rows(path: Path, where: str) -> Iterator[tuple[int, Mapping[str, Any]]]:
    with open(path, encoding="utf-8-sig") as file:
        for line, text in enumerate(file, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as err:
                raise DataSourceError(f"{where}, line {line}: not valid JSON ({err.msg}); expected "
                                      f"{_EXAMPLE['.jsonl']}.") from None
            if not isinstance(row, dict):
                raise DataSourceError(f"{where}, line {line}: {text.strip()[:80]} is not a JSON object; "
                                      f"expected {_EXAMPLE['.jsonl']}.")
            yield line, row


def _video_ref(row: Mapping[str, Any], folder: Path, where: str) -> VideoRef:
    video = row.get("path")
    if not isinstance(video, str) or not video:
        raise DataSourceError(f"{where}: path={video!r}; expected the video file (absolute, or relative "
                              "to the manifest's folder).")
    start_s = _seconds(row, "start_s", where)
    end_s = _seconds(row, "end_s", where)
    if start_s is not None and start_s < 0:
        raise DataSourceError(f"{where}: start_s={start_s} is negative; expected seconds >= 0.")
    if end_s is not None and end_s <= (start_s or 0.0):
        raise DataSourceError(f"{where}: end_s={end_s} is not after start_s={start_s or 0.0}; expected "
                              "end_s > start_s (or leave end_s empty for the file's end).")
    return VideoRef(str(folder / video), start_s, end_s, _label(row, where))


def _seconds(row: Mapping[str, Any], column: str, where: str) -> Optional[float]:
    value = row.get(column)
    if value is None or value == "":
        return None
    try:
        seconds = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        seconds = math.nan
    if not math.isfinite(seconds):
        raise DataSourceError(f"{where}: {column}={value!r} is not a number; expected seconds, or an empty "
                              f"value for the file's {'start' if column == 'start_s' else 'end'}.")
    return seconds


def _label(row: Mapping[str, Any], where: str) -> Optional[str]:
    label = row.get("label")
    if label is None or label == "":
        return None
    if isinstance(label, (dict, list, bool)):
        raise DataSourceError(f"{where}: label={label!r}; expected a string or a number.")
    return str(label)
