"""Which seconds of a video become clips: ``clips_per_video`` starts, uniform or random."""

from __future__ import annotations

import numpy as np

from datamodules.errors import ClipError
from datamodules.policies import DataPolicies

SAMPLING_MODES = ("uniform", "random")


def clip_window(duration_s: float, start_s: float | None, end_s: float | None) -> tuple[float, float]:
    """The part of a file clips may come from: the manifest's window clamped to the file."""
    low = max(0.0, start_s or 0.0)
    high = duration_s if end_s is None else min(end_s, duration_s)
    return low, high


def sample_clip_starts(window: tuple[float, float], clip_seconds: float, clips_per_video: int,
                       mode: str, rng: np.random.Generator, policies: DataPolicies,
                       name: str = "") -> list[float]:
    """Start times of the clips of one video.

    ``uniform`` spreads the clips evenly over the window (one clip: centred), ``random`` draws
    each start uniformly from the window. A window shorter than a clip gives a single clip from
    its start, which `read_clip` pads, when ``policies.short == "pad"`` and the window covers at
    least ``policies.min_clip_fraction`` of a clip.

    Raises:
        ClipError: ``too_short`` when the window cannot give a clip under ``policies``.
    """
    low, high = window
    span = high - low
    if span < clip_seconds:
        needed = clip_seconds if policies.short == "skip" else policies.min_clip_fraction * clip_seconds
        if span < needed:
            raise ClipError("too_short", f"{max(span, 0.0):.2f} s of video to cut clips from; "
                            f"needs {needed:.2f} s (clip_seconds={clip_seconds}, policies.short="
                            f"{policies.short}, min_clip_fraction={policies.min_clip_fraction})", name)
        return [low]
    slack = span - clip_seconds
    if mode == "random":
        return sorted((low + rng.uniform(0.0, slack, size=clips_per_video)).tolist())
    if clips_per_video == 1:
        return [low + slack / 2]
    return (low + np.linspace(0.0, slack, clips_per_video)).tolist()
