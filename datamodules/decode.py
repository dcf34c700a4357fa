"""Read a clip's frames and waveform from a video file, both on the video's timeline.

Who decodes what (docs/data.md, "Who decodes what", has the measurements):

* PyAV reads the container header: which streams exist, where they start, the true frame size.
* decord (`VideoReader`, one thread) decodes the video frames. Where decord fails or is wrong
  (frame widths in `DECORD_BAD_WIDTHS`, containers in `DECORD_WRONG_CONTAINERS`, any decord error
  or frame of the wrong size), PyAV decodes those frames instead, so a file is only rejected when
  FFmpeg itself cannot decode it.
* PyAV decodes the audio (`datamodules.audio_decode`). decord's `AudioReader` is not used: it
  keeps the AAC encoder delay in Matroska and AVI files (the audio came 21-64 ms late) and decodes
  the whole track for every clip.

Timeline. Time 0 is the video stream's start time in the header. Video frame ``j`` is shown
during ``[j / fps, (j + 1) / fps)``: a constant frame rate is assumed (decord's per-frame
timestamps are garbage for AVI files). Audio is placed by its timestamps on the same timeline,
with encoder priming removed (`datamodules.audio_decode`).

What happens to files without audio or shorter than a clip is decided by `DataPolicies`
(``no_audio``, ``short``, ``min_clip_fraction``); everything else that goes wrong is a `ClipError`
with its reason. Decoders are opened inside each call, so this is safe in DataLoader workers.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import av
import decord
import numpy as np
import torch
from torch import Tensor

from datamodules.audio_decode import read_audio, unrecorded_priming_s
from datamodules.errors import ClipError
from datamodules.policies import DataPolicies
from datamodules.preprocessing import Preprocessing
from datamodules.sampling import ContentSpans, clip_window, sample_clip_starts

log = logging.getLogger(__name__)

# Frame widths (pixels) at which decord 0.6.0 cannot return RGB frames: `get_batch` fails with
# "from_size == to_size" (and single frames come back with 6 channels), whatever the height, codec
# or pixel format. Measured for every width from 2 to 1000 px. `read_clip` decodes such files with
# PyAV; the demo refuses these sizes.
DECORD_BAD_WIDTHS = (2, 3, 4, 6, 8, 12, 16, 24, 48, 72)

# Frame times sitting exactly on a frame boundary (e.g. 12 fps sampled from 24 fps) must not fall
# into the previous frame through floating-point error.
_BOUNDARY_EPS = 1e-6

# Containers in which decord 0.6.0 returns wrong frames without an error once it seeks (a GOP
# shorter than the file): MPEG-TS frames were 9 frames late, MPEG-PS ones anywhere (measured with
# frames that encode their index, 10-frame GOPs). `read_clip` decodes them with PyAV.
DECORD_WRONG_CONTAINERS = ("mpeg", "mpegts")
# Containers whose frames PyAV must decode from the start: after a seek, MPEG-PS frames come with
# timestamps 0.5 to 1 frame late (measured), so they would be taken for the next frame.
_PYAV_NO_SEEK_CONTAINERS = ("mpeg",)

_DECORD_ERRORS = (RuntimeError, decord.DECORDError, AssertionError)

# Audio and video tracks rarely end on the same sample, so a clip may miss up to one video frame of
# audio and still count as whole; never more than this, so the multi-second frames of a slide show
# (or a bogus frame rate) cannot excuse missing audio.
_MAX_AUDIO_SLACK_S = 0.25


@dataclass
class FileInfo:
    """What `probe_file` learns about a video file from its headers and decord's index.

    Attributes:
        path: the file.
        duration_s: video duration, ``num_frames / fps``.
        fps: average frame rate.
        num_frames: number of video frames.
        width: frame width in pixels (from the stream header; decoded frames have this size).
        height: frame height in pixels.
        has_audio: whether the container has an audio stream.
        video_start_s: the video stream's start time in the header: time 0 of every clip.
        container: FFmpeg's name of the container format, e.g. ``"avi"``.
        audio_codec: the audio codec, e.g. ``"aac"``; empty without audio.
        audio_sample_rate: native audio rate in Hz from the header; 0 without audio.
        audio_channels: audio channels from the header; 0 without audio.
        audio_span_s: the seconds of the video timeline the audio track covers, from the header
            (stream start and duration; Matroska's per-track DURATION tag); None without audio or
            when the header does not tell (e.g. FLV).
    """

    path: str
    duration_s: float
    fps: float
    num_frames: int
    width: int
    height: int
    has_audio: bool
    video_start_s: float = 0.0
    container: str = ""
    audio_codec: str = ""
    audio_sample_rate: int = 0
    audio_channels: int = 0
    audio_span_s: tuple[float, float] | None = None


def probe_file(path: str | bytes | os.PathLike) -> FileInfo:
    """Reads a file's headers and checks that decord can open its video stream.

    Nothing is decoded except what decord reads to index the video, so probing is cheap.

    Args:
        path: a video file; a name that is not valid UTF-8 (bytes, or a str decoded with
            `os.fsdecode`) works too.

    Returns:
        The file's streams, duration, frame rate, frame count and size.

    Raises:
        ClipError: ``empty_file``, ``unreadable`` or ``no_video``, never anything else for a bad
            file (garbage, text and truncated files included).
    """
    return _probe(os.fsdecode(path))[0]


def clip_starts(info: FileInfo, pre: Preprocessing, policies: DataPolicies = DataPolicies(),
                clips_per_video: int = 1, mode: str = "uniform", rng: np.random.Generator | None = None,
                window: tuple[float | None, float | None] = (None, None), name: str = "") -> list[float]:
    """Chooses the clips of a file where both its video and its audio have content.

    Args:
        info: the file, from `probe_file`.
        pre: gives ``clip_seconds``.
        policies: ``no_audio``, ``short`` and ``min_clip_fraction`` decide which files are kept.
        clips_per_video: how many clips.
        mode: ``uniform`` or ``random`` (see `sample_clip_starts`).
        rng: draws ``random`` starts.
        window: ``(start_s, end_s)`` of a manifest row (None: the file's start or end).
        name: the file as errors name it (default: its path).

    Returns:
        Start times in seconds (see `sample_clip_starts`): by default one clip, centred in the
        seconds both streams cover. A file shorter than a clip gives one clip (with
        ``short="pad"``), which `read_clip` pads.

    Raises:
        ClipError: ``no_audio`` (no audio stream, ``no_audio="skip"``) or ``too_short``.
    """
    _check_audio_policy(info, policies)
    return sample_clip_starts(content_spans(info, window), pre.clip_seconds, clips_per_video, mode,
                              rng or np.random.default_rng(0), policies, name or info.path)


def content_spans(info: FileInfo, window: tuple[float | None, float | None] = (None, None)) -> ContentSpans:
    """Where a file has video and audio, from its headers, and the part clips may come from.

    Args:
        info: the file, from `probe_file`.
        window: ``(start_s, end_s)`` of a manifest row (None: the file's start or end).
    """
    return ContentSpans(window=clip_window(info.duration_s, *window), video=(0.0, info.duration_s),
                        audio=info.audio_span_s, audio_slack_s=_audio_slack_s(info))


@dataclass
class DecodedClip:
    """What `decode_clip` reads for one clip.

    Attributes:
        frames: uint8 ``[T, H, W, 3]`` RGB, T = ``pre.num_frames``, at the file's true size.
        waveform: float32 ``[round(clip_seconds * sample_rate)]``, mono.
        audio_real: bool, the shape of ``waveform``: which samples come from the file's audio
            (False where the waveform is zero padding, or silence for a file without audio).
    """

    frames: Tensor
    waveform: Tensor
    audio_real: Tensor


def read_clip(path: str | bytes | os.PathLike, start_s: float, pre: Preprocessing,
              policies: DataPolicies = DataPolicies(),
              info: FileInfo | None = None) -> tuple[Tensor, Tensor]:
    """The frames and the waveform of ``[start_s, start_s + clip_seconds)`` (see `decode_clip`).

    Returns:
        ``frames``: uint8 ``[T, H, W, 3]`` RGB, T = ``pre.num_frames``, at the file's true size.
        ``waveform``: float32 ``[round(clip_seconds * sample_rate)]``, mono.
    """
    clip = decode_clip(path, start_s, pre, policies, info)
    return clip.frames, clip.waveform


def decode_clip(path: str | bytes | os.PathLike, start_s: float, pre: Preprocessing,
                policies: DataPolicies = DataPolicies(), info: FileInfo | None = None,
                av_offset_s: float = 0.0) -> DecodedClip:
    """Decodes the frames of ``[start_s, start_s + clip_seconds)`` and the waveform of the same
    seconds, or of ``[start_s + av_offset_s, ...)`` with an audio offset (`datamodules.views`).

    Frames: with ``pre.fps`` None, at the centres of ``num_frames`` equal parts of the clip; with
    ``pre.fps``, ``1 / fps`` apart, spanning ``num_frames / fps`` seconds centred in the clip.
    Each is the frame shown at its time (``floor(t * source_fps)``). Where the file ends before the
    clip does (``short="pad"``), the same rule is applied to the part that exists and the audio is
    zero-padded. Audio: every channel averaged to mono, resampled to ``pre.sample_rate``.

    Args:
        path: a video file.
        start_s: clip start in seconds of video time, in ``[0, duration)``.
        pre: clip length, frames, frame rate and audio sample rate.
        policies: what to do without audio (``no_audio``) or with too little file (``short``,
            ``min_clip_fraction``).
        info: the file's `probe_file` result, to skip reading the headers again.
        av_offset_s: where the audio window starts, in seconds after the video window's start
            (negative: before it); 0 keeps audio and video in sync.

    Returns:
        The frames, the waveform and which of its samples are real audio.

    Raises:
        ClipError: ``empty_file``, ``unreadable``, ``no_video``, ``no_audio``, ``too_short`` or
            ``decode_failed``; never another exception for a bad file.
        ValueError: ``start_s < 0`` or ``start_s + av_offset_s < 0``, or ``num_frames / fps``
            longer than ``clip_seconds``.
    """
    path = os.fsdecode(path)
    _check_frame_rate(pre)
    if start_s < 0:
        raise ValueError(f"start_s={start_s}: a clip cannot start before the video (0 s)")
    audio_start_s = start_s + av_offset_s
    if audio_start_s < 0:
        raise ValueError(f"start_s={start_s} with av_offset_s={av_offset_s}: the audio window cannot "
                         "start before the video (0 s)")
    reader = None
    if info is None:
        info, reader = _probe(path)
    _check_audio_policy(info, policies)
    indices = frame_indices(info, start_s, pre, policies)
    frames = _read_frames(info, indices, reader)
    length = round(pre.clip_seconds * pre.sample_rate)
    if not info.has_audio:  # no_audio="silence"
        return DecodedClip(frames, torch.zeros(length), torch.zeros(length, dtype=torch.bool))
    offset_s = info.video_start_s + unrecorded_priming_s(info.container, info.audio_codec,
                                                         info.audio_sample_rate)
    try:
        waveform, real = read_audio(path, audio_start_s, pre.clip_seconds, pre.sample_rate, offset_s)
    except (av.FFmpegError, ValueError) as err:  # ValueError: the stream's format changed
        raise ClipError("decode_failed", f"audio of the clip from {audio_start_s:.2f} s: {_brief(err)}",
                        path) from err
    _check_audio_coverage(info, audio_start_s, float(real.sum()) / pre.sample_rate, pre, policies)
    return DecodedClip(frames, torch.from_numpy(waveform), torch.from_numpy(real))


# --- headers ---------------------------------------------------------------------------------


def _probe(path: str) -> tuple[FileInfo, decord.VideoReader]:
    try:
        size = os.path.getsize(path)
    except OSError as err:
        raise ClipError("unreadable", f"cannot stat the file: {err}", path) from err
    if size == 0:
        raise ClipError("empty_file", "0 bytes", path)
    try:
        # Undecodable text in the metadata is no reason to reject the file.
        with av.open(path, metadata_errors="ignore") as container:
            video, audio = container.streams.video, container.streams.audio
            if not video:
                found = "an audio stream only" if audio else "neither audio nor video streams"
                raise ClipError("no_video", f"the container has {found}", path)
            header = dict(width=video[0].width, height=video[0].height,
                          video_start_s=_start_s(video[0]), container=container.format.name)
            if audio:
                context = audio[0].codec_context
                header.update(audio_codec=context.codec.canonical_name,
                              audio_sample_rate=context.sample_rate, audio_channels=context.channels)
                header.update(audio_span_s=_audio_span_s(audio[0], header))
    except (av.FFmpegError, OSError) as err:
        raise ClipError("unreadable", f"the container cannot be opened: {_brief(err)}", path) from err
    reader = _open_decord(path)
    num_frames, fps = len(reader), reader.get_avg_fps()
    info = FileInfo(path=path, duration_s=num_frames / fps, fps=fps, num_frames=num_frames,
                    has_audio=bool(audio), **header)
    return info, reader


def _audio_span_s(stream: av.stream.Stream, header: dict[str, Any]) -> tuple[float, float] | None:
    """The seconds of the video timeline the audio track covers, as far as the header tells."""
    seconds = None
    if stream.duration and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
    else:  # Matroska/WebM keep a track's length in a tag, e.g. DURATION=00:00:03.064000000
        tag = next((v for k, v in stream.metadata.items() if k.upper().startswith("DURATION")), "")
        match = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d*)?)", tag.strip())
        if match:
            hours, minutes, secs = match.groups()
            seconds = int(hours) * 3600 + int(minutes) * 60 + float(secs)
    if seconds is None or not (math.isfinite(seconds) and seconds > 0):
        return None
    # Stream time of timeline 0, as `read_clip` places the decoded audio.
    offset_s = header["video_start_s"] + unrecorded_priming_s(
        header["container"], header["audio_codec"], header["audio_sample_rate"])
    first = _start_s(stream) - offset_s
    return first, first + seconds


def _start_s(stream: av.stream.Stream) -> float:
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def _open_decord(path: str) -> decord.VideoReader:
    # One decoding thread: DataLoader workers are the parallelism; decord's default uses all cores.
    try:
        with _decord_name(path) as name:
            reader = decord.VideoReader(name, num_threads=1)
        fps = reader.get_avg_fps()
    except (*_DECORD_ERRORS, OSError) as err:
        raise ClipError("unreadable", f"decord cannot open the video stream: {_brief(err)}", path) from err
    if not (math.isfinite(fps) and fps > 0):
        raise ClipError("unreadable", f"the video stream reports a frame rate of {fps}", path)
    return reader


@contextmanager
def _decord_name(path: str) -> Iterator[str]:
    """A name decord can open for ``path``.

    decord passes file names to FFmpeg as UTF-8 and raises UnicodeEncodeError for a name that is
    not (Linux names are bytes; Python keeps the undecodable ones as surrogates, `os.fsdecode`),
    and accepts neither bytes nor, without reading the whole file into memory, a file object.
    Such a file is opened here and handed over as ``/proc/self/fd/N``: FFmpeg opens that link,
    which gives it the same file under its own descriptor, so ours is closed once the reader exists.
    """
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        pass
    else:
        yield path
        return
    if not os.path.isdir("/proc/self/fd"):
        raise ClipError("unreadable", "the file name is not valid UTF-8 and this system has no "
                        "/proc/self/fd to hand it to decord; rename the file", path)
    fd = os.open(path, os.O_RDONLY)
    try:
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def _brief(err: BaseException) -> str:
    """First line of a decoder message, short enough for a report."""
    lines = str(err).strip().splitlines()
    if not lines:
        return type(err).__name__
    return re.sub(r"^(\[[\d:]+\] \S+: )+", "", lines[0])[:300]  # decord's "[time] file.cc:line: "


# --- policies --------------------------------------------------------------------------------


def _check_frame_rate(pre: Preprocessing) -> None:
    if pre.fps is not None and pre.num_frames / pre.fps > pre.clip_seconds + _BOUNDARY_EPS:
        raise ValueError(
            f"data.preprocessing: num_frames={pre.num_frames} at fps={pre.fps} span "
            f"{pre.num_frames / pre.fps:.3f} s, longer than clip_seconds={pre.clip_seconds}; "
            "lower num_frames, raise fps or lengthen the clip.")


def _check_audio_policy(info: FileInfo, policies: DataPolicies) -> None:
    if not info.has_audio and policies.no_audio == "skip":
        raise ClipError("no_audio", "the container has no audio stream (data.policies.no_audio="
                        "skip; set it to silence to use such files with silent audio)", info.path)


def _video_seconds(info: FileInfo, start_s: float, pre: Preprocessing,
                   policies: DataPolicies) -> float:
    """Seconds of video in the clip, if the `short` policy accepts them."""
    have = max(0.0, min(start_s + pre.clip_seconds, info.duration_s) - start_s)
    if have >= pre.clip_seconds - _BOUNDARY_EPS:
        return pre.clip_seconds
    where = f"{have:.2f} s of video from {start_s:.2f} s (file: {info.duration_s:.2f} s)"
    if policies.short == "skip":
        raise ClipError("too_short", f"{where}, less than clip_seconds={pre.clip_seconds}; "
                        "data.policies.short=skip skips such clips (pad would use them)", info.path)
    _check_fraction(have, "video", where, pre, policies, info.path)
    return have


def _check_audio_coverage(info: FileInfo, start_s: float, covered_s: float, pre: Preprocessing,
                          policies: DataPolicies) -> None:
    where = (f"the decoded audio covers {covered_s:.2f} s of the clip from {start_s:.2f} s "
             f"(a shorter, delayed or damaged audio track)")
    if policies.short == "pad":
        _check_fraction(covered_s, "audio", where, pre, policies, info.path)
    elif covered_s < pre.clip_seconds - _audio_slack_s(info):
        raise ClipError("too_short", f"{where}; data.policies.short=skip skips clips that need "
                        "padding", info.path)


def _audio_slack_s(info: FileInfo) -> float:
    """Audio a clip may miss and still count as whole: one video frame, at most 0.25 s."""
    return min(1 / info.fps, _MAX_AUDIO_SLACK_S)


def _check_fraction(have_s: float, what: str, where: str, pre: Preprocessing,
                    policies: DataPolicies, path: str) -> None:
    fraction = policies.min_clip_fraction
    if have_s < fraction * pre.clip_seconds - _BOUNDARY_EPS:
        share = "half" if fraction == 0.5 else f"{fraction:g}"
        raise ClipError("too_short", f"{where}; a clip needs at least {fraction * pre.clip_seconds:.2f}"
                        f" s of {what} ({share} of clip_seconds={pre.clip_seconds}, "
                        "data.policies.min_clip_fraction)", path)


# --- video -----------------------------------------------------------------------------------


def frame_indices(info: FileInfo, start_s: float, pre: Preprocessing,
                  policies: DataPolicies = DataPolicies()) -> list[int]:
    """The source frames `read_clip` decodes for the clip from ``start_s`` (see its docstring).

    Raises:
        ClipError: ``too_short`` when the `short` policy rejects the clip.
    """
    video_s = _video_seconds(info, start_s, pre, policies)
    count = pre.num_frames
    step = video_s / count if pre.fps is None else min(1 / pre.fps, video_s / count)
    times = start_s + (video_s - count * step) / 2 + (np.arange(count) + 0.5) * step  # (T,)
    indices = np.floor(times * info.fps + _BOUNDARY_EPS).astype(np.int64)
    return np.clip(indices, 0, info.num_frames - 1).tolist()


def _read_frames(info: FileInfo, indices: list[int], reader: decord.VideoReader | None) -> Tensor:
    """decord's frames, or PyAV's where decord cannot give them at the file's size."""
    expected = (len(indices), info.height, info.width, 3)
    if info.width in DECORD_BAD_WIDTHS:
        decord_problem = f"width {info.width} is in DECORD_BAD_WIDTHS"
    elif info.container in DECORD_WRONG_CONTAINERS:
        decord_problem = f"container {info.container!r} is in DECORD_WRONG_CONTAINERS"
    else:
        try:
            reader = _open_decord(info.path) if reader is None else reader
            frames = _as_numpy(reader.get_batch(indices))  # (T, H, W, 3) uint8
        except (ClipError, *_DECORD_ERRORS) as err:
            decord_problem = _brief(err)
        else:
            if frames.shape == expected:
                return torch.from_numpy(np.ascontiguousarray(frames))
            decord_problem = f"frames of shape {frames.shape}, expected {expected}"
    log.debug("%s: decoding frames %s with PyAV (decord: %s)", info.path, indices, decord_problem)
    try:
        frames = _pyav_frames(info, indices)
    except av.FFmpegError as err:
        raise ClipError("decode_failed", f"frames {indices}: {_brief(err)} (decord: "
                        f"{decord_problem})", info.path) from err
    if frames.shape != expected:
        raise ClipError("decode_failed", f"frames {indices}: decoded {frames.shape}, expected "
                        f"{expected} (decord: {decord_problem})", info.path)
    return torch.from_numpy(frames)


def _as_numpy(array: Any) -> np.ndarray:
    """decord returns `decord.nd.NDArray` unless a `decord.bridge` was set (then e.g. a tensor)."""
    return array.asnumpy() if hasattr(array, "asnumpy") else np.asarray(array)


def _pyav_frames(info: FileInfo, indices: list[int]) -> np.ndarray:
    """The frames at ``indices`` (frame ``j`` is shown from ``j / fps``), decoded by PyAV.

    Decoding starts at the keyframe before the first wanted frame; where that seek overshoots,
    finds nothing to decode (MPEG-TS with a long GOP) or lands inside a packet that fails to
    decode, it starts at the beginning instead.
    """
    wanted = sorted(set(indices))
    shown = None
    if wanted[0] > 0 and info.container not in _PYAV_NO_SEEK_CONTAINERS:
        try:
            shown = _pyav_decode(info, wanted, seek=True)
        except av.FFmpegError:  # a seek can land inside a packet: try from the start
            shown = None
    if shown is None:
        shown = _pyav_decode(info, wanted, seek=False)
    if shown is None:
        raise ClipError("decode_failed", "PyAV decoded no video frame", info.path)
    return np.stack([shown[i] for i in indices])  # (T, H, W, 3)


def _pyav_decode(info: FileInfo, wanted: list[int], seek: bool) -> dict[int, np.ndarray] | None:
    """``{index: RGB frame}`` for the sorted ``wanted`` indices; None if nothing fits."""
    shown: dict[int, np.ndarray] = {}
    pending = list(wanted)
    with av.open(info.path, metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        if seek:  # lands on the keyframe at or before the first wanted frame
            target_s = info.video_start_s + wanted[0] / info.fps
            container.seek(int(target_s / stream.time_base), stream=stream)
        previous, index = None, -1
        for frame in container.decode(stream):
            if frame.time is None:  # no timestamp: the next frame
                index += 1
            else:
                index = round((frame.time - info.video_start_s) * info.fps)
            if seek and previous is None and index > pending[0]:
                return None  # the seek went past the first wanted frame
            while pending and pending[0] < index:  # `previous` was on screen at pending[0]
                on_screen = frame if previous is None else previous
                shown[pending.pop(0)] = on_screen.to_ndarray(format="rgb24")
            if not pending:
                return shown
            previous = frame
        if previous is None:
            return None
        for rest in pending:  # past the last frame, which stays on screen
            shown[rest] = previous.to_ndarray(format="rgb24")
    return shown
