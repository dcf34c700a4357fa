"""Clips are placed where both the video and the audio have content, and the audio coverage check
holds at any frame rate."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import media
import numpy as np
import pytest

from datamodules.decode import clip_starts, decode_clip, probe_file
from datamodules.errors import ClipError
from datamodules.policies import DataPolicies
from datamodules.preprocessing import Preprocessing
from datamodules.pretrain import AVPretrainDataModule
from datamodules.sampling import ContentSpans, sample_clip_starts
from datamodules.sources import SourceConfig
from datamodules.stream import StreamSettings

PRE = Preprocessing(clip_seconds=2.0, num_frames=2, frame_size=16, num_mel_bins=32, audio_frames=200)
PAD, SKIP = DataPolicies(), DataPolicies(short="skip")
RNG = np.random.default_rng(0)


def starts(spans: ContentSpans, policies: DataPolicies = PAD, k: int = 1, mode: str = "uniform") -> list[float]:
    return sample_clip_starts(spans, 2.0, k, mode, RNG, policies)


def stream_batches(folder: Path, clips_per_video: int) -> list[dict]:
    module = AVPretrainDataModule(SourceConfig(path=str(folder)), StreamSettings(
        preprocessing=PRE, batch_size=4, clips_per_video=clips_per_video))
    module.setup("fit")
    return list(module.train_dataloader())


def test_audio_that_ends_early_gets_a_clip_from_where_it_is(tmp_path: Path) -> None:
    path = media.write_flash_clip(tmp_path / "early_end.mp4", seconds=3.0, audio_seconds=1.0, flash_at_s=0.5)
    assert clip_starts(probe_file(path), PRE) == [0.0]  # centred (0.5 s) would hold 0.5 s of audio
    clip = decode_clip(path, 0.0, PRE)
    assert clip.audio_real.sum() / PRE.sample_rate >= 1.0 - 0.01
    batches = stream_batches(tmp_path, clips_per_video=1)
    assert [b["meta"]["start_s"].tolist() for b in batches] == [[0.0]]
    assert not batches[0]["meta"]["skipped"]


def test_a_slide_show_gives_clips_only_where_its_audio_is(tmp_path: Path) -> None:
    # 12 frames, one every 2000 s: the container says 24000 s; the audio lasts 3 s.
    media.write_flash_clip(tmp_path / "slides.mp4", seconds=24000, fps=Fraction(1, 2000),
                           flash_at_s=0.0, audio_seconds=3.0, gop_size=1)
    (batch,) = stream_batches(tmp_path, clips_per_video=3)
    assert not batch["meta"]["skipped"] and len(batch["meta"]["path"]) == 3
    assert max(batch["meta"]["start_s"].tolist()) <= 3.0 - 2.0 + 0.25  # at most the slack of audio missing
    assert (batch["audio_mask"].float().mean(dim=1) >= 0.85).all()


@pytest.mark.parametrize("name", ["slides.mp4", "slides.flv"])  # FLV headers give no audio duration
@pytest.mark.parametrize("fps", [Fraction(1, 2), Fraction(1, 2000)])
@pytest.mark.parametrize("policies", [PAD, SKIP], ids=["pad", "skip"])
def test_audio_coverage_is_checked_at_any_frame_rate(tmp_path: Path, name: str, fps: Fraction,
                                                     policies: DataPolicies) -> None:
    path = media.write_flash_clip(tmp_path / name, seconds=12 / fps, fps=fps, flash_at_s=0.0,
                                  audio_seconds=3.0, gop_size=1)
    info = probe_file(path)
    with pytest.raises(ClipError) as caught:
        decode_clip(path, 5.0, PRE, policies, info=info)  # video, but no audio after 3 s
    assert caught.value.reason == "too_short"
    decode_clip(path, 0.5, PRE, policies, info=info)  # inside the audio: fine


def test_uniform_and_random_starts_stay_in_the_seconds_both_streams_cover() -> None:
    spans = ContentSpans(window=(0.0, 10.0), video=(0.0, 10.0), audio=(2.0, 6.0))
    assert starts(spans, k=3) == pytest.approx([2.0, 3.0, 4.0])
    assert starts(spans) == pytest.approx([3.0])
    assert all(2.0 <= s <= 4.0 for s in starts(spans, k=20, mode="random"))
    silent = ContentSpans(window=(0.0, 3.0), video=(0.0, 3.0), audio=None)  # no_audio=silence
    assert starts(silent) == pytest.approx([0.5])


def test_late_audio_gets_the_clip_that_holds_enough_of_both() -> None:
    # 3 s of video, audio from 2.5 s: a clip from 1.75 s holds 1.25 s of each (a half needs 1 s).
    spans = ContentSpans(window=(0.0, 3.0), video=(0.0, 3.0), audio=(2.5, 10.0))
    assert starts(spans) == pytest.approx([1.75])
    with pytest.raises(ClipError, match="short=skip") as caught:
        starts(spans, SKIP)
    assert caught.value.reason == "too_short"


def test_no_overlap_is_too_short_and_says_where_each_stream_is() -> None:
    spans = ContentSpans(window=(0.0, 3.0), video=(0.0, 3.0), audio=(5.0, 8.0))
    with pytest.raises(ClipError, match=r"video 0.00-3.00 s, audio 5.00-8.00 s") as caught:
        starts(spans)
    assert caught.value.reason == "too_short"


def test_a_manifest_window_shorter_than_a_clip_gives_one_whole_clip_from_its_start() -> None:
    spans = ContentSpans(window=(10.0, 11.0), video=(0.0, 60.0), audio=(0.0, 60.0))
    assert starts(spans, SKIP, k=3) == [10.0]
