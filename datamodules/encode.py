"""Write frames and a waveform to an mp4 file with PyAV (decord can only read).

Used to render the built-in demo clips and the test clips: H.264 video (libx264, yuv420p) and AAC
audio, interleaved in time as a camera or ffmpeg would write them.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

_AAC_FRAME = 1024  # samples per AAC frame


def write_mp4(path: str | Path, frames: np.ndarray | None, fps: int, audio: np.ndarray | None,
              sample_rate: int, container_format: str = "mp4", audio_start_s: float = 0.0) -> None:
    """Encodes a clip; either stream may be left out.

    Args:
        path: the output file.
        frames: uint8 ``[T, H, W, 3]`` RGB with even H and W (yuv420p), or None for no video.
        fps: frame rate of ``frames``.
        audio: float ``[samples]`` mono in [-1, 1], or None for no audio.
        sample_rate: rate of ``audio``.
        container_format: an FFmpeg muxer name ("mp4", "matroska", ...).
        audio_start_s: when the audio stream starts, in seconds after the first frame (a delayed
            audio track, as some cameras and editors write).

    Raises:
        ValueError: if both streams are missing or the frames have an odd size or wrong dtype.
    """
    if audio_start_s < 0:
        raise ValueError(f"audio_start_s={audio_start_s}: must be >= 0")
    if frames is None and audio is None:
        raise ValueError("write_mp4 needs frames, audio or both")
    if frames is not None and (frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3
                               or frames.shape[1] % 2 or frames.shape[2] % 2):
        raise ValueError(f"frames must be uint8 [T, H, W, 3] with even H and W (yuv420p), got "
                         f"{frames.dtype} {frames.shape}")
    with av.open(str(path), "w", format=container_format) as container:
        video = audio_stream = None
        if frames is not None:
            video = container.add_stream("libx264", rate=fps)
            video.height, video.width = frames.shape[1:3]
            video.pix_fmt = "yuv420p"
            video.options = {"preset": "veryfast", "threads": "1"}
        if audio is not None:
            audio_stream = container.add_stream("aac", rate=sample_rate)
            audio_stream.layout = "mono"
        # Interleave in time, as cameras and ffmpeg write files: (time, stream, index) in order.
        order = [(i / fps, 0, i) for i in range(0 if frames is None else len(frames))]
        delay = round(audio_start_s * sample_rate)  # samples
        order += [((delay + i) / sample_rate, 1, i)
                  for i in range(0, 0 if audio is None else len(audio), _AAC_FRAME)]
        for _, kind, index in sorted(order):
            if kind == 0:
                frame = av.VideoFrame.from_ndarray(frames[index], format="rgb24")
                frame.pts = index
                container.mux(video.encode(frame))
            else:
                chunk = audio[index:index + _AAC_FRAME].astype(np.float32)[None]  # (1, samples)
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                frame.sample_rate, frame.pts = sample_rate, delay + index
                container.mux(audio_stream.encode(frame))
        for stream in (video, audio_stream):
            if stream is not None:
                container.mux(stream.encode(None))
