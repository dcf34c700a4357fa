"""How a clip is read from a video file and turned into model inputs.

One dataclass, shared by pretraining, probing and export: the exported backbone carries it, so
new clips are embedded exactly as the pretraining clips were.

Defaults reproduce CAV-MAE's input pipeline (Gong et al., "Contrastive Audio-Visual Masked
Autoencoder", ICLR 2023, arXiv:2210.07839; `YuanGongND/cav-mae@68fe8c2a src/dataloader.py`):
16 kHz mono audio, kaldi fbank with 128 mel bins, 25 ms window and 10 ms shift, padded or cropped
to 1024 frames and normalised with AudioSet statistics (-5.081, 4.4849, no x2); one RGB frame at
224x224 normalised with ImageNet statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from avssl.limits import MAX_AUDIO_FRAMES, MAX_CLIP_SECONDS, MAX_FRAME_SIZE, MAX_MEL_BINS, MAX_VIDEO_FRAMES
from avssl.schema import each, in_range, one_of

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass
class Preprocessing:
    """Clip sampling, decoding and feature settings.

    Attributes:
        clip_seconds: length of one clip; audio and video cover the same seconds.
        num_frames: frames per clip.
        fps: None: the frames sit at the centres of ``num_frames`` equal parts of the clip; a
            number: the frames are taken at this rate (nearest earlier source frame), spanning
            ``num_frames / fps`` seconds centred in the clip (must be <= ``clip_seconds``).
        frame_size: frames are resized (shorter side) to this size, then cropped to a square.
        crop: where the square is cut: ``center``, or ``random`` (one position per clip, the same
            for all its frames; evaluation always uses the centre).
        video_mean: per-channel mean of RGB values in [0, 1].
        video_std: per-channel std of RGB values in [0, 1].
        sample_rate: audio is resampled to this rate and mixed to mono.
        num_mel_bins: mel bins of the kaldi fbank.
        frame_length_ms: fbank window length.
        frame_shift_ms: fbank hop.
        audio_frames: fbank frames after padding with zeros or cropping (CAV-MAE: 1024 = 10.24 s).
        audio_mean: fbank normalisation mean, ``(fbank - mean) / std``.
        audio_std: fbank normalisation std.
    """

    clip_seconds: float = field(default=10.0, metadata=in_range(0.0, MAX_CLIP_SECONDS, include_low=False,
                                                                hint="one clip is decoded into memory at once"))
    num_frames: int = field(default=1, metadata=in_range(1, MAX_VIDEO_FRAMES))
    fps: Optional[float] = field(default=None, metadata=in_range(0.0, 1000.0, include_low=False))
    frame_size: int = field(default=224, metadata=in_range(1, MAX_FRAME_SIZE))
    crop: str = field(default="center", metadata=one_of(["center", "random"]))
    video_mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN), metadata=each(in_range(0.0, 1.0), length=3))
    video_std: list[float] = field(default_factory=lambda: list(IMAGENET_STD),
                                   metadata=each(in_range(0.0, 1.0, include_low=False), length=3))
    sample_rate: int = field(default=16000, metadata=in_range(1000, 384_000))
    num_mel_bins: int = field(default=128, metadata=in_range(1, MAX_MEL_BINS))
    frame_length_ms: float = field(default=25.0, metadata=in_range(0.0, 1000.0, include_low=False))
    frame_shift_ms: float = field(default=10.0, metadata=in_range(0.0, 1000.0, include_low=False))
    audio_frames: int = field(default=1024, metadata=in_range(1, MAX_AUDIO_FRAMES,
                                                              hint="1024 frames are 10.24 s at a 10 ms hop"))
    # kaldi's fbank is a natural log of mel power: its values lie within about [-20, 20]
    audio_mean: float = field(default=-5.081, metadata=in_range(-100.0, 100.0))
    audio_std: float = field(default=4.4849, metadata=in_range(0.0, 100.0, include_low=False))
