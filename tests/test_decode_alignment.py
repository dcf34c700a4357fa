"""Decoding is correct: audio and video line up, frames keep their true size, the right frames
are picked at any frame rate, audio is mixed, resampled and cut to exact lengths.

Every clip is rendered here with a white frame and a tone burst written at the same instant
(`media.write_flash_clip`); the tests measure where they come out.
"""

from __future__ import annotations

from pathlib import Path

import media
import numpy as np
import pytest
import torch

from datamodules.decode import DECORD_BAD_WIDTHS, probe_file, read_clip
from datamodules.labeled import LabeledClipDataModule
from datamodules.preprocessing import Preprocessing
from datamodules.video_transforms import frames_to_tensor

RATE = 16000

# (file name, video codec, pixel format, audio codec, audio rate): each container with a codec
# pair it is commonly found with. AVI with AAC and MP3 checks the priming that AVI cannot record;
# MPEG-TS and MPEG-PS frames are decoded by PyAV because decord returns wrong frames after a seek
# (the files have a keyframe every 12 frames, so it seeks).
CONTAINERS = [
    ("clip.mp4", "libx264", "yuv420p", "aac", 16000),
    ("clip.mkv", "libx264", "yuv420p", "aac", 44100),
    ("clip.webm", "libvpx-vp9", "yuv420p", "libopus", 48000),
    ("clip.avi", "mpeg4", "yuv420p", "mp3", 16000),
    ("aac.avi", "mpeg4", "yuv420p", "aac", 16000),
    ("clip.mov", "libx264", "yuv420p", "pcm_s16le", 16000),
    ("clip.ts", "libx264", "yuv420p", "aac", 16000),
    ("clip.mpg", "mpeg2video", "yuv420p", "mp2", 16000),
]


