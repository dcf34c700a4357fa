"""What a user gets from every kind of bad or unusual file: a clip with the right shapes, or a
`ClipError` with the exact reason, never another exception.

Each file goes through what a data module does with it: `probe_file`, `clip_starts` (the centred
clip), `read_clip` and `load_clip` with that `FileInfo`, under the given `DataPolicies`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import media
import pytest
import torch

from datamodules.clips import load_clip
from datamodules.decode import clip_starts, probe_file, read_clip
from datamodules.errors import ClipError
from datamodules.policies import DataPolicies
from datamodules.preprocessing import Preprocessing

PRE = Preprocessing(clip_seconds=1.0, num_frames=4, frame_size=16, num_mel_bins=32, audio_frames=64)
WAVE = (16000,)  # clip_seconds * sample_rate
PAD, SKIP = DataPolicies(), DataPolicies(short="skip")
SILENCE = DataPolicies(no_audio="silence")

# name -> writer(path). Good files are 2 s, 32x32, 8 fps, H.264 + AAC unless named otherwise.
WRITERS: dict[str, Callable[[Path], Path]] = {
    "empty.mp4": media.write_empty,
    "random_bytes.mp4": media.write_random_bytes,
    "text.mp4": media.write_text,
    "truncated.mp4": lambda p: media.write_truncated(media.write_av_clip(p.with_name("src.mp4"), 2.0), p),
    "audio_only.mp4": lambda p: media.write_flash_clip(p, with_video=False),
    "video_only.mp4": lambda p: media.write_flash_clip(p, with_audio=False),
    "one_frame.mp4": lambda p: media.write_flash_clip(p, seconds=0.125, flash_at_s=0.0),
    "short_0.2s.mp4": lambda p: media.write_flash_clip(p, seconds=0.2, fps=10, flash_at_s=0.1),
    "short_audio_1.2s.mp4": lambda p: media.write_flash_clip(p, audio_seconds=1.2),
    "short_audio_0.3s.mp4": lambda p: media.write_flash_clip(p, audio_seconds=0.3),
    "60fps.mp4": lambda p: media.write_flash_clip(p, fps=60),
    "12fps.mp4": lambda p: media.write_flash_clip(p, fps=12),
    "odd_33x25.mp4": lambda p: media.write_flash_clip(p, width=33, height=25, pix_fmt="yuv444p"),
    "portrait_36x64.mp4": lambda p: media.write_flash_clip(p, width=36, height=64),
    "narrow_48.mp4": lambda p: media.write_flash_clip(p, width=48),
    "surround_5.1_48k.mp4": lambda p: media.write_flash_clip(p, layout="5.1", sample_rate=48000),
    "audio_8k.mp4": lambda p: media.write_flash_clip(p, sample_rate=8000),
    "h264_aac.mkv": media.write_flash_clip,
    "vp9_opus.webm": lambda p: media.write_flash_clip(p, video_codec="libvpx-vp9",
                                                       audio_codec="libopus", sample_rate=48000),
    "mpeg4_mp3.avi": lambda p: media.write_flash_clip(p, video_codec="mpeg4", audio_codec="mp3"),
    "h264_pcm.mov": lambda p: media.write_flash_clip(p, audio_codec="pcm_s16le"),
    "h264_aac.ts": media.write_flash_clip,
}

CASES = [  # (file, policies, a skip reason or the shapes of frames and waveform)
    ("empty.mp4", PAD, "empty_file"),
    ("random_bytes.mp4", PAD, "unreadable"),
    ("text.mp4", PAD, "unreadable"),
    ("truncated.mp4", PAD, "unreadable"),  # cut before the index (moov) at its end
    ("audio_only.mp4", SILENCE, "no_video"),
    ("video_only.mp4", PAD, "no_audio"),
    ("video_only.mp4", SILENCE, ((4, 32, 32, 3), WAVE)),
    ("one_frame.mp4", PAD, "too_short"),  # 0.125 s < min_clip_fraction 0.5 x 1 s
    ("one_frame.mp4", DataPolicies(min_clip_fraction=0.1), ((4, 32, 32, 3), WAVE)),
    ("one_frame.mp4", SKIP, "too_short"),
    ("short_0.2s.mp4", PAD, "too_short"),
    ("short_0.2s.mp4", DataPolicies(min_clip_fraction=0.2), ((4, 32, 32, 3), WAVE)),
    ("short_0.2s.mp4", SKIP, "too_short"),
    ("short_audio_1.2s.mp4", PAD, ((4, 32, 32, 3), WAVE)),  # the clip 0.1-1.1 s lies in the audio
    ("short_audio_1.2s.mp4", SKIP, ((4, 32, 32, 3), WAVE)),  # so it needs no padding
    ("short_audio_0.3s.mp4", PAD, "too_short"),
    ("short_audio_0.3s.mp4", SKIP, "too_short"),
    ("60fps.mp4", PAD, ((4, 32, 32, 3), WAVE)),
    ("12fps.mp4", PAD, ((4, 32, 32, 3), WAVE)),
    ("odd_33x25.mp4", PAD, ((4, 25, 33, 3), WAVE)),
    ("portrait_36x64.mp4", PAD, ((4, 64, 36, 3), WAVE)),
    ("narrow_48.mp4", PAD, ((4, 32, 48, 3), WAVE)),
    ("surround_5.1_48k.mp4", PAD, ((4, 32, 32, 3), WAVE)),
    ("audio_8k.mp4", PAD, ((4, 32, 32, 3), WAVE)),
    ("h264_aac.mkv", PAD, ((4, 32, 32, 3), WAVE)),
    ("vp9_opus.webm", PAD, ((4, 32, 32, 3), WAVE)),
    ("mpeg4_mp3.avi", PAD, ((4, 32, 32, 3), WAVE)),
    ("h264_pcm.mov", PAD, ((4, 32, 32, 3), WAVE)),
    ("h264_aac.ts", PAD, ((4, 32, 32, 3), WAVE)),
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("corpus")
    return {name: write(root / name) for name, write in WRITERS.items()}


def outcome(path: Path, policies: DataPolicies) -> str | tuple[tuple[int, ...], tuple[int, ...]]:
    """The skip reason, or the shapes of the file's centred clip after checking its model inputs."""
    try:
        info = probe_file(path)
        start = clip_starts(info, PRE, policies)[0]
        frames, waveform = read_clip(path, start, PRE, policies, info=info)
        inputs = load_clip(path, start, PRE, policies, info=info)
    except ClipError as err:
        return err.reason
    assert frames.dtype == torch.uint8 and waveform.dtype == torch.float32
    assert inputs["video"].shape == (3, PRE.num_frames, PRE.frame_size, PRE.frame_size)
    assert inputs["audio"].shape == (1, PRE.audio_frames, PRE.num_mel_bins)
    assert torch.isfinite(inputs["video"]).all() and torch.isfinite(inputs["audio"]).all()
    return tuple(frames.shape), tuple(waveform.shape)


