"""Find the video files under a folder."""

from __future__ import annotations

import os
from pathlib import Path

from datamodules.errors import DataPathError

DEFAULT_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".ts")


def list_videos(root: str | Path, extensions: tuple[str, ...] | list[str] = DEFAULT_EXTENSIONS,
                key: str = "data.root") -> list[Path]:
    """Lists the video files under ``root``, recursively.

    Hidden files and folders (names starting with ".") are left out. Symbolic links to files are
    listed; links to folders are not followed (so a link cannot make a loop).

    Args:
        root: the folder to search.
        extensions: file name endings to keep, compared case-insensitively (".MP4" matches).
        key: the config key that set ``root``, named in the error.

    Returns:
        The files, sorted.

    Raises:
        DataPathError: if ``root`` does not exist or is not a folder.
    """
    root = Path(root)
    if not root.exists():
        raise DataPathError(root, key)
    if not root.is_dir():
        raise DataPathError(root, key, problem="is a file, not a folder")
    wanted = tuple(ext.lower() for ext in extensions)
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        found += [Path(folder, name) for name in files
                  if not name.startswith(".") and name.lower().endswith(wanted)]
    return sorted(found)