def flash_and_burst_s(frames: torch.Tensor, waveform: torch.Tensor, fps: float) -> tuple[float, float]:
    """Clip times of the white frame (all frames sampled at ``fps``) and of the burst's onset."""
    centre = frames[:, frames.shape[1] // 2, frames.shape[2] // 2].float().mean(dim=-1)  # (T,)
    onset = int(np.argmax(np.abs(waveform.numpy()) > 0.1))
    return int(torch.argmax(centre)) / fps, onset / RATE


@pytest.mark.parametrize("name, video_codec, pix_fmt, audio_codec, rate", CONTAINERS)
def test_audio_and_video_start_within_one_frame(tmp_path: Path, name: str, video_codec: str,
                                                pix_fmt: str, audio_codec: str, rate: int) -> None:
    fps = 25
    path = media.write_flash_clip(tmp_path / name, seconds=3.0, fps=fps, flash_at_s=1.6,
                                  video_codec=video_codec, pix_fmt=pix_fmt,
                                  audio_codec=audio_codec, sample_rate=rate)
    pre = Preprocessing(clip_seconds=2.0, num_frames=2 * fps)  # every frame of the clip
    for start in (0.0, 0.8):  # decoded from the file's start, and after a seek
        frames, waveform = read_clip(path, start, pre)
        flash_s, burst_s = flash_and_burst_s(frames, waveform, fps)
        assert flash_s == pytest.approx(1.6 - start)
        # Measured: 0.06 ms (the burst's first sample above the threshold), 1.06 ms for Opus in
        # WebM (Matroska stores millisecond timestamps); one frame is 40 ms.
        assert abs(burst_s - flash_s) < min(1 / fps, 0.002), (name, start, burst_s - flash_s)
        assert waveform.shape == (2 * RATE,) and waveform.dtype == torch.float32


def test_seeking_far_into_a_long_file_keeps_the_alignment(tmp_path: Path) -> None:
    path = media.write_flash_clip(tmp_path / "long.mkv", seconds=20.0, flash_at_s=17.0)
    frames, waveform = read_clip(path, 16.0, Preprocessing(clip_seconds=2.0, num_frames=16))
    flash_s, burst_s = flash_and_burst_s(frames, waveform, 8)
    assert flash_s == 1.0 and abs(burst_s - flash_s) < 0.002


@pytest.mark.parametrize("clip_seconds, sample_rate", [(1.0, 16000), (1.3, 16000), (0.7, 22050),
                                                       (2.0, 8000)])
def test_waveform_has_exactly_clip_seconds_times_rate_samples(tmp_path: Path, clip_seconds: float,
                                                             sample_rate: int) -> None:
    path = media.write_flash_clip(tmp_path / "a.mp4", seconds=3.0, sample_rate=44100)
    pre = Preprocessing(clip_seconds=clip_seconds, sample_rate=sample_rate)
    for start in (0.0, 0.37, 3.0 - clip_seconds):
        _, waveform = read_clip(path, start, pre)
        assert waveform.shape == (round(clip_seconds * sample_rate),)


@pytest.mark.parametrize("name, width, height, video_codec, pix_fmt", [
    ("odd.mp4", 33, 25, "libx264", "yuv444p"),
    ("odd.avi", 33, 25, "mpeg4", "yuv420p"),
    ("odd.mkv", 35, 17, "libvpx-vp9", "yuv420p"),
    ("portrait.mp4", 36, 64, "libx264", "yuv420p"),
    ("narrow.mp4", 48, 32, "libx264", "yuv420p"),  # a DECORD_BAD_WIDTHS width: PyAV decodes it
])
def test_frames_keep_the_true_size_and_content(tmp_path: Path, name: str, width: int, height: int,
                                               video_codec: str, pix_fmt: str) -> None:
    path = media.write_flash_clip(tmp_path / name, width=width, height=height,
                                  video_codec=video_codec, pix_fmt=pix_fmt)
    info = probe_file(path)
    assert (info.width, info.height) == (width, height)
    frames, _ = read_clip(path, 0.5, Preprocessing(clip_seconds=1.0, num_frames=8), info=info)
    assert frames.shape == (8, height, width, 3) and frames.dtype == torch.uint8
    # The white last row and column are where they were written: nothing cropped or rescaled.
    assert frames[:, -1].float().mean() > 230 and frames[:, :, -1].float().mean() > 230
    inside = frames[:, 1:-2, 1:-2].float().mean(dim=(1, 2, 3))  # (T,)
    assert int(torch.argmax(inside)) == 4  # the flash, at 1.0 s
    assert inside[4] > 230 and (inside[torch.arange(8) != 4] < media.DARK_LEVEL + 12).all()
    assert (width in DECORD_BAD_WIDTHS) == (name == "narrow.mp4")


@pytest.mark.parametrize("source_fps, seconds, pre, expected", [
    # 60 fps, 4 frames at 12 fps centred in 0.5 s: times 0.125 ... 0.375 s.
    (60, 0.5, Preprocessing(clip_seconds=0.5, num_frames=4, fps=12), [7, 12, 17, 22]),
    # 12 fps, 8 frames at 8 fps centred in 2 s: times 0.5625 + i / 8.
    (12, 2.0, Preprocessing(clip_seconds=2.0, num_frames=8, fps=8), [6, 8, 9, 11, 12, 14, 15, 17]),
    # 12 fps at 24 fps: times 0.896 + i / 24, each source frame is shown twice.
    (12, 2.0, Preprocessing(clip_seconds=2.0, num_frames=6, fps=24), [10, 11, 11, 12, 12, 13]),
    # 24 fps at 12 fps: the times fall exactly on frame boundaries, the later frame is shown.
    (24, 1.0, Preprocessing(clip_seconds=1.0, num_frames=4, fps=12), [9, 11, 13, 15]),
    # No fps: the centres of 3 equal parts of the clip, 5, 15 and 25 frames in (on boundaries).
    (60, 0.5, Preprocessing(clip_seconds=0.5, num_frames=3), [5, 15, 25]),
])
def test_frame_rate_resampling_picks_the_frame_shown_at_each_time(
        tmp_path: Path, source_fps: int, seconds: float, pre: Preprocessing,
        expected: list[int]) -> None:
    path = media.write_av_clip(tmp_path / "ramp.mp4", seconds=seconds, fps=source_fps)
    frames, _ = read_clip(path, 0.0, pre)
    assert [media.grey_level(f.numpy()) for f in frames] == expected


def test_more_frames_than_the_clip_holds_is_an_error(tmp_path: Path) -> None:
    path = media.write_av_clip(tmp_path / "a.mp4")
    with pytest.raises(ValueError, match="num_frames=16 at fps=8"):
        read_clip(path, 0.0, Preprocessing(clip_seconds=1.0, num_frames=16, fps=8))


@pytest.mark.parametrize("gains, level", [
    ((0.6, 0.6, 0.6, 0.0, 0.6, 0.6), 0.5),  # the LFE channel is left silent: AAC low-passes it
    ((0.9, 0.0, 0.0, 0.0, 0.0, 0.0), 0.15),  # front left only: 0.9 / 6 channels
])
def test_surround_48k_is_averaged_to_mono_and_resampled(tmp_path: Path, gains: tuple[float, ...],
                                                        level: float) -> None:
    path = media.write_flash_clip(tmp_path / "surround.mp4", layout="5.1", sample_rate=48000,
                                  channel_gains=gains)
    info = probe_file(path)
    assert (info.audio_channels, info.audio_sample_rate, info.audio_codec) == (6, 48000, "aac")
    _, waveform = read_clip(path, 0.5, Preprocessing(clip_seconds=1.0), info=info)
    burst = waveform.numpy()[RATE // 2:RATE // 2 + round(media.BURST_S * RATE)]  # the flash at 1 s
    assert burst.max() == pytest.approx(level, rel=0.05)
    spectrum = np.abs(np.fft.rfft(burst))
    assert np.argmax(spectrum) * RATE / len(burst) == pytest.approx(media.BURST_HZ, rel=0.06)


@pytest.mark.parametrize("audio_codec", ["aac", "pcm_s16le"])
def test_8k_audio_is_upsampled_in_place(tmp_path: Path, audio_codec: str) -> None:
    path = media.write_flash_clip(tmp_path / "low.mov", sample_rate=8000, audio_codec=audio_codec)
    _, waveform = read_clip(path, 0.5, Preprocessing(clip_seconds=1.0))
    onset = int(np.argmax(np.abs(waveform.numpy()) > 0.1))
    assert abs(onset - RATE // 2) <= 2 and waveform.abs().max() == pytest.approx(0.8, rel=0.05)


def test_random_crop_is_one_position_per_clip_drawn_from_the_generator() -> None:
    ramp = torch.arange(64, dtype=torch.uint8).repeat(32, 1) * 3  # (32, 64): brighter to the right
    frames = torch.stack([ramp + 10 * t for t in range(4)])[..., None].expand(4, 32, 64, 3)
    pre = Preprocessing(frame_size=16, crop="random")

    def crop(seed: int) -> torch.Tensor:
        return frames_to_tensor(frames.contiguous(), pre, torch.Generator().manual_seed(seed))

    assert torch.equal(crop(0), crop(0))
    crops = [crop(seed) for seed in range(8)]  # resized to 16x32: 17 positions
    assert len({round(float(c.mean()), 4) for c in crops}) > 1
    for c in crops:  # each frame cut at the same place: frame t differs from frame 0 by a constant
        step = c[:, 1:] - c[:, :1]  # (3, T - 1, S, S)
        torch.testing.assert_close(step, step.mean(dim=(2, 3), keepdim=True).expand_as(step),
                                   atol=1e-5, rtol=0)
    centre = frames_to_tensor(frames.contiguous(), Preprocessing(frame_size=16))
    assert torch.equal(centre, frames_to_tensor(frames.contiguous(), Preprocessing(frame_size=16)))
    # Evaluation data is always centre-cropped.
    assert LabeledClipDataModule("labeled", pre, batch_size=1, num_workers=0).preprocessing.crop == "center"
