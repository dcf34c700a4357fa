"""Read a clip's frames and waveform from a video file.

decord decodes both modalities (`decord.VideoReader`, `decord.AudioReader`); PyAV reads only the
container header, to learn which streams exist and where they start. Everything here opens its
decoders inside the call, so it is safe to run in DataLoader workers.

Timing policy. decord's frame timestamps count from the video stream's first frame, and decord's
audio array starts at the audio stream's first sample. Streams may start at different times (an
MPEG-TS file, a delayed audio track), so audio sample ``i`` is played at
``audio_offset + i / sample_rate`` seconds of *video* time, with ``audio_offset`` the difference of
the two streams' start times in the header. Video frame ``j`` is shown during
``[j / fps, (j + 1) / fps)``: a constant frame rate is assumed (decord's timestamps are garbage for
AVI files, so they are not used).

Known decord 0.6.0 quirks handled here:
    * errors come as ``RuntimeError`` (open failed), ``DECORDError`` (not a RuntimeError) or an
      ``AssertionError`` (a video stream with 0 frames);
    * `AudioReader` decodes and resamples the whole track on open, and on corrupt data it stops
      early without raising, so the audio it returns is checked against the clip it must cover;
    * `AudioReader.duration()` is truncated to whole seconds, so the sample count is used instead;
    * frames of a few narrow widths cannot be decoded at all (`DECORD_BAD_WIDTHS`);
    * slicing an `AudioReader` wraps negative starts around, so slices are clamped first;
    * the output type follows `decord.bridge`, which other code may switch (per thread) to torch.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import decord
import numpy as np
import torch
from torch import Tensor

from datamodules.errors import ClipError
from datamodules.preprocessing import Preprocessing

# A clip needs at least this fraction of `clip_seconds` of real video and audio; the rest of the
# audio is zero-padded and the frames are spread over what exists. Shorter files are skipped.
MIN_CLIP_FRACTION = 0.5

# Frame widths (pixels) at which decord 0.6.0 cannot return RGB frames: `get_batch` fails with
# "from_size == to_size" and single frames come back with 6 channels. Measured for even widths
# 8-998 on H.264 yuv420p; real videos are not this narrow, but synthetic ones may be.
DECORD_BAD_WIDTHS = (8, 12, 16, 24, 48, 72)

_DECORD_ERRORS = (RuntimeError, decord.DECORDError, AssertionError)


@dataclass
class FileInfo:
    """What `probe_file` learns about a video file from its headers.

    Attributes:
        path: the file.
        duration_s: video duration, ``num_frames / fps``.
        fps: average frame rate.
        num_frames: number of video frames.
        width: frame width in pixels.
        height: frame height in pixels.
        has_audio: whether the container has an audio stream.
    """

    path: str
    duration_s: float
    fps: float
    num_frames: int
    width: int
    height: int
    has_audio: bool


@dataclass
class _Streams:
    has_video: bool
    has_audio: bool
    width: int
    height: int
    audio_offset_s: float  # audio start minus video start, seconds


def _streams(path: str) -> _Streams:
    """Reads the container header (cheap: nothing is decoded)."""
    try:
        # Undecodable text in the metadata is no reason to reject the file.
        with av.open(path, metadata_errors="ignore") as container:
            video, audio = container.streams.video, container.streams.audio
            width, height = (video[0].width, video[0].height) if video else (0, 0)
            offset = _start_s(audio[0]) - _start_s(video[0]) if video and audio else 0.0
    except (av.FFmpegError, OSError) as err:
        raise ClipError("unreadable", f"the container cannot be opened: {_brief(err)}", path) from err
    return _Streams(bool(video), bool(audio), width, height, offset)


def _start_s(stream: av.stream.Stream) -> float:
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def _brief(err: BaseException) -> str:
    """First line of a decoder message, short enough for a report."""
    lines = str(err).strip().splitlines()
    return lines[0][:300] if lines else type(err).__name__


def _as_numpy(array: Any) -> np.ndarray:
    """decord returns `decord.nd.NDArray` unless a `decord.bridge` was set (then e.g. a tensor)."""
    return array.asnumpy() if hasattr(array, "asnumpy") else np.asarray(array)


def _open_video(path: str) -> decord.VideoReader:
    # One decoding thread: DataLoader workers are the parallelism; decord's default uses all cores.
    try:
        reader = decord.VideoReader(path, num_threads=1)
        fps = reader.get_avg_fps()
    except _DECORD_ERRORS as err:
        raise ClipError("unreadable", f"decord cannot open the video stream: {_brief(err)}", path) from err
    if not (math.isfinite(fps) and fps > 0):
        raise ClipError("unreadable", f"the video stream reports a frame rate of {fps}", path)
    return reader


def probe_file(path: str | Path) -> FileInfo:
    """Reads a file's headers and checks that decord can open its video stream.

    Nothing is decoded except what decord reads to index the video, so probing is cheap.

    Args:
        path: a video file.

    Returns:
        The file's duration, frame rate, frame count, size and whether it has audio.

    Raises:
        ClipError: ``empty_file``, ``unreadable`` or ``no_video``, never anything else for a bad
            file (garbage, text and truncated files included).
    """
    path = str(path)
    try:
        size = os.path.getsize(path)
    except OSError as err:
        raise ClipError("unreadable", f"cannot stat the file: {err}", path) from err
    if size == 0:
        raise ClipError("empty_file", "0 bytes", path)
    streams = _streams(path)
    if not streams.has_video:
        found = "an audio stream only" if streams.has_audio else "neither audio nor video streams"
        raise ClipError("no_video", f"the container has {found}", path)
    reader = _open_video(path)
    num_frames, fps = len(reader), reader.get_avg_fps()
    return FileInfo(path=path, duration_s=num_frames / fps, fps=fps, num_frames=num_frames,
                    width=streams.width, height=streams.height, has_audio=streams.has_audio)


def clip_starts(info: FileInfo, pre: Preprocessing) -> list[float]:
    """Chooses the clips of a file: for now one, centred in the file.

    Args:
        info: the file, from `probe_file`.
        pre: gives ``clip_seconds``.

    Returns:
        Start times in seconds. A file shorter than a clip (but at least half a clip long) gives
        one clip at 0 s, whose audio `read_clip` zero-pads.

    Raises:
        ClipError: ``too_short`` when the file is shorter than half a clip.
    """
    if info.duration_s < MIN_CLIP_FRACTION * pre.clip_seconds:
        raise ClipError("too_short", f"{info.duration_s:.2f} s of video; a clip needs at least "
                        f"{MIN_CLIP_FRACTION * pre.clip_seconds:.2f} s (half of clip_seconds="
                        f"{pre.clip_seconds})", info.path)
    return [max(0.0, (info.duration_s - pre.clip_seconds) / 2)]


def read_clip(path: str | Path, start_s: float, pre: Preprocessing) -> tuple[Tensor, Tensor]:
    """Decodes the frames and the waveform of ``[start_s, start_s + clip_seconds)``.

    Frames are taken at the centres of ``num_frames`` equal parts of the clip (the frame shown
    at each time). Where the file ends before the clip does, the frames are spread over the part
    that exists and the audio is zero-padded; at least half a clip must exist.

    Args:
        path: a video file with an audio stream.
        start_s: clip start in seconds of video time.
        pre: clip length, number of frames and audio sample rate.

    Returns:
        ``frames``: uint8 ``[T, H, W, 3]`` RGB, T = ``pre.num_frames``, at the file's size.
        ``waveform``: float32 ``[pre.sample_rate * pre.clip_seconds]``, mono.

    Raises:
        ClipError: ``unreadable``, ``no_video``, ``no_audio``, ``too_short`` or ``decode_failed``.
    """
    path = str(path)
    streams = _streams(path)
    if not streams.has_video:
        raise ClipError("no_video", "the container has no video stream", path)
    if not streams.has_audio:
        raise ClipError("no_audio", "the container has no audio stream", path)
    reader = _open_video(path)
    duration_s = len(reader) / reader.get_avg_fps()
    end_s = min(start_s + pre.clip_seconds, duration_s)
    if end_s - start_s < MIN_CLIP_FRACTION * pre.clip_seconds:
        raise ClipError("too_short", f"the clip starting at {start_s:.2f} s has "
                        f"{max(0.0, end_s - start_s):.2f} s of video (file: {duration_s:.2f} s)", path)
    frames = _read_frames(reader, start_s, end_s, pre.num_frames, path)
    waveform = _read_audio(path, start_s, streams.audio_offset_s, pre)
    return frames, waveform


def _read_frames(reader: decord.VideoReader, start_s: float, end_s: float, num_frames: int,
                 path: str) -> Tensor:
    fps = reader.get_avg_fps()
    times = start_s + (np.arange(num_frames) + 0.5) * (end_s - start_s) / num_frames
    indices = np.clip(np.floor(times * fps).astype(np.int64), 0, len(reader) - 1).tolist()
    try:
        frames = _as_numpy(reader.get_batch(indices))  # (T, H, W, 3) uint8
    except _DECORD_ERRORS as err:
        raise ClipError("decode_failed", f"frames {indices}: {_brief(err)}", path) from err
    if frames.ndim != 4 or frames.shape[0] != num_frames or frames.shape[3] != 3:
        raise ClipError("decode_failed", f"decord returned frames of shape {frames.shape} "
                        f"(see DECORD_BAD_WIDTHS)", path)
    return torch.from_numpy(np.ascontiguousarray(frames))


def _read_audio(path: str, start_s: float, offset_s: float, pre: Preprocessing) -> Tensor:
    rate = pre.sample_rate
    try:
        reader = decord.AudioReader(path, sample_rate=rate, mono=True)
    except _DECORD_ERRORS as err:
        raise ClipError("decode_failed", f"audio stream: {_brief(err)}", path) from err
    total = reader.shape[1]
    length = round(pre.clip_seconds * rate)
    first = round((start_s - offset_s) * rate)  # may be < 0 when the audio starts late
    lo, hi = min(max(first, 0), total), min(max(first + length, 0), total)
    if hi - lo < MIN_CLIP_FRACTION * length:
        raise ClipError("too_short", f"the audio track ({total / rate:.2f} s decoded, starting "
                        f"{offset_s:+.2f} s from the video) covers {(hi - lo) / rate:.2f} s of the "
                        f"clip starting at {start_s:.2f} s", path)
    waveform = np.zeros(length, dtype=np.float32)  # (samples,)
    waveform[lo - first:hi - first] = _as_numpy(reader[lo:hi])[0]
    return torch.from_numpy(waveform)
