"""The streaming pretraining dataset: clips of a source, split over DDP ranks and DataLoader workers.

`ClipStream` is an `IterableDataset` that yields whole batches (use it with ``batch_size=None``).
`datamodules.epoch_plan` decides which videos each worker reads and where a resumed epoch
restarts; here each video is decoded, in a child process with a time limit
(`datamodules.isolation`), into ``clips_per_video`` clips of ``views_per_video`` views each
(`datamodules.views`). The plan counts clips; a clip's views stay together, so a batch holds
``batch_size`` clips, ``batch_size x views_per_video`` rows. A video that fails gives a failure
record instead of clips; failures never turn into zero tensors and never stop the stream: they
travel in ``batch["meta"]["skipped"]`` to the data report (strict mode is the loader's).
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from datamodules.audio_features import log_mel_fbank, real_audio_frames
from datamodules.augmentation import Augmentation, augment_frames, draw_seed, gain_waveform, mask_fbank, speed_waveform
from datamodules.collate import collate_clips
from datamodules.decode import FileInfo, clip_starts, content_spans, decode_clip, probe_file
from datamodules.epoch_plan import Window, batches_per_worker, epoch_rng, worker_windows
from datamodules.errors import ClipError
from datamodules.isolation import DecodeTimeout, DecoderCrashed, IsolatedDecoder
from datamodules.policies import DataPolicies
from datamodules.preprocessing import Preprocessing
from datamodules.sources import LocalVideo, Source, VideoRef
from datamodules.video_transforms import normalize_video
from datamodules.views import View, draw_views, offset_range_problem

# One clip slot of a window: a clip's views (dicts, in view order), a one-element list holding a
# failure record, or None (padding / no clip in this slot).
Item = list[dict[str, Any]] | None


@dataclass
class StreamSettings:
    """How a `ClipStream` cuts, shuffles and splits its clips.

    Attributes:
        preprocessing: how a clip becomes model inputs.
        policies: what happens to bad or unusual files.
        batch_size: clips per batch (per rank); a batch has ``batch_size x views_per_video`` rows.
        clips_per_video: clips cut from each video per epoch, spread over batches.
        views_per_video: views of each clip, side by side in its batch (`datamodules.views`).
        av_offset_s: ``(low, high)`` seconds each view's audio is shifted from its video by.
        sampling: ``uniform`` or ``random`` clip starts (see `sample_clip_starts`).
        seed: seeds the epoch shuffles, the clip starts and the random crops.
        num_workers: DataLoader workers of each rank (0: the main process reads).
        rank: this process among the DDP ranks.
        world_size: number of DDP ranks.
        audio_features_on: ``worker``: clips carry ``audio`` fbank features; ``device``: they carry
            the ``waveform`` and the fbank is computed after the batch reaches the accelerator.
        augment: training-time augmentation (`datamodules.augmentation`), applied as each view is
            decoded (the fbank masks after the fbank is computed, also on the device); off by default.
    """

    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    policies: DataPolicies = field(default_factory=DataPolicies)
    batch_size: int = 32
    clips_per_video: int = 1
    views_per_video: int = 1
    av_offset_s: tuple[float, float] = (0.0, 0.0)
    sampling: str = "uniform"
    seed: int = 0
    num_workers: int = 0
    rank: int = 0
    world_size: int = 1
    audio_features_on: str = "worker"
    augment: Augmentation = field(default_factory=Augmentation)

    @property
    def readers(self) -> int:
        """Processes reading on each rank: the workers, or the main process."""
        return max(1, self.num_workers)


class ClipStream(IterableDataset):
    """Batches of clips from a `Source`, each epoch a new order, resumable mid-epoch.

    Within an epoch, every video of the source is read by exactly one (rank, worker), and every
    rank yields ``len(self)`` batches. Call `set_position` before iterating to choose the epoch
    and, after a resume, how many of its batches this rank has already trained on.

    Args:
        source: the videos.
        settings: cutting, shuffling and splitting.

    Raises:
        ValueError: ``views_per_video < 1`` or a bad ``av_offset_s`` range.
    """

    def __init__(self, source: Source, settings: StreamSettings) -> None:
        if settings.views_per_video < 1:
            raise ValueError(f"views_per_video={settings.views_per_video}: must be >= 1 (1: one view per clip).")
        problem = offset_range_problem(settings.av_offset_s)
        if problem:
            raise ValueError(f"av_offset_s={list(settings.av_offset_s)}: {problem}.")
        self.source = source
        self.settings = settings
        self.group_sizes = source.group_sizes()
        self.epoch = 0
        self.batches_done = 0

    def set_position(self, epoch: int, batches_done: int = 0) -> None:
        """The epoch to read next, and how many of its batches to leave out (already trained on)."""
        self.epoch, self.batches_done = epoch, batches_done

    @property
    def videos_per_reader(self) -> int:
        s = self.settings
        return math.ceil(sum(self.group_sizes) / (s.world_size * s.readers))

    def __len__(self) -> int:
        """Batches per rank per epoch (the same on every rank)."""
        s = self.settings
        return s.readers * batches_per_worker(self.videos_per_reader, s.clips_per_video, s.batch_size)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        s = self.settings
        info = get_worker_info()
        worker = info.id if info is not None else 0
        if info is not None and info.num_workers != s.readers:
            raise RuntimeError(f"ClipStream was planned for {s.readers} DataLoader workers but runs in "
                               f"{info.num_workers}; pass num_workers={s.num_workers} to both.")
        # The DataLoader asks its workers for batches in turn, starting with worker 0. After a resume
        # at batch c, the rank's next batch belongs to plan worker c % readers, so worker 0 takes
        # that role: the batch order is exactly that of an uninterrupted epoch.
        role = (worker + self.batches_done) % s.readers
        windows = worker_windows(self.group_sizes, s.seed, self.epoch, s.rank, s.world_size, role,
                                 s.readers, s.batch_size, s.clips_per_video, self.batches_done)
        decoder = IsolatedDecoder(s.policies.file_timeout_s)
        reader = _GroupReader(self.source)
        try:
            for window in windows:
                items = self._read_window(window, reader, decoder)
                order = epoch_rng(s.seed, self.epoch, s.rank, role, window.number).permutation(len(items))
                items = [items[i] for i in order.tolist()]
                for number in range(window.skip_batches, window.num_batches):
                    yield collate_clips([view for item in items[number * s.batch_size:(number + 1) * s.batch_size]
                                         if item is not None for view in item])
        finally:
            reader.close()
            decoder.close()

    def _read_window(self, window: Window, reader: _GroupReader, decoder: IsolatedDecoder) -> list[Item]:
        """All clip slots of a window: ``clips_per_video`` per video, padding included."""
        k = self.settings.clips_per_video
        items: list[Item] = []
        for slot in window.slots:
            if slot.group is None:
                items += [None] * k
                continue
            clips = self._video_items(reader.video(slot.group, slot.index), slot.group, slot.index, decoder)
            items += clips + [None] * (k - len(clips))
        return items

    def _video_items(self, video: LocalVideo, group: int, index: int, decoder: IsolatedDecoder) -> list[Item]:
        """The clips of one video, or one failure record; the first item counts the video as seen.

        Everything drawn (clip starts, audio offsets, crops, augmentation) comes from ``(seed,
        epoch, group, index)``, so a video gives the same clips whichever reader reads it, also
        after a resume.
        """
        s = self.settings
        name = video.ref.name
        video_id = self.source.video_id(group, index)
        rng = epoch_rng(s.seed, self.epoch, group, index)
        try:
            if video.error is not None:
                raise video.error
            results = decoder.call(decode_video_clips, video.path, video.ref, s.preprocessing, s.policies,
                                   s.clips_per_video, s.sampling, int(rng.integers(2**62)),
                                   s.audio_features_on == "worker", s.views_per_video, tuple(s.av_offset_s),
                                   s.augment)
        except ClipError as err:
            results = [err]
        except (OSError, ValueError, RuntimeError) as err:  # a file no decoder check foresaw
            results = [ClipError("decode_failed", f"{type(err).__name__}: {err}", name)]
        except DecodeTimeout as err:
            results = [ClipError("timeout", str(err), name)]
        except DecoderCrashed as err:
            results = [ClipError("decoder_crashed", str(err), name)]
        failed = [r for r in results if isinstance(r, ClipError)]
        if failed and s.policies.corrupt == "skip":
            results = failed[:1]
        audio_key = "audio" if s.audio_features_on == "worker" else "waveform"
        items: list[Item] = []
        for result in results:
            if isinstance(result, ClipError):
                items.append([{"skipped": {"path": name, "reason": result.reason, "detail": result.detail}}])
                continue
            views = []
            for number, (view, video_array, audio_array, audio_mask, mask_seed) in enumerate(result):
                sample = {"video": normalize_video(torch.from_numpy(video_array), s.preprocessing),
                          audio_key: torch.from_numpy(audio_array),
                          "audio_mask": torch.from_numpy(audio_mask),
                          "meta": {"path": name, "start_s": view.start_s, "video_id": video_id,
                                   "view": number, "av_offset_s": view.av_offset_s}}
                if mask_seed is not None:  # fbank on the device: its masks are applied there
                    sample["fbank_mask_seed"] = torch.tensor(mask_seed, dtype=torch.long)  # ()
                views.append(sample)
            items.append(views)
        items[0][0]["video_seen"] = name
        return items


class _GroupReader:
    """Reads the videos of a reader's groups in order, keeping a group open between windows.

    A shard is read front to back once per epoch even when its videos span many windows; a jump
    (another group, or a later video after a resume) reopens it with `Source.videos`' ``skip``.
    """

    def __init__(self, source: Source) -> None:
        self.source = source
        self._group: int | None = None
        self._next = 0
        self._videos: Generator[LocalVideo, None, None] | None = None

    def video(self, group: int, index: int) -> LocalVideo:
        """Video ``index`` of ``group``; valid until the next call."""
        if self._videos is None or group != self._group or index != self._next:
            self.close()
            self._group, self._videos = group, self.source.videos(group, skip=index)
        self._next = index + 1
        return next(self._videos)

    def close(self) -> None:
        if self._videos is not None:
            self._videos.close()  # removes a shard sample's temporary file
        self._group, self._videos = None, None


def decode_video_clips(path: str, ref: VideoRef, pre: Preprocessing, policies: DataPolicies,
                       clips_per_video: int, sampling: str, seed: int, audio_features: bool = True,
                       views_per_video: int = 1, av_offset_s: tuple[float, float] = (0.0, 0.0),
                       augment: Augmentation | None = None) -> list[Any]:
    """Decodes the clips of one video, each as its views (runs in the isolated decoder process).

    Each view draws its crop and augmentation from its own generator, seeded from ``seed``.

    Returns:
        Per clip, its views in order, each ``(View, video uint8 [3, T, S, S], audio,
        audio_mask bool [F], mask_seed)`` with NumPy arrays (video resized, cropped and
        augmented, not yet normalised: 4x less to send), audio the fbank float32 ``[1, F, M]``
        (augmented), or without ``audio_features`` the waveform ``[samples]`` (its gain applied;
        ``mask_seed`` then seeds the fbank masks, `mask_fbank`, else it is None), and
        ``audio_mask`` the fbank frames computed from real audio (`real_audio_frames`); or, when
        one of its views fails, that view's `ClipError` for the whole clip (a clip's views are
        kept all together or not at all).

    Raises:
        ClipError: when the file cannot give any clip (unreadable, no video, too short, ...).
    """
    info = probe_file(path)
    rng = np.random.default_rng(seed)
    window = (ref.start_s, ref.end_s)
    starts = clip_starts(info, pre, policies, clips_per_video * views_per_video, sampling, rng, window, ref.name)
    groups = draw_views(content_spans(info, window), starts, clips_per_video, views_per_video, pre.clip_seconds,
                        av_offset_s, rng, ref.name)
    results: list[Any] = []
    for group in groups:
        views: list[Any] = []
        failure: ClipError | None = None
        for view in group:
            generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
            if isinstance(view, ClipError):
                failure = view
                break
            try:
                views.append(_decode_view(path, view, pre, policies, info, generator, audio_features,
                                          augment if augment is not None else Augmentation()))
            except ClipError as err:
                failure = ClipError(err.reason, err.detail, ref.name)  # a shard's temporary file -> its name
                break
        results.append(views if failure is None else failure)
    return results


def _decode_view(path: str, view: View, pre: Preprocessing, policies: DataPolicies, info: FileInfo,
                 generator: torch.Generator, audio_features: bool, augment: Augmentation) -> tuple[Any, ...]:
    clip = decode_clip(path, view.start_s, pre, policies, info=info, av_offset_s=view.av_offset_s)
    video = augment_frames(clip.frames, pre, augment.video, generator)  # (3, T, S, S) uint8
    audio = speed_waveform(clip.waveform, pre.sample_rate, augment.audio, generator)  # (samples,)
    audio = gain_waveform(audio, augment.audio, generator)
    mask_seed = draw_seed(generator) if augment.audio.masks else None
    if audio_features:
        audio = log_mel_fbank(audio, pre)  # (1, F, M)
        if mask_seed is not None:
            audio, mask_seed = mask_fbank(audio, pre, augment.audio, mask_seed), None
    return (view, video.numpy(), audio.numpy(), real_audio_frames(clip.audio_real, pre).numpy(), mask_seed)
