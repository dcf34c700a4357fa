"""Media files for tests: good clips with known content, and every kind of bad file.

A plain helper module (not a test file); test files import it as ``import media`` because pytest
puts ``tests/`` on ``sys.path`` (the folder has no ``__init__.py``). Everything is rendered with
PyAV in a folder the test gives (use ``tmp_path``); nothing is downloaded.

Good clips carry content a test can check after decoding:

* video frame ``t`` is a flat grey of level ``GREY_STEP * t`` (`grey_level` inverts it), so a
  test can tell which frames were sampled;
* the audio is a sine tone, optionally with a loud click at a chosen time, so a test can tell
  where the audio was cut.

`write_flash_clip` writes any codec pair PyAV can encode, in any container: dark frames with one
white frame and a tone burst starting at exactly the same time, so a test can measure the offset
between the decoded audio and video.

`write_chirp_clip` writes `ramp_frames` with a rising chirp: every stretch of its audio tells when
it starts (`chirp_start_s`), as every frame does, so a test can measure where a clip's audio and
video windows start, wherever they are in the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from datamodules.encode import write_mp4

GREY_STEP = 8  # grey level added per frame; frames stay distinct up to 32 frames
_FORMATS = {".mkv": "matroska", ".mov": "mov"}  # by file suffix; anything else is written as mp4
FLASH_LEVEL, DARK_LEVEL = 255, 16  # grey of the flash frame and of every other frame
BURST_HZ, BURST_S = 1000.0, 0.02  # the tone burst that marks the flash in the audio


def ramp_frames(num_frames: int, size: int) -> np.ndarray:
    """Flat grey frames, frame ``t`` at level ``min(GREY_STEP * t, 255)``; uint8 ``[T, S, S, 3]``."""
    levels = np.minimum(np.arange(num_frames) * GREY_STEP, 255).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (num_frames, size, size, 3)).copy()


def grey_level(frame: np.ndarray) -> int:
    """The frame index a decoded `ramp_frames` frame encodes (its mean grey over GREY_STEP)."""
    return int(round(float(np.mean(frame)) / GREY_STEP))


def tone(seconds: float, sample_rate: int = 16000, hz: float = 440.0, amplitude: float = 0.3,
         click_at_s: float | None = None) -> np.ndarray:
    """A sine tone, float32 ``[samples]``; with ``click_at_s``, silence except a 5 ms loud click."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    if click_at_s is None:
        return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)
    click = (t >= click_at_s) & (t < click_at_s + 0.005)
    return np.where(click, 0.9 * np.sin(2 * np.pi * 2000 * t), 0.0).astype(np.float32)


