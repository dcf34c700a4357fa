"""`python -m avssl.data stats` and fbank features computed on the device."""

from __future__ import annotations

import json
from pathlib import Path

import media
import pytest
import torch

from avssl.data.__main__ import main as data_main
from datamodules.fbank_stats import real_fbank_frames
from datamodules.audio_features import log_mel_fbank
from datamodules.decode import read_clip
from datamodules.preprocessing import Preprocessing
from datamodules.pretrain import AVPretrainDataModule
from datamodules.sources import SourceConfig
from datamodules.stream import StreamSettings

OVERRIDES = ["data.preprocessing.clip_seconds=1.0", "data.preprocessing.num_mel_bins=32",
             "data.num_workers=0", "data.preprocessing.sample_rate=16000"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stats videos")
    media.write_av_clip(root / "low.mp4", seconds=1.0, tone_hz=220)
    media.write_av_clip(root / "high.mkv", seconds=2.0, tone_hz=1800)
    media.write_av_clip(root / "silent video.mp4", seconds=1.0, with_audio=False)  # skipped, not silence
    media.write_text(root / "broken.mp4")
    return root


def test_stats_match_the_fbank_of_the_clips_and_say_what_to_set(videos: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "stats.json"
    assert data_main(["stats", str(videos), *OVERRIDES, "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    pre = Preprocessing(clip_seconds=1.0, num_mel_bins=32, audio_mean=0.0, audio_std=1.0)
    pre.audio_frames = real_fbank_frames(pre)
    values = torch.cat([log_mel_fbank(read_clip(videos / name, start, pre)[1], pre).flatten()
                        for name, start in [("low.mp4", 0.0), ("high.mkv", 0.5)]]).double()
    assert result["clips"] == 2 and result["fbank_frames"] == 2 * 98
    assert result["audio_mean"] == pytest.approx(values.mean().item(), abs=1e-4)
    assert result["audio_std"] == pytest.approx(values.std(unbiased=False).item(), abs=1e-4)
    assert result["report"]["counts_by_reason"] == {"no_audio": 1, "unreadable": 1}
    assert f"data.preprocessing.audio_mean={result['audio_mean']:.4f}" in printed


def test_stats_of_a_missing_source_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert data_main(["stats", str(tmp_path / "nowhere"), *OVERRIDES, "--no-progress"]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_fbank_on_the_device_equals_fbank_in_the_workers(videos: Path) -> None:
    pre = Preprocessing(clip_seconds=1.0, num_frames=2, frame_size=32, num_mel_bins=32, audio_frames=64)
    batches = {}
    for where in ("worker", "device"):
        module = AVPretrainDataModule(SourceConfig(path=str(videos)), StreamSettings(
            preprocessing=pre, batch_size=4, audio_features_on=where))
        batch = next(iter(module.train_dataloader()))
        assert ("waveform" in batch) == (where == "device")
        batches[where] = module.on_after_batch_transfer(batch, 0)
    assert batches["device"]["audio"].shape == (2, 1, 64, 32)
    torch.testing.assert_close(batches["device"]["audio"], batches["worker"]["audio"])


def test_padding_is_not_counted_in_clips_shorter_than_the_recipe_clip(tmp_path: Path) -> None:
    # 1.5 s files: a 1.5 s clip is all real audio; a 2.5 s clip is that audio plus 1 s of padding.
    media.write_av_clip(tmp_path / "low.mp4", seconds=1.5, tone_hz=220)
    media.write_av_clip(tmp_path / "high.mkv", seconds=1.5, tone_hz=1800)
    results = {}
    for clip_seconds in (1.5, 2.5):
        out = tmp_path / f"stats-{clip_seconds}.json"
        overrides = [*OVERRIDES, f"data.preprocessing.clip_seconds={clip_seconds}"]
        assert data_main(["stats", str(tmp_path), *overrides, "--out", str(out), "--no-progress"]) == 0
        results[clip_seconds] = json.loads(out.read_text())
    unpadded, padded = results[1.5], results[2.5]
    assert padded["clips"] == unpadded["clips"] == 2
    # The longer clip also holds the AAC decoder's last few ms past 1.5 s (real decoded audio).
    assert 0 <= padded["fbank_frames"] - unpadded["fbank_frames"] <= 2 * 8
    assert padded["audio_mean"] == pytest.approx(unpadded["audio_mean"], abs=0.2)  # padding: -1.3
    assert padded["audio_std"] == pytest.approx(unpadded["audio_std"], abs=0.2)
