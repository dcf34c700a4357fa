"""Frames to a normalised video tensor, as CAV-MAE prepares its evaluation frames.

CAV-MAE (arXiv:2210.07839, `YuanGongND/cav-mae@68fe8c2a src/dataloader.py`) resizes the shorter
side to 224, centre-crops 224x224 and normalises with ImageNet statistics. Size and statistics
come from `Preprocessing`. Resizing runs on uint8 with antialiasing, like PIL does. For
training, ``crop="random"`` cuts the square at a random position instead (one per clip); evaluation
data always uses the centre.

Deviation: CAV-MAE resizes with PIL's bicubic filter; we use bilinear.
"""

from __future__ import annotations

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

from datamodules.preprocessing import Preprocessing


def frames_to_tensor(frames: Tensor, pre: Preprocessing,
                     generator: torch.Generator | None = None) -> Tensor:
    """Resizes, crops and normalises decoded frames: `normalize_video` of `resize_and_crop`.

    Args:
        frames: uint8 ``[T, H, W, 3]`` RGB, as `read_clip` returns them.
        pre: ``frame_size`` (S), ``crop`` (``center``, or ``random``: one position for the whole
            clip, so the frames stay aligned), ``video_mean`` and ``video_std`` (RGB in [0, 1]).
        generator: draws the random crop position (None: torch's global RNG).

    Returns:
        float32 ``[3, T, S, S]``.

    Raises:
        ValueError: if ``frames`` is not uint8 ``[T, H, W, 3]``.
    """
    return normalize_video(resize_and_crop(frames, pre, generator), pre)


def resize_and_crop(frames: Tensor, pre: Preprocessing, generator: torch.Generator | None = None) -> Tensor:
    """The geometric part of `frames_to_tensor`, still uint8: ``[3, T, S, S]``.

    Kept separate so the streaming decoder process can send uint8 (4x less than float32) and
    the DataLoader worker normalises.
    """
    check_frames(frames)
    size = pre.frame_size
    video = frames.permute(0, 3, 1, 2)  # (T, 3, H, W)
    video = TF.resize(video, [size], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    if pre.crop == "random":
        height, width = video.shape[-2:]
        top = int(torch.randint(height - size + 1, (1,), generator=generator))
        left = int(torch.randint(width - size + 1, (1,), generator=generator))
        video = TF.crop(video, top, left, size, size)  # (T, 3, S, S)
    else:
        video = TF.center_crop(video, [size, size])  # (T, 3, S, S)
    return video.permute(1, 0, 2, 3).contiguous()  # (3, T, S, S)


def check_frames(frames: Tensor) -> None:
    """Raises ValueError unless ``frames`` are decoded frames, uint8 ``[T, H, W, 3]``."""
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")


def normalize_video(video: Tensor, pre: Preprocessing) -> Tensor:
    """uint8 ``[3, T, S, S]`` to float32 in [0, 1], normalised per channel with ``pre``'s statistics."""
    mean = torch.tensor(pre.video_mean, dtype=torch.float32).view(3, 1, 1, 1)
    std = torch.tensor(pre.video_std, dtype=torch.float32).view(3, 1, 1, 1)
    return (video.float() / 255 - mean) / std
