"""Which seconds of a video become clips: ``clips_per_video`` starts, uniform or random.

Clips are placed where both streams have content. A file's video and audio tracks need not
cover the same seconds (an audio track that ends early, starts late, or a slide show whose
container claims hours), so a clip is only placed where the video *and* the audio cover it; a file
is skipped as ``too_short`` only when no start in its window meets the `DataPolicies`.

All times are seconds on the video's timeline (0 = the video stream's start).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datamodules.errors import ClipError
from datamodules.policies import DataPolicies

SAMPLING_MODES = ("uniform", "random")
_EPS = 1e-6  # seconds; starts and ends that meet within this count as meeting

Span = tuple[float, float]  # (first second, end second)


@dataclass(frozen=True)
class ContentSpans:
    """Where a file has content, and where its clips may start.

    Attributes:
        window: clips start in this part of the file: the whole video, or a manifest window
            clamped to it.
        video: the seconds with video, ``(0, duration)``.
        audio: the seconds the audio track covers; None when it does not restrict the clips (no
            audio stream under ``no_audio="silence"``, or a header that does not tell).
        audio_slack_s: how much audio a clip may miss and still count as whole: tracks rarely end
            on the same sample.
    """

    window: Span
    video: Span
    audio: Span | None
    audio_slack_s: float = 0.0


def clip_window(duration_s: float, start_s: float | None, end_s: float | None) -> Span:
    """The part of a file clips may come from: the manifest's window clamped to the file."""
    low = max(0.0, start_s or 0.0)
    high = duration_s if end_s is None else min(end_s, duration_s)
    return low, high


def sample_clip_starts(spans: ContentSpans, clip_seconds: float, clips_per_video: int, mode: str,
                       rng: np.random.Generator, policies: DataPolicies, name: str = "") -> list[float]:
    """Start times of the clips of one video.

    Clips that need no padding (all video, and all audio but ``audio_slack_s``) are placed in the
    window: ``uniform`` spreads them evenly over the starts that allow this (one clip: centred),
    ``random`` draws each start uniformly from them. A window shorter than a clip gives a single
    clip from its start. When no such clip exists and ``policies.short == "pad"``, a single clip is
    placed, centred as near as it can be on the seconds both streams cover, among the starts that
    still give ``min_clip_fraction`` of a clip of each stream (`read_clip` pads the rest).

    Raises:
        ClipError: ``too_short`` when no start in the window gives a clip under ``policies``.
    """
    c = clip_seconds
    w_lo, w_hi = spans.window
    short_window = w_hi - w_lo < c
    # Starts of whole clips: a short window gives its start only.
    whole = _starts_with(spans, c, c, c - spans.audio_slack_s, (w_lo, w_lo if short_window else w_hi - c))
    if whole is not None:
        low, high = whole
        if short_window:
            return [low]
        if mode == "random":
            return sorted(rng.uniform(low, high, size=clips_per_video).tolist())
        if clips_per_video == 1:
            return [(low + high) / 2]
        return np.linspace(low, high, clips_per_video).tolist()
    need = policies.min_clip_fraction * c
    padded = None if policies.short == "skip" else _starts_with(spans, c, need, need, (w_lo, w_hi))
    if padded is None:
        raise ClipError("too_short", _too_short(spans, c, policies), name)
    both = covered(spans)
    ideal = (both[0] + both[1] - c) / 2  # the clip centred on the seconds both streams cover
    return [float(min(max(ideal, padded[0]), padded[1]))]


def covered(spans: ContentSpans) -> Span:
    """The seconds of the window that both the video and the audio cover (may be empty: end < start)."""
    return _overlap(_overlap(spans.window, spans.video), spans.audio or spans.video)


def _starts_with(spans: ContentSpans, c: float, video_s: float, audio_s: float,
                 allowed: Span) -> Span | None:
    """The starts in ``allowed`` whose clip holds ``video_s`` of video and ``audio_s`` of audio."""
    low, high = allowed
    needs = [(spans.video, video_s)] + ([] if spans.audio is None else [(spans.audio, audio_s)])
    for (lo, hi), need in needs:
        if hi - lo < need - _EPS:
            return None
        # |[s, s + c] & [lo, hi]| >= need  <=>  lo - c + need <= s <= hi - need
        low, high = max(low, lo - c + need), min(high, hi - need)
    low = max(low, 0.0)
    high = min(high, spans.video[1] - _EPS)  # a clip starts inside the video
    return (low, high) if high >= low - _EPS else None


def _overlap(a: Span, b: Span) -> Span:
    return max(a[0], b[0]), min(a[1], b[1])


def _too_short(spans: ContentSpans, c: float, policies: DataPolicies) -> str:
    audio = "" if spans.audio is None else f", audio {spans.audio[0]:.2f}-{spans.audio[1]:.2f} s"
    where = (f"video {spans.video[0]:.2f}-{spans.video[1]:.2f} s{audio}, clips from "
             f"{spans.window[0]:.2f}-{spans.window[1]:.2f} s")
    if policies.short == "skip":
        return (f"no {c} s clip is covered by both streams ({where}); data.policies.short=skip skips "
                "clips that need padding (pad would use them)")
    fraction = policies.min_clip_fraction
    share = "half" if fraction == 0.5 else f"{fraction:g}"
    return (f"no clip holds {fraction * c:.2f} s of both video and audio ({where}); a clip needs "
            f"{share} of clip_seconds={c} of each (data.policies.min_clip_fraction)")
