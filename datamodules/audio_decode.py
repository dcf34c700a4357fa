"""Decode the audio of a clip with PyAV, placed on the video's timeline by timestamps.

A decoded audio frame's first sample plays at ``pts * time_base`` in stream time; subtracting the
video stream's start time puts it on the clip's timeline, so a delayed audio track or an MPEG-TS
offset lands where it belongs. FFmpeg itself drops encoder priming where the container records it
(mp4/mov edit lists, Matroska/WebM codec delay: AAC's 1024 samples, Opus pre-skip); AVI cannot
record it, so `unrecorded_priming_s` gives what to subtract there.

Only the clip and a small margin are decoded: for clips past the first second the file is sought
to shortly before the clip, so long files cost no more than short ones. Where that seek misses
(lands after the clip's start, or inside a packet that then fails to decode), the clip is decoded
from the file's start instead. Channels are averaged to mono at the native rate, then resampled
with torchaudio's windowed sinc (zero phase, so timing is kept exactly).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np
import torch
import torchaudio

# Encoder delay (samples) that AVI has no field for, so FFmpeg leaves it at the start of the
# decoded audio: AAC encoders prime with one 1024-sample frame; LAME-style MP3 with 576 samples
# plus the decoder's 529 (measured: a click written at 1 s decodes at 1.064 s from AAC-in-AVI at
# 16 kHz, at 1.069 s from MP3-in-AVI).
_AVI_PRIMING_SAMPLES = {"aac": 1024, "mp3": 1105}

MARGIN_S = 0.05  # decoded on each side of the clip, so resampling sees real neighbours
_SEEK_PREROLL_S = 0.5  # seek this much earlier: AAC overlap, MP3 bit reservoir, Opus pre-roll
# A frame whose timestamp is within this of the end of the previous frame is placed right after
# it: timestamps are rounded (Matroska stores milliseconds) and would leave 1-sample gaps.
_JITTER_S = 0.01


def unrecorded_priming_s(container: str, codec: str, sample_rate: int) -> float:
    """Encoder priming left in the decoded audio because the container cannot record it.

    Args:
        container: FFmpeg's container format name, e.g. ``"avi"``.
        codec: the audio codec, e.g. ``"aac"``.
        sample_rate: the stream's rate in Hz.

    Returns:
        Seconds to subtract from the stream's timestamps (0 for containers that record it).
    """
    if container != "avi" or sample_rate <= 0:
        return 0.0
    return _AVI_PRIMING_SAMPLES.get(codec, 0) / sample_rate


@dataclass
class _Span:
    """Decoded audio around a clip, at the native rate, on the video timeline."""

    samples: np.ndarray  # float32 (N,), zeros where nothing was decoded
    decoded: np.ndarray  # bool (N,), which samples came from the file
    first: int  # timeline index (at `rate`) of samples[0]
    rate: int
    began_s: float  # timeline time of the first decoded sample; inf when none


def read_audio(path: str, start_s: float, seconds: float, sample_rate: int,
               offset_s: float) -> tuple[np.ndarray, float]:
    """Decodes ``[start_s, start_s + seconds)`` of a file's first audio stream as mono.

    Args:
        path: a file with an audio stream.
        start_s: clip start on the video timeline (0 = the video stream's start).
        seconds: clip length.
        sample_rate: output rate in Hz.
        offset_s: stream time of timeline time 0: the video stream's start time plus any
            `unrecorded_priming_s`.

    Returns:
        ``waveform`` float32 ``[round(seconds * sample_rate)]``, zero where the file has no audio,
        and ``real`` bool of the same length: which samples were decoded from the file (False
        where the waveform is zero padding: before a delayed track, after it ends, in a gap).

    Raises:
        av.FFmpegError: the audio data is corrupt.
        ValueError: the stream changes its sample rate or channel layout part-way.
    """
    length = round(seconds * sample_rate)
    seek_s = start_s - MARGIN_S - _SEEK_PREROLL_S
    span = None
    if seek_s > 0:
        try:
            span = _decode_span(path, start_s, seconds, offset_s, seek_s)
        except av.FFmpegError:  # a seek can land inside a packet (MPEG-PS): try from the start
            span = None
    if span is None or span.began_s > start_s:  # not sought, or the seek overshot (a poor index)
        span = _decode_span(path, start_s, seconds, offset_s, None)
    if span is None:  # the stream gave no audio at all
        return np.zeros(length, np.float32), np.zeros(length, bool)
    waveform = torch.from_numpy(span.samples)  # (N,) at span.rate
    if span.rate != sample_rate:
        waveform = _resampler(span.rate, sample_rate)(waveform)
    lo = round((start_s - span.first / span.rate) * sample_rate)
    out = np.zeros(length, np.float32)  # (samples,)
    part = waveform[lo:lo + length].numpy()
    out[:len(part)] = part
    # The native sample nearest to each output sample says whether it was decoded.
    native = np.round((start_s + np.arange(length) / sample_rate) * span.rate).astype(np.int64) - span.first
    inside = (native >= 0) & (native < len(span.decoded))
    real = np.zeros(length, bool)  # (samples,)
    real[inside] = span.decoded[native[inside]]
    return out, real


@functools.lru_cache(maxsize=8)
def _resampler(orig: int, new: int) -> torchaudio.transforms.Resample:
    # Cached: building the sinc kernel costs more than resampling for rates like 44056 Hz.
    return torchaudio.transforms.Resample(orig, new)


def _decode_span(path: str, start_s: float, seconds: float, offset_s: float,
                 seek_s: float | None) -> _Span | None:
    span = None
    expected = None  # timeline index where the next frame goes when it follows on
    with av.open(path, metadata_errors="ignore") as container:
        stream = container.streams.audio[0]
        stream.codec_context.thread_count = 1
        if seek_s is not None:  # lands on a packet at or before the target
            container.seek(int((seek_s + offset_s) / stream.time_base), stream=stream)
        for time_s, samples, rate in _mono_frames(container, stream):
            if span is None:
                first = math.floor((start_s - MARGIN_S) * rate)
                size = math.ceil((start_s + seconds + MARGIN_S) * rate) - first
                span = _Span(np.zeros(size, np.float32), np.zeros(size, bool), first, rate, math.inf)
            elif rate != span.rate:
                raise ValueError(f"the sample rate changes from {span.rate} to {rate} Hz")
            if time_s is None:  # no timestamp: it follows on (or starts the stream, at 0)
                at = round(-offset_s * rate) if expected is None else expected
            else:
                at = round((time_s - offset_s) * rate)
                if expected is not None and abs(at - expected) <= _JITTER_S * rate:
                    at = expected
            span.began_s = min(span.began_s, at / rate)
            expected = at + len(samples)
            lo, hi = max(at, span.first), min(expected, span.first + len(span.samples))
            if hi > lo:
                span.samples[lo - span.first:hi - span.first] = samples[lo - at:hi - at]
                span.decoded[lo - span.first:hi - span.first] = True
            if at >= span.first + len(span.samples):
                break
    return span


def _mono_frames(container: av.container.InputContainer,
                 stream: av.audio.stream.AudioStream) -> Iterator[tuple[float | None, np.ndarray, int]]:
    """``(stream time of the first sample, mono float32 samples, rate)`` per decoded frame.

    Mono is the plain mean of all channels (LFE included), so a signal copied to every channel
    keeps its level. (FFmpeg's downmix weighs stereo 0.71 per channel and 5.1 with a total gain
    of 3.4, so loudness would depend on the layout.)
    """
    to_float = av.AudioResampler(format="fltp")  # same layout and rate, planar float
    for frame in container.decode(stream):
        planes = [converted.to_ndarray() for converted in to_float.resample(frame)]  # (C, n) each
        if planes:
            samples = np.concatenate(planes, axis=1).mean(axis=0, dtype=np.float32)
            yield frame.time, samples, frame.sample_rate