@pytest.mark.parametrize("name, policies, expected", CASES,
                         ids=[f"{name}-{i}" for i, (name, _, _) in enumerate(CASES)])
def test_each_file_gives_a_clip_or_its_reason(corpus: dict[str, Path], name: str,
                                              policies: DataPolicies, expected: object) -> None:
    assert outcome(corpus[name], policies) == expected


def test_silence_policy_gives_zero_audio(corpus: dict[str, Path]) -> None:
    _, waveform = read_clip(corpus["video_only.mp4"], 0.5, PRE, SILENCE)
    assert waveform.shape == WAVE and not waveform.any()


def test_short_file_spreads_its_frames_and_pads_its_audio(corpus: dict[str, Path]) -> None:
    # 0.2 s at 10 fps, white frame 1 (0.1-0.2 s): frames at 0.025, 0.075, 0.125, 0.175 s.
    frames, waveform = read_clip(corpus["short_0.2s.mp4"], 0.0, PRE, DataPolicies(min_clip_fraction=0.2))
    centre = frames[:, 10, 10].float().mean(dim=-1)  # (T,)
    assert (centre[:2] < 40).all() and (centre[2:] > 230).all()
    assert waveform[1600:1600 + 160].abs().max() > 0.5  # the burst at 0.1 s
    assert not waveform[3200 + 1024:].any()  # zeros after the audio ends (plus one AAC frame)


def test_any_start_in_the_file_works_with_a_pre_probed_info(corpus: dict[str, Path]) -> None:
    path = corpus["h264_aac.mkv"]
    info = probe_file(path)
    lenient = DataPolicies(min_clip_fraction=0.05)
    for start in (0.0, 0.3, 1.0, 1.9):
        frames, waveform = read_clip(path, start, PRE, lenient, info=info)
        assert frames.shape == (4, 32, 32, 3) and waveform.shape == WAVE
    with pytest.raises(ClipError) as caught:
        read_clip(path, 1.9, PRE, info=info)  # 0.1 s of video < half a clip
    assert caught.value.reason == "too_short"
    with pytest.raises(ValueError, match="start_s=-0.5"):
        read_clip(path, -0.5, PRE, info=info)


def test_corrupt_middle_keeps_the_clips_before_the_damage(tmp_path: Path) -> None:
    source = media.write_av_clip(tmp_path / "source.mp4", seconds=6.0)
    path = media.write_corrupted(source, tmp_path / "corrupt.mp4")  # middle third of the data
    info = probe_file(path)  # the headers are intact
    frames, waveform = read_clip(path, 0.0, PRE, info=info)
    good_frames, good_waveform = read_clip(source, 0.0, PRE)
    assert torch.equal(frames, good_frames) and torch.equal(waveform, good_waveform)
    for start in (2.0, 2.5, 3.0, 4.0, 4.9):  # inside or after the damage
        try:
            frames, waveform = read_clip(path, start, PRE, info=info)
        except ClipError as err:
            assert err.reason == "decode_failed", str(err)
        else:
            assert frames.shape == (4, 32, 32, 3) and waveform.shape == WAVE
