"""One clip of a file as model inputs: decode, then video transform and audio features."""

from __future__ import annotations

import os

import torch
from torch import Tensor

from datamodules.audio_features import log_mel_fbank
from datamodules.decode import FileInfo, read_clip
from datamodules.policies import DataPolicies
from datamodules.preprocessing import Preprocessing
from datamodules.video_transforms import frames_to_tensor


def load_clip(path: str | bytes | os.PathLike, start_s: float, pre: Preprocessing,
              policies: DataPolicies = DataPolicies(), generator: torch.Generator | None = None,
              info: FileInfo | None = None) -> dict[str, Tensor]:
    """Reads ``[start_s, start_s + clip_seconds)`` of a file and turns it into model inputs.

    Args:
        path: a video file.
        start_s: clip start in seconds.
        pre: the preprocessing settings.
        policies: how files without audio or shorter than a clip are handled (see `read_clip`).
        generator: draws the crop position when ``pre.crop="random"`` (None: torch's global RNG,
            which DataLoader seeds per worker).
        info: the file's `probe_file` result, to skip reading its headers again.

    Returns:
        ``{"video": float [3, T, S, S], "audio": float [1, F, M]}`` with T = ``num_frames``,
        S = ``frame_size``, F = ``audio_frames``, M = ``num_mel_bins``.

    Raises:
        ClipError: when the file cannot give this clip (see `read_clip`).
    """
    frames, waveform = read_clip(path, start_s, pre, policies, info)  # (T, H, W, 3) uint8, (samples,)
    return {"video": frames_to_tensor(frames, pre, generator), "audio": log_mel_fbank(waveform, pre)}
