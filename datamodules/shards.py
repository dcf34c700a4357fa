"""WebDataset shards as a `Source`: each tar file is a group of samples, read front to back.

The files of one sample share a key, the member path up to the first dot of its basename
(webdataset's rule: ``train/clip 1.mp4`` and ``train/clip 1.cls`` are sample ``train/clip 1``).
Samples are read with webdataset's own tar iterators; each sample's video member is written to a
temporary file for the decoder, which needs a path. The sample count per shard, needed before any
reading, comes from the tar headers (a stdlib `tarfile` listing that skips member data), grouped
by the same rule as webdataset's `group_by_keys`.
"""

from __future__ import annotations

import json
import lzma
import os
import re
import tarfile
import tempfile
import zlib
from collections.abc import Generator, Iterator, Sequence
from contextlib import closing
from typing import Any, Optional

from webdataset.shardlists import expand_urls
from webdataset.tariterators import base_plus_ext, group_by_keys, tar_file_expander

from datamodules.errors import ClipError, DataPathError
from datamodules.sources import LocalVideo, Source, VideoRef, file_size

# Members webdataset's `tar_file_iterator` leaves out (its ``skip_meta`` default): "__*__" names.
_META = re.compile(r"__[^/]*__($|/)")
# What listing a broken tar file raises: tarfile's own errors, I/O, and the decompressors' errors.
_LISTING_ERRORS = (OSError, EOFError, tarfile.TarError, zlib.error, lzma.LZMAError)


class ShardSource(Source):
    """Local WebDataset shards; shard ``i`` is group ``i``, its samples in tar order.

    A shard that cannot be listed at all (missing, not a tar file) is a group of 1 whose item has
    error ``unreadable``. When reading stops part-way (a truncated or corrupt shard), the samples
    not read are yielded as ``unreadable`` items, so a group always yields its listed count. That
    can include the sample just before the break: webdataset hands a sample over only once it has
    read the first file of the next one.

    Args:
        pattern: a shard path or brace pattern (``s-{000..009}.tar``); several joined with "::".
        extensions: video file endings; a sample's video is its first member ending in one.
        temp_dir: where sample videos are written (default: `tempfile.gettempdir()`).
        key: the config key of ``pattern``, named in errors.

    Raises:
        DataPathError: if no file matches ``pattern``.
    """

    def __init__(self, pattern: str, extensions: Sequence[str], temp_dir: Optional[str] = None,
                 key: str = "data.source.path") -> None:
        self.shards: list[str] = expand_urls(pattern)
        if not any(os.path.isfile(shard) for shard in self.shards):
            raise DataPathError(pattern, key, f"matches no file (it expands to {len(self.shards)} paths, the "
                                f"first {self.shards[0]!r})", f"set {key} to existing .tar shards")
        self.extensions = tuple(ext.lower() for ext in extensions)
        self.temp_dir = temp_dir
        self._broken: dict[int, str] = {}  # group -> why the shard could not be listed
        sizes = []
        for group, shard in enumerate(self.shards):
            try:
                sizes.append(len(sample_keys(shard)))
            except _LISTING_ERRORS as err:
                self._broken[group] = f"the shard cannot be read as a tar file: {err}"
                sizes.append(1)
        noun = "shard" if len(self.shards) == 1 else "shards"
        broken = f", {len(self._broken)} unreadable" if self._broken else ""
        super().__init__(f"{len(self.shards)} {noun} {pattern} ({sum(sizes) - len(self._broken)} samples{broken})",
                         sizes)

    def _listing(self) -> Generator[tuple[object, ...], None, None]:
        for shard, samples in zip(self.shards, self.group_sizes()):
            yield shard, file_size(shard), samples

    def _videos(self, group: int, skip: int) -> Generator[LocalVideo, None, None]:
        shard, size = self.shards[group], self._sizes[group]
        if group in self._broken:
            if not skip:
                yield _failed(shard, "unreadable", self._broken[group])
            return
        index, problem = 0, "it ended before its listed samples (was it changed since it was opened?)"
        with closing(_tar_samples(shard)) as samples:
            while index < size:
                try:
                    sample = next(samples)
                except StopIteration:
                    break
                except Exception as err:  # tarfile, the decompressors and webdataset raise many kinds
                    detail = err.args[0] if err.args else ""
                    problem = f"reading stopped after {index} samples ({type(err).__name__}: {detail})"
                    break
                if index >= skip:
                    yield from self._sample_video(shard, sample)
                index += 1
        keys = _keys_or_empty(shard) if index < size else []
        for i in range(max(index, skip), size):
            name = f"{shard}:{keys[i]}" if i < len(keys) else f"{shard}:#{i}"
            yield _failed(name, "unreadable", f"truncated or corrupt shard: {problem}")

    def _sample_video(self, shard: str, sample: dict[str, Any]) -> Generator[LocalVideo, None, None]:
        """The sample as one item; its video lives in a temporary file until the next item."""
        ref = VideoRef(f"{shard}:{sample['__key__']}", label=_label(sample))
        member = next((name for name in sample if not name.startswith("__")
                       and f".{name}".endswith(self.extensions)), None)
        if member is None:
            members = ", ".join(name for name in sample if not name.startswith("__")) or "none"
            yield LocalVideo(ref, None, ClipError("no_video", f"the sample has no member ending in "
                                                  f"{', '.join(self.extensions)} (members: {members})", ref.name))
            return
        suffix = next(ext for ext in self.extensions if f".{member}".endswith(ext))
        fd, path = tempfile.mkstemp(prefix="avssl-", suffix=suffix, dir=self.temp_dir)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(sample[member])
            yield LocalVideo(ref, path)
        finally:
            os.remove(path)


def sample_keys(shard: str) -> list[str]:
    """The sample keys of a shard in tar order, from its headers (no member data is read).

    Counts what webdataset's `group_by_keys` yields: regular files that are not "__*__" meta
    files and have a key; a run of consecutive files with one key is one sample. A shard that
    breaks part-way keeps the samples listed before the break (reading them will then fail
    where the data is missing, and `ShardSource` reports those samples).

    Raises:
        OSError, tarfile.TarError (or a decompressor's error): if not a single sample can be listed.
    """
    keys: list[str] = []
    with tarfile.open(shard) as tar:
        try:
            for member in tar:
                key, _ = base_plus_ext(member.name)
                if member.isreg() and key is not None and not _META.match(member.name) \
                        and (not keys or keys[-1] != key):
                    keys.append(key)
        except _LISTING_ERRORS:
            if not keys:
                raise
    return keys


def _tar_samples(shard: str) -> Iterator[dict[str, Any]]:
    """webdataset's samples of one shard; the file is closed with the iterator."""
    with open(shard, "rb") as stream:
        yield from group_by_keys(tar_file_expander([{"url": shard, "stream": stream}]))


def _keys_or_empty(shard: str) -> list[str]:
    try:
        return sample_keys(shard)
    except _LISTING_ERRORS:
        return []


def _label(sample: dict[str, Any]) -> Optional[str]:
    """The sample's ``cls``, else ``txt``, else the ``label`` of its ``json`` member."""
    for member in ("cls", "txt"):
        if member in sample:
            return sample[member].decode("utf-8", errors="replace").strip()
    try:
        label = json.loads(sample["json"]).get("label") if "json" in sample else None
    except (ValueError, AttributeError):  # not JSON, or JSON that is not an object: no label
        return None
    return None if label is None else str(label)


def _failed(name: str, reason: str, detail: str) -> LocalVideo:
    return LocalVideo(VideoRef(name), None, ClipError(reason, detail, name))
