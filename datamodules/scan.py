"""Find the usable clips among a list of files, before training starts.

Each file's headers are read once (`probe_file`); files that cannot give a clip are skipped and
recorded in the `DataReport` with their reason, or, in strict mode, stop the run.
"""

from __future__ import annotations

import os
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from datamodules.decode import clip_starts, probe_file
from datamodules.errors import ClipError, StrictDataError
from datamodules.policies import DataPolicies
from datamodules.preprocessing import Preprocessing
from datamodules.report import DataReport

log = logging.getLogger(__name__)

_PROGRESS_EVERY = 1000  # files between progress lines in the log


def file_clip_starts(path: str | bytes | os.PathLike, pre: Preprocessing,
                     policies: DataPolicies = DataPolicies()) -> list[float]:
    """The clips of one file, checked as the scan checks them (headers only).

    Args:
        path: a video file.
        pre: gives the clip length.
        policies: which files without audio or shorter than a clip are kept.

    Returns:
        Clip start times in seconds (see `clip_starts`).

    Raises:
        ClipError: ``empty_file``, ``unreadable``, ``no_video``, ``no_audio`` or ``too_short``.
    """
    return clip_starts(probe_file(path), pre, policies)


def scan_files(paths: Sequence[str | Path], pre: Preprocessing, report: DataReport,
               strict: bool, policies: DataPolicies = DataPolicies()) -> list[tuple[str, float]]:
    """Probes each file and lists its clips (`file_clip_starts`).

    A file is usable when it has a video stream decord can open, and an audio stream and enough
    seconds covered by both streams for a clip as ``policies`` require (`clip_starts`). Skips are added to ``report``;
    ``report.files_seen`` and ``report.clips`` are increased.

    Args:
        paths: video files.
        pre: gives the clip length.
        report: where files, clips and skips are counted.
        strict: raise on the first bad file instead of skipping it.
        policies: which files without audio or shorter than a clip are kept.

    Returns:
        ``(path, start_s)`` for each usable clip, in the order of ``paths``.

    Raises:
        StrictDataError: with ``strict=True``, for the first bad file; it names the file.
    """
    clips: list[tuple[str, float]] = []
    skips_before = len(report.skipped)
    for number, path in enumerate(paths):
        if number and number % _PROGRESS_EVERY == 0:
            log.info("scanned %d/%d files", number, len(paths))
        path = str(path)
        report.files_seen += 1
        try:
            starts = file_clip_starts(path, pre, policies)
        except ClipError as err:
            if strict:
                raise StrictDataError(err.reason, err.detail, path) from err
            report.add_skip(path, err.reason, err.detail)
            log.debug("skipping %s", err)
            continue
        clips += [(path, start) for start in starts]
        report.clips += len(starts)
    skipped = Counter(skip["reason"] for skip in report.skipped[skips_before:])
    log.debug("scanned %d files: %d clips, %d files skipped", len(paths), len(clips),
             sum(skipped.values()))
    if skipped:
        log.warning("skipped files by reason: %s; each is listed with its reason in %s",
                    ", ".join(f"{r}: {n}" for r, n in sorted(skipped.items())), report.location)
    return clips