def write_av_clip(path: Path, seconds: float = 1.0, size: int = 32, fps: int = 8,
                  with_audio: bool = True, with_video: bool = True, sample_rate: int = 16000,
                  tone_hz: float = 440.0, click_at_s: float | None = None,
                  audio_start_s: float = 0.0) -> Path:
    """Writes a clip of `ramp_frames` and a `tone`; the container follows the suffix.

    Args:
        path: output file; ``.mkv`` is Matroska, ``.mov`` QuickTime, anything else mp4 (so an
            audio-only ``.m4a`` or ``.mp4`` works).
        seconds: length of each stream.
        size: frame width and height, even (H.264 yuv420p).
        fps: frame rate.
        with_audio: write an AAC audio stream.
        with_video: write an H.264 video stream.
        sample_rate: audio sample rate.
        tone_hz: frequency of the tone.
        click_at_s: replace the tone by silence with a click at this time (audio time).
        audio_start_s: delay of the audio stream after the first frame.

    Returns:
        ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = ramp_frames(round(seconds * fps), size) if with_video else None
    audio = tone(seconds, sample_rate, tone_hz, click_at_s=click_at_s) if with_audio else None
    write_mp4(path, frames, fps, audio, sample_rate, _FORMATS.get(path.suffix.lower(), "mp4"),
              audio_start_s=audio_start_s)
    return path


CHIRP_HZ, CHIRP_HZ_PER_S = 300.0, 400.0  # `write_chirp_clip`: frequency at 0 s, and its rise per second


def write_chirp_clip(path: Path, seconds: float = 4.0, size: int = 32, fps: int = 8,
                     sample_rate: int = 16000) -> Path:
    """Writes `ramp_frames` (at most 32 frames: ``seconds * fps <= 32``) and a linear chirp whose
    frequency at time ``t`` is ``CHIRP_HZ + CHIRP_HZ_PER_S * t``, in mp4."""
    assert seconds * fps <= 32, "ramp frames stay distinct up to 32 frames"
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    audio = (0.3 * np.sin(2 * np.pi * (CHIRP_HZ * t + CHIRP_HZ_PER_S * t**2 / 2))).astype(np.float32)
    write_mp4(path, ramp_frames(round(seconds * fps), size), fps, audio, sample_rate, "mp4")
    return path


def chirp_start_s(waveform: np.ndarray, sample_rate: int = 16000) -> float:
    """When a stretch of `write_chirp_clip`'s audio starts in the file, in seconds.

    The power-weighted mean frequency of a linear chirp (a Hann window keeps it symmetric) is its
    frequency at the stretch's centre, which gives the time; accurate to about 10 ms.
    """
    spectrum = np.abs(np.fft.rfft(waveform * np.hanning(len(waveform)))) ** 2
    hz = np.fft.rfftfreq(len(waveform), 1 / sample_rate)
    centre_hz = float((spectrum * hz).sum() / spectrum.sum())
    return (centre_hz - CHIRP_HZ) / CHIRP_HZ_PER_S - len(waveform) / sample_rate / 2


def write_flash_clip(path: Path, seconds: float = 2.0, fps: float = 8, width: int = 32,
                     height: int = 32, flash_at_s: float = 1.0, video_codec: str = "libx264",
                     pix_fmt: str = "yuv420p", audio_codec: str = "aac", sample_rate: int = 16000,
                     layout: str = "mono", channel_gains: Sequence[float] | None = None,
                     with_video: bool = True, with_audio: bool = True,
                     audio_seconds: float | None = None, gop_size: int = 12) -> Path:
    """Writes dark frames with one white frame and a tone burst at the same time.

    Frame ``round(flash_at_s * fps)`` is white (`FLASH_LEVEL`), the others dark grey
    (`DARK_LEVEL`) with a white last column and last row, so a decoder that crops or rescales
    frames is caught. The audio is silent except a `BURST_HZ` tone of `BURST_S` seconds starting at
    the flash frame's time (``round(flash_at_s * fps) / fps``), in every channel scaled by
    ``channel_gains``.

    Args:
        path: output file; its suffix picks the container (``.ts`` is MPEG-TS).
        seconds: length of each stream.
        fps: frame rate; below 1 it may be a `Fraction` (e.g. ``Fraction(1, 2000)``: one frame
            every 2000 s, a slide show).
        width: frame width (odd sizes need a codec and pixel format that allow them, e.g.
            libx264 with yuv444p, mpeg4, vp9).
        height: frame height.
        flash_at_s: when the flash and the burst happen.
        video_codec: a PyAV encoder name.
        pix_fmt: the encoded pixel format.
        audio_codec: a PyAV encoder name; its first supported sample format is used.
        sample_rate: audio rate.
        layout: audio channel layout, e.g. ``"mono"``, ``"stereo"``, ``"5.1"``.
        channel_gains: amplitude of the burst per channel (default 0.8 in each).
        with_video: write the video stream.
        with_audio: write the audio stream.
        audio_seconds: length of the audio stream, if not ``seconds``.
        gop_size: frames between keyframes; short, so that decoders seek within the file as they
            do in real videos (1-10 s between keyframes).

    Returns:
        ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    rate, fps = Fraction(fps).limit_denominator(100_000), float(fps)
    flash = round(flash_at_s * fps)
    frames = round(seconds * fps)
    channels = av.AudioLayout(layout).nb_channels
    gains = np.asarray([0.8] * channels if channel_gains is None else channel_gains, np.float32)
    audio_s = seconds if audio_seconds is None else audio_seconds
    t = np.arange(round(audio_s * sample_rate)) / sample_rate
    burst = (t >= flash / fps) & (t < flash / fps + BURST_S)
    mono = np.where(burst, np.sin(2 * np.pi * BURST_HZ * (t - flash / fps)), 0.0)
    audio = (gains[:, None] * mono[None]).astype(np.float32)  # (channels, samples)
    with av.open(str(path), "w") as container:
        video = sound = None
        if with_video:
            video = container.add_stream(video_codec, rate=rate)
            video.width, video.height, video.pix_fmt = width, height, pix_fmt
            video.gop_size = gop_size
        if with_audio:
            sound = container.add_stream(audio_codec, rate=sample_rate, layout=layout)
            sound.format = av.Codec(audio_codec, "w").audio_formats[0]
        chunk = 1024  # samples per frame handed to the encoder (PyAV re-cuts them as needed)
        order = [(i / fps, 0, i) for i in range(frames if with_video else 0)]
        order += [(i / sample_rate, 1, i) for i in range(0, audio.shape[1] if with_audio else 0, chunk)]
        for _, kind, index in sorted(order):  # interleaved in time, as cameras write files
            if kind == 0:
                level = FLASH_LEVEL if index == flash else DARK_LEVEL
                image = np.full((height, width, 3), level, np.uint8)
                image[-1, :], image[:, -1] = FLASH_LEVEL, FLASH_LEVEL
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = index
                container.mux(video.encode(frame))
            else:
                part = np.ascontiguousarray(audio[:, index:index + chunk])
                frame = av.AudioFrame.from_ndarray(part, format="fltp", layout=layout)
                frame.sample_rate, frame.pts = sample_rate, index
                container.mux(sound.encode(frame))
        for stream in (video, sound):
            if stream is not None:
                container.mux(stream.encode(None))
    return path


