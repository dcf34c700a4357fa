"""Errors raised by the data pipeline.

A `ClipError` is a problem with one file (it cannot be read, it has no audio, ...). The data
modules catch it, skip the file and record it in the `DataReport`; with ``data.strict=true`` the
first one stops the run as a `StrictDataError`. The other errors are problems with the whole data
source and always stop the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

# The fixed set of skip reasons. Each is recorded in data_report.json; docs/data.md explains them.
REASONS: dict[str, str] = {
    "empty_file": "the file is empty",
    "unreadable": "the file cannot be opened as a video (not a media file, unsupported or truncated)",
    "no_video": "the file has no video stream",
    "no_audio": "the file has no audio stream",
    "too_short": "the file (or its audio track) is shorter than a clip allows (data.policies.short, min_clip_fraction)",
    "decode_failed": "the file opened but decoding the clip failed (corrupt data)",
    "timeout": "decoding the file took longer than data.policies.file_timeout_s",
    "decoder_crashed": "the decoder process died on this file (a crash inside FFmpeg or decord)",
}


class ClipError(Exception):
    """One file cannot give a usable clip.

    Attributes:
        reason: a key of `REASONS`, e.g. ``"no_audio"``.
        detail: what exactly went wrong, e.g. the decoder's message.
        path: the file, when known.

    Examples:
        >>> str(ClipError("no_audio", "0 audio streams", path="a.mp4"))
        'a.mp4: the file has no audio stream (0 audio streams)'
    """

    def __init__(self, reason: str, detail: str, path: str | Path = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown skip reason {reason!r}; expected one of {sorted(REASONS)}")
        self.reason = reason
        self.detail = detail
        self.path = str(path)
        super().__init__(reason, detail, self.path)

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{where}{REASONS[self.reason]} ({self.detail})"


class StrictDataError(ClipError):
    """A bad file met with ``data.strict=true``: the run stops instead of skipping it."""

    def __str__(self) -> str:
        return (
            f"{super().__str__()}. Set data.strict=false to skip such files; skipped files are "
            "listed with their reason in data_report.json."
        )


class NoUsableClipsError(ValueError):
    """A data source in which not a single clip could be used.

    Args:
        source: the folder, manifest or shards.
        files_seen: video files found there.
        counts_by_reason: skips per reason.
        extensions: the file endings that counted as videos.
        key: the config key or option that set ``source`` (``data.root``, ``probe.data``,
            ``--data``, ...): the message tells the user to change it.
        extensions_key: the key or option that sets ``extensions``, or None where there is none.

    Examples:
        >>> str(NoUsableClipsError("/v", 0, {}, [".mp4"], key="probe.data", extensions_key=None))
        'No usable clip in /v: no video file (.mp4) was found under it; point probe.data at a folder of videos.'
    """

    def __init__(self, source: str | Path, files_seen: int, counts_by_reason: Mapping[str, int],
                 extensions: tuple[str, ...] | list[str], *, key: str,
                 extensions_key: str | None) -> None:
        if files_seen == 0:
            found = f"no video file ({', '.join(extensions)}) was found under it"
            fix = f"point {key} at a folder of videos"
            if extensions_key:
                fix += f", or add the extension to {extensions_key}"
        else:
            reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(counts_by_reason.items()))
            found = f"{files_seen} video file(s) were found but all were skipped ({reasons})"
            fix = ("fix or replace those files (each skip reason is explained in docs/data.md), "
                   f"or point {key} at another folder")
        super().__init__(f"No usable clip in {source}: {found}; {fix}.")


class DataPathError(FileNotFoundError):
    """A configured data path that does not exist or is not a folder.

    ``fix`` replaces the default advice (set the key to an existing folder of videos) where the key
    wants something else, e.g. a manifest or a checkpoint file.
    """

    def __init__(self, path: str | Path | None, key: str = "data.root", problem: str = "does not exist",
                 fix: str | None = None) -> None:
        fix = fix or f"set {key} to an existing folder of videos"
        super().__init__(f"{key}={path}: {problem}; {fix}.")


class DataSourceError(ValueError):
    """A data source that exists but cannot be used as configured: a manifest with a bad header or
    row, or a path that does not fit ``data.source.kind``. The message names the key (and for a
    manifest the file and line) and says what is expected."""
