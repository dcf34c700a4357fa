"""Media files for tests: good clips with known content, and every kind of bad file.

A plain helper module (not a test file); test files import it as ``import media`` because pytest
puts ``tests/`` on ``sys.path`` (the folder has no ``__init__.py``). Everything is rendered with
PyAV in a folder the test gives (use ``tmp_path``); nothing is downloaded.

Good clips carry content a test can check after decoding:

* video frame ``t`` is a flat grey of level ``GREY_STEP * t`` (`grey_level` inverts it), so a
  test can tell which frames were sampled;
* the audio is a sine tone, optionally with a loud click at a chosen time, so a test can tell
  where the audio was cut.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datamodules.encode import write_mp4

GREY_STEP = 8  # grey level added per frame; frames stay distinct up to 32 frames
_FORMATS = {".mkv": "matroska", ".mov": "mov"}  # by file suffix; anything else is written as mp4


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
        size: frame width and height: even, and not one of `DECORD_BAD_WIDTHS` (16, 24, ...)
            unless the test wants an undecodable file.
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
