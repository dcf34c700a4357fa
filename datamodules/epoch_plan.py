"""Which videos each (rank, DataLoader worker) reads in an epoch, and where a resumed epoch restarts.

A source is a list of groups (a WebDataset shard is a group of samples read in order; a file is a
group of one). Each epoch the groups are shuffled from ``(seed, epoch)`` and laid end to end, and
the ``world_size * num_workers`` readers (global reader ``rank * num_workers + worker``) each take
one contiguous stretch of ``ceil(videos / readers)`` videos; a shard may be split between two
readers, the second starting part-way into it. The last readers are topped up with padding slots,
so every reader, and therefore every rank, yields the same number of batches: DDP ranks never wait
for one another at the end of an epoch, and no video is read twice or left out.

A reader reads its videos in windows of ``batch_size`` videos; the ``clips_per_video`` clips of a
window are shuffled together and cut into batches, so clips of one file are spread over
``clips_per_video`` batches instead of filling one. The DataLoader takes batches from its workers
in turn (worker 0, 1, ..., 0, 1, ...); with equal counts per worker, a rank's ``c``-th batch is
batch ``c // num_workers`` of worker ``c % num_workers``, which is what resuming relies on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class VideoSlot:
    """One video of a worker's plan: video ``index`` of group ``group`` (None: padding)."""

    group: int | None
    index: int = 0


@dataclass(frozen=True)
class Window:
    """Consecutive videos of a worker's plan whose clips are shuffled together.

    Attributes:
        number: position of the window in the worker's plan (seeds its shuffle).
        slots: the videos, in reading order.
        num_batches: batches the window's clips fill.
        skip_batches: leading batches already consumed before a resume (not yielded again).
    """

    number: int
    slots: tuple[VideoSlot, ...]
    num_batches: int
    skip_batches: int = 0


def epoch_rng(*keys: int) -> np.random.Generator:
    """A generator determined by integer keys (seed, epoch, worker, ...)."""
    return np.random.default_rng([abs(int(k)) for k in keys])


def reader_slots(group_sizes: list[int], seed: int, epoch: int, reader: int, num_readers: int) -> list[VideoSlot]:
    """The videos one reader reads this epoch, in order, padded to ``ceil(videos / num_readers)``."""
    per_reader = math.ceil(sum(group_sizes) / num_readers)
    low, high = reader * per_reader, (reader + 1) * per_reader
    slots: list[VideoSlot] = []
    offset = 0  # position of the current group's first video in the epoch's order
    for group in epoch_rng(seed, epoch).permutation(len(group_sizes)).tolist():
        if offset >= high:
            break
        size = group_sizes[group]
        slots += [VideoSlot(group, i - offset) for i in range(max(low, offset), min(high, offset + size))]
        offset += size
    return slots + [VideoSlot(None)] * (per_reader - len(slots))


def batches_in_window(num_videos: int, clips_per_video: int, batch_size: int) -> int:
    return math.ceil(num_videos * clips_per_video / batch_size)


def batches_per_worker(videos: int, clips_per_video: int, batch_size: int) -> int:
    """Batches one worker yields for ``videos`` videos, window by window."""
    full, rest = divmod(videos, batch_size)
    return full * clips_per_video + batches_in_window(rest, clips_per_video, batch_size)


def worker_batches_consumed(batches_done: int, worker: int, num_workers: int) -> int:
    """How many of a worker's batches are among the first ``batches_done`` batches of its rank."""
    return max(0, math.ceil((batches_done - worker) / num_workers))


def worker_windows(group_sizes: list[int], seed: int, epoch: int, rank: int, world_size: int,
                   worker: int, num_workers: int, batch_size: int, clips_per_video: int,
                   batches_done: int = 0) -> list[Window]:
    """The windows one worker reads this epoch, without those a resume has fully consumed.

    Args:
        group_sizes: videos per group of the source.
        seed, epoch: determine the shuffle.
        rank, world_size: this process among the DDP ranks.
        worker, num_workers: this DataLoader worker among the rank's (0 of 1 without workers).
        batch_size: clips per batch; also the number of videos per window.
        clips_per_video: clips cut from each video.
        batches_done: batches of this epoch the rank already trained on (resume).
    """
    slots = reader_slots(group_sizes, seed, epoch, rank * num_workers + worker, world_size * num_workers)
    to_skip = worker_batches_consumed(batches_done, worker, num_workers)
    windows = []
    for number, start in enumerate(range(0, len(slots), batch_size)):
        chunk = tuple(slots[start:start + batch_size])
        num_batches = batches_in_window(len(chunk), clips_per_video, batch_size)
        skip = min(to_skip, num_batches)
        to_skip -= skip
        if skip < num_batches:
            windows.append(Window(number, chunk, num_batches, skip))
    return windows