def write_empty(path: Path) -> Path:
    """A 0-byte file."""
    path.write_bytes(b"")
    return path


def write_random_bytes(path: Path, num_bytes: int = 4096, seed: int = 0) -> Path:
    """Random bytes (not a media file)."""
    path.write_bytes(np.random.default_rng(seed).bytes(num_bytes))
    return path


def write_text(path: Path) -> Path:
    """A text file, e.g. one renamed to ``.mp4`` by mistake."""
    path.write_text("this is a text file, not a video\n" * 20)
    return path


def write_truncated(source: Path, path: Path, fraction: float = 0.5) -> Path:
    """The first ``fraction`` of ``source``'s bytes (an interrupted download or copy)."""
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def write_corrupted(source: Path, path: Path, seed: int = 0) -> Path:
    """``source`` with the middle third of its media data (the mp4 ``mdat`` box) overwritten by
    random bytes: the headers still open, decoding the clip fails (``decode_failed``)."""
    data = bytearray(source.read_bytes())
    box = data.find(b"mdat")
    assert box > 0, f"{source} has no mdat box"
    size = int.from_bytes(data[box - 4:box], "big")
    start, length = box + 4 + size // 3, size // 3
    data[start:start + length] = np.random.default_rng(seed).bytes(length)
    path.write_bytes(bytes(data))
    return path


def write_bad_files(folder: Path, clip_seconds: float = 1.0) -> dict[Path, str]:
    """Writes one file of each kind the scan must skip, with the reason it must give.

    Args:
        folder: where to write them (created if needed).
        clip_seconds: the clip length the test will use; the too-short file lasts a quarter of it.

    Returns:
        ``{path: expected skip reason}`` for empty, random-bytes, text, truncated, video-only,
        audio-only and too-short files, all named ``*.mp4``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    good = write_av_clip(folder / ".source.mp4", seconds=2.0)  # hidden: never listed itself
    files = {
        write_empty(folder / "empty.mp4"): "empty_file",
        write_random_bytes(folder / "random_bytes.mp4"): "unreadable",
        write_text(folder / "text.mp4"): "unreadable",
        write_truncated(good, folder / "truncated.mp4"): "unreadable",
        write_av_clip(folder / "video_only.mp4", with_audio=False): "no_audio",
        write_av_clip(folder / "audio_only.mp4", with_video=False): "no_video",
        write_av_clip(folder / "too_short.mp4", seconds=clip_seconds / 4): "too_short",
    }
    good.unlink()
    return files
