"""Physical bounds on the size of one clip, shared by ``data.preprocessing`` and `BackboneSpec`.

Each bound is generous (far above any published setting) but keeps one clip's tensors far below a
machine's memory, so that a typo (``audio_frames=100000000``) is a config error naming the key,
not an allocation failure blamed on the data or a model that cannot be built.
"""

from __future__ import annotations

from typing import Optional

MAX_CLIP_SECONDS = 600.0  # 10 minutes; published clips are 1-10 s
MAX_AUDIO_FRAMES = 100_000  # 1000 s of fbank at a 10 ms hop (CAV-MAE: 1024)
MAX_MEL_BINS = 512  # a 25 ms window at 16 kHz has 257 frequency bins (CAV-MAE: 128)
MAX_VIDEO_FRAMES = 256  # (VideoMAE: 16, MBT: 32)
MAX_FRAME_SIZE = 1024  # pixels per side (CAV-MAE: 224)
MAX_CLIP_BYTES = 2**30  # one clip's float32 audio and video inputs together


def clip_size_problem(audio_frames: int, num_mel_bins: int, num_frames: int, frame_size: int) -> Optional[str]:
    """What is wrong with one clip's input size (None: nothing): its float32 fbank and frames
    together must stay within `MAX_CLIP_BYTES`, as a batch holds many clips and workers prefetch more."""
    audio = audio_frames * num_mel_bins * 4
    video = num_frames * 3 * frame_size * frame_size * 4
    if audio + video <= MAX_CLIP_BYTES:
        return None
    return (f"one clip would take {(audio + video) / 2**30:.1f} GiB ({audio_frames} x {num_mel_bins} fbank, "
            f"{num_frames} x 3 x {frame_size} x {frame_size} frames), at most {MAX_CLIP_BYTES // 2**30} GiB")
