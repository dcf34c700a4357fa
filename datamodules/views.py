"""Several views of one video in one batch, each with its audio optionally shifted from its video.

A video gives ``clips_per_video`` clips per epoch, spread over batches (`datamodules.epoch_plan`).
With ``views_per_video = V > 1`` each of those clips becomes a group of V views that travel
together: they land in the same batch, side by side, and share the video's ``video_id``, so an
objective can take another view of the same file as a positive (multi-view objectives; views of a
file at different times, as in Feichtenhofer et al., "A Large-Scale Study on Unsupervised
Spatiotemporal Representation Learning", CVPR 2021, arXiv:2104.14558). A view is a clip in its own
right: the file's ``clips_per_video x V`` video windows are placed by `sample_clip_starts` like any
clips (spread evenly with ``uniform``, drawn with ``random``) and each gets its own random crop.
Two views of the same seconds that differ only by their token masks (MAViL, XKD) are the model's
business, two encoder passes over one clip, not the data's.

Relaxed synchrony (CrissCross: Sarkar & Etemad, "Self-Supervised Audio-Visual Representation
Learning with Relaxed Cross-Modal Synchronicity", AAAI 2023, arXiv:2111.05329): each view's audio
window starts ``av_offset_s`` seconds after its video window, with ``av_offset_s`` drawn uniformly
from the configured ``(low, high)`` range, restricted to the offsets whose audio window stays
inside the seconds both streams cover (`audio_offset_range`). Drawing from that part rather than
clamping a draw from the whole range keeps the offsets uniform: clamping would pile them up at
the file's edges. A range of one value (``(0, 0)``: synchronous) draws nothing, so the clips and
crops are exactly those of a run without offsets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from datamodules.errors import ClipError
from datamodules.sampling import ContentSpans, Span, covered

_EPS = 1e-6  # seconds; as in `datamodules.sampling`
MAX_AV_OFFSET_S = 60.0  # CrissCross shifts by up to about a second; past a minute the streams are unrelated


@dataclass(frozen=True)
class View:
    """Where one view's video and audio windows start.

    Attributes:
        start_s: the video window's start, seconds on the video's timeline.
        av_offset_s: the audio window's start minus ``start_s`` (negative: the audio is earlier).
    """

    start_s: float
    av_offset_s: float = 0.0


def offset_range_problem(value: Sequence[float]) -> str | None:
    """What is wrong with an ``av_offset_s`` range (None: nothing); a `satisfies` check."""
    if len(value) != 2:
        return f"must be [min, max] in seconds, got {len(value)} values (e.g. [-0.5, 0.5]; [0, 0]: synchronous)"
    for x in value:
        if not math.isfinite(x) or abs(x) > MAX_AV_OFFSET_S:
            return f"{x} must be a finite number of seconds in [-{MAX_AV_OFFSET_S:g}, {MAX_AV_OFFSET_S:g}] (e.g. [-0.5, 0.5])"
    low, high = value
    if low > high:
        return f"min {low} is above max {high}; give [min, max] with min <= max (e.g. [-0.5, 0.5])"
    return None


def group_views(starts: list[float], clips_per_video: int, views_per_video: int) -> list[list[float]]:
    """Groups ``clips_per_video x views_per_video`` clip starts into the views of each clip.

    Clip ``k`` takes every ``clips_per_video``-th start from the ``k``-th, so with ``uniform``
    sampling each clip's views spread over the file. A file that gives a single start (shorter
    than ``clips_per_video`` clips allow, see `sample_clip_starts`) gives one clip whose views all
    start there (they still differ by crop and audio offset).
    """
    if len(starts) == 1:
        return [starts * views_per_video]
    assert len(starts) == clips_per_video * views_per_video, (len(starts), clips_per_video, views_per_video)
    return [starts[k::clips_per_video] for k in range(clips_per_video)]


def audio_offset_range(spans: ContentSpans, start_s: float, clip_seconds: float,
                       offset_range: Sequence[float], name: str = "") -> Span:
    """The offsets of ``offset_range`` whose audio window stays inside the file's content.

    The content is what `covered` gives: the seconds of the window (a manifest row) with both
    video and audio. An audio window as far inside as the synchronous one is always allowed, so
    offset 0 is possible for a clip the policies padded (a file shorter than a clip).

    Raises:
        ClipError: ``too_short`` when no offset of ``offset_range`` keeps the audio inside.
    """
    lo, hi = covered(spans)
    low = max(offset_range[0], min(0.0, lo - start_s))
    high = min(offset_range[1], max(0.0, hi - clip_seconds - start_s))
    if high < low - _EPS:
        raise ClipError("too_short", (
            f"no audio window offset by {offset_range[0]:g} to {offset_range[1]:g} s (data.av_offset_s) from "
            f"the {clip_seconds:g} s clip at {start_s:.2f} s fits in the {lo:.2f}-{hi:.2f} s that both streams "
            "cover; narrow data.av_offset_s or use longer files"), name)
    return low, max(low, high)


def draw_views(spans: ContentSpans, starts: list[float], clips_per_video: int, views_per_video: int,
               clip_seconds: float, offset_range: Sequence[float], rng: np.random.Generator,
               name: str = "") -> list[list[View | ClipError]]:
    """The views of each clip of a file, with their audio offsets.

    Args:
        spans: the file's content (`datamodules.decode.content_spans`).
        starts: its clip starts (`sample_clip_starts` of ``clips_per_video x views_per_video``).
        clips_per_video, views_per_video: how the starts group (`group_views`).
        clip_seconds: clip length.
        offset_range: ``(low, high)`` seconds the audio is shifted by.
        rng: draws the offsets (nothing is drawn for a range of one value).
        name: the file, as errors name it.

    Returns:
        Per clip, its views in order; a view whose offset cannot be honoured is its `ClipError`.
    """
    groups = []
    for group in group_views(starts, clips_per_video, views_per_video):
        views: list[View | ClipError] = []
        for start_s in group:
            try:
                low, high = audio_offset_range(spans, start_s, clip_seconds, offset_range, name)
            except ClipError as err:
                views.append(err)
                continue
            views.append(View(start_s, low if high - low <= _EPS else float(rng.uniform(low, high))))
        groups.append(views)
    return groups
