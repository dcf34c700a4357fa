"""Where pretraining videos come from: a folder, a manifest or WebDataset shards, seen as groups.

The streaming dataset shuffles and assigns whole groups and reads a group's videos in order, so a
source only has to say how many videos each group holds and yield them. A shard is a group of
its samples (a tar file is read front to back); a folder file or a manifest row is a group of 1.
docs/data.md ("Sources") describes the kinds, the manifest format and the shard layout.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from abc import ABC, abstractmethod
from collections.abc import Generator
from dataclasses import dataclass, field, fields
from typing import Optional

from avssl.schema import one_of
from datamodules.errors import ClipError, DataPathError, DataSourceError
from datamodules.folder import DEFAULT_EXTENSIONS, list_videos

KINDS = ["auto", "folder", "manifest", "shards"]
MANIFEST_SUFFIXES = (".csv", ".jsonl")
_PATH_FIX = "set {key} to a folder of videos, a manifest (.csv or .jsonl) or shards (a.tar, s-{{000..009}}.tar)"


@dataclass
class SourceConfig:
    """The ``data.source`` config section."""

    # auto: a folder -> folder; *.csv, *.jsonl -> manifest; *.tar or a brace pattern of them -> shards
    kind: str = field(default="auto", metadata=one_of(KINDS))
    # a folder, a manifest file, or shard files: a path or brace pattern, several joined with "::"
    path: Optional[str] = None
    # video file endings: of folder files, and of the member of a shard sample that holds the video
    extensions: list[str] = field(default_factory=lambda: list(DEFAULT_EXTENSIONS))


@dataclass(frozen=True)
class VideoRef:
    """One video of a source, as reports show it.

    Attributes:
        name: the file path, or ``"<shard path>:<sample key>"``.
        start_s: start of the manifest window in seconds (None: the file's start).
        end_s: end of the manifest window in seconds (None: the file's end).
        label: the manifest label, or a shard sample's ``cls``/``txt``/json ``label`` (None: none).
    """

    name: str
    start_s: Optional[float] = None
    end_s: Optional[float] = None
    label: Optional[str] = None


@dataclass
class LocalVideo:
    """A video ready to decode, or the reason it cannot be.

    Attributes:
        ref: which video.
        path: a local file to decode; a shard's temporary file is valid only until the next item
            is requested from the iterator (or it is closed). None when ``error`` is set.
        error: why this item cannot be provided (e.g. ``no_video`` for a shard sample without a
            video member, ``unreadable`` for the rest of a truncated shard); None when ``path`` is.
    """

    ref: VideoRef
    path: Optional[str]
    error: Optional[ClipError] = None


class Source(ABC):
    """Videos in groups whose sizes are fixed when the source is opened.

    Attributes:
        description: one line for logs, e.g. ``"folder /videos (1234 files)"``.
    """

    def __init__(self, description: str, group_sizes: list[int]) -> None:
        self.description = description
        self._sizes = group_sizes
        self._first_ids = [0, *itertools.accumulate(group_sizes)][:-1]  # video_id of each group's first video
        self._fingerprint: dict[str, int | str] | None = None

    def fingerprint(self) -> dict[str, int | str]:
        """What the epoch plans depend on, to tell whether a resumed run reads the same source.

        ``{"videos": <count>, "digest": <sha256 of the listing>}``; the listing holds each group's
        name, size in bytes and video count (see `_listing`), nothing is decoded. Computed once.
        """
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for entry in self._listing():
                digest.update(repr(entry).encode() + b"\n")
            self._fingerprint = {"videos": sum(self._sizes), "digest": digest.hexdigest()}
        return self._fingerprint

    @abstractmethod
    def _listing(self) -> Generator[tuple[object, ...], None, None]:
        """One tuple per group, in order: what identifies it (name, size, window, ...)."""

    def group_sizes(self) -> list[int]:
        """Videos per group."""
        return list(self._sizes)

    def video_id(self, group: int, index: int) -> int:
        """The stable identity of video ``index`` of ``group``: its position in the source's order.

        The order is the one the source is opened in: a folder's sorted files, a manifest's rows,
        the shards' samples shard by shard. So the id is unique within the source and the same in
        every epoch, on every rank and after a resume, as long as the source is unchanged (two
        manifest rows of one file are two videos, with two ids).
        """
        return self._first_ids[group] + index

    def videos(self, group: int, skip: int = 0) -> Generator[LocalVideo, None, None]:
        """The videos of ``group`` in order, leaving out its first ``skip`` (to resume mid-epoch).

        Yields exactly ``group_sizes()[group] - skip`` items, always: a video that cannot be
        provided is an item with ``error`` set, so no video is lost or repeated in the accounting.
        Close the generator (or drop it) when done early: that removes a shard's temporary file.

        Raises:
            IndexError, ValueError: at once, for a group or skip out of range (a caller's bug).
        """
        if not 0 <= group < len(self._sizes):
            raise IndexError(f"group {group} is out of range: {self.description} has {len(self._sizes)} groups")
        if not 0 <= skip <= self._sizes[group]:
            raise ValueError(f"skip={skip}: group {group} of {self.description} holds {self._sizes[group]} videos")
        return self._videos(group, skip)

    @abstractmethod
    def _videos(self, group: int, skip: int) -> Generator[LocalVideo, None, None]:
        """The generator behind `videos`, for arguments already checked."""


class FileSource(Source):
    """Videos that are local files, each its own group: a folder's files or a manifest's rows."""

    def __init__(self, refs: list[VideoRef], description: str, root: str | None = None) -> None:
        """``root``: the folder the files were listed from (the fingerprint names them relative to it)."""
        super().__init__(description, [1] * len(refs))
        self.refs = refs
        self.root = root

    def _listing(self) -> Generator[tuple[object, ...], None, None]:
        for ref in self.refs:
            name = os.path.relpath(ref.name, self.root) if self.root else ref.name
            yield name, file_size(ref.name), ref.start_s, ref.end_s

    def _videos(self, group: int, skip: int) -> Generator[LocalVideo, None, None]:
        if not skip:
            yield LocalVideo(self.refs[group], self.refs[group].name)


def open_source(config: SourceConfig, key: str = "data.source", path_key: str | None = None) -> Source:
    """Opens the source ``config`` describes: lists the folder, reads the manifest or counts the
    samples of each shard (tar headers only), so that the group sizes are known.

    Args:
        config: the source.
        key: the config key of ``config``, named in errors about its kind and extensions.
        path_key: the key or option that set ``config.path``, named in errors about the path
            (default ``<key>.path``; e.g. ``data.root`` for the folder shorthand, or a command-line
            argument).

    Raises:
        DataPathError: the path is not set, does not exist, or no shard file matches it.
        DataSourceError: a bad ``kind`` or ``extensions``, a path that does not fit the kind, or a
            manifest with a bad header or row (the message names the file and line).
    """
    _check_fields(config, key)
    path_key = path_key or f"{key}.path"
    if not config.path:
        raise DataPathError(config.path, path_key, "is not set", _PATH_FIX.format(key=path_key))
    path = config.path
    kind = config.kind if config.kind != "auto" else _detect_kind(path, key, path_key)
    if kind == "shards":
        if os.path.isdir(path):
            raise _kind_mismatch(key, path_key, kind, path, "is a folder")
        # Imported here: shards builds on the types above, and needs webdataset only when used.
        from datamodules.shards import ShardSource

        return ShardSource(path, config.extensions, key=path_key)
    if not os.path.exists(path):
        raise DataPathError(path, path_key, "does not exist", _PATH_FIX.format(key=path_key))
    if kind == "folder":
        if not os.path.isdir(path):
            raise _kind_mismatch(key, path_key, kind, path, "is a file")
        files = list_videos(path, config.extensions, key=path_key)
        return FileSource([VideoRef(str(f)) for f in files], f"folder {path} ({len(files)} files)", root=path)
    if os.path.isdir(path):
        raise _kind_mismatch(key, path_key, kind, path, "is a folder")
    if not path.lower().endswith(MANIFEST_SUFFIXES):
        raise _kind_mismatch(key, path_key, kind, path, "is neither a .csv nor a .jsonl file")
    # Imported here for the same reason as shards: manifest builds on VideoRef.
    from datamodules.manifest import read_manifest

    refs = read_manifest(path, path_key)
    return FileSource(refs, f"manifest {path} ({len(refs)} videos)")


def file_size(path: str) -> int:
    """Size in bytes; -1 for a file that is gone (it is reported as unreadable when read)."""
    try:
        return os.path.getsize(path)
    except OSError:
        return -1


def _check_fields(config: SourceConfig, key: str) -> None:
    """The field constraints, for a config built in code rather than by `avssl.config`."""
    for f in fields(config):
        check = f.metadata.get("check")
        problem = check(getattr(config, f.name)) if check else None
        if problem:
            raise DataSourceError(f"{key}.{f.name}={getattr(config, f.name)}: {problem}; "
                                  f"set it in the recipe or override it ({key}.{f.name}=...).")
    if not config.extensions:
        raise DataSourceError(f"{key}.extensions is empty: list the video file endings to read "
                              f"(default: {', '.join(DEFAULT_EXTENSIONS)}).")


def _detect_kind(path: str, key: str, path_key: str) -> str:
    """``kind=auto``: a folder, a manifest (by suffix) or shards (every "::" part ends in .tar)."""
    if os.path.isdir(path):
        return "folder"
    if path.lower().endswith(MANIFEST_SUFFIXES):
        return "manifest"
    if all(part.lower().endswith(".tar") for part in path.split("::")):
        return "shards"
    if not os.path.exists(path):
        raise DataPathError(path, path_key, "does not exist", _PATH_FIX.format(key=path_key))
    raise DataSourceError(f"{path_key}={path}: cannot tell what kind of source this file is; expected "
                          f"a folder, a manifest (.csv or .jsonl) or shards (.tar). Rename it, or set "
                          f"{key}.kind to one of {KINDS[1:]}.")


def _kind_mismatch(key: str, path_key: str, kind: str, path: str, problem: str) -> DataSourceError:
    expected = {"folder": "a folder of videos", "manifest": "a .csv or .jsonl manifest file",
                "shards": "tar files (a path or brace pattern, e.g. s-{000..009}.tar)"}[kind]
    return DataSourceError(f"{key}.kind={kind} but {path_key}={path} {problem}; a {kind} source needs "
                           f"{expected}. Fix {path_key}, or set {key}.kind=auto to detect the kind.")
