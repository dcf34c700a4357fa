"""Audio features (kaldi log-mel fbank) and the video transform."""

from __future__ import annotations

import math
from pathlib import Path

import media
import pytest
import torch
import torchaudio

from datamodules.audio_features import log_mel_fbank
from datamodules.clips import load_clip
from datamodules.preprocessing import Preprocessing
from datamodules.video_transforms import frames_to_tensor


@pytest.mark.parametrize("audio_frames, num_mel_bins", [(1024, 128), (64, 32), (200, 64)])
def test_fbank_shape_padding_and_cropping(audio_frames: int, num_mel_bins: int) -> None:
    pre = Preprocessing(audio_frames=audio_frames, num_mel_bins=num_mel_bins)
    for seconds in (0.3, 1.0, 12.0):  # shorter and longer than audio_frames
        out = log_mel_fbank(torch.randn(int(seconds * 16000)) * 0.1, pre)
        assert out.shape == (1, audio_frames, num_mel_bins) and out.dtype == torch.float32


def test_fbank_matches_cav_mae_recipe_and_normalisation() -> None:
    pre = Preprocessing(audio_frames=120, num_mel_bins=64, audio_mean=-4.0, audio_std=2.0)
    waveform = torch.randn(16000) * 0.1 + 0.05  # 1 s: 98 frames, then 22 frames of padding
    reference = torchaudio.compliance.kaldi.fbank(
        (waveform - waveform.mean())[None], htk_compat=True, sample_frequency=16000,
        use_energy=False, window_type="hanning", num_mel_bins=64, dither=0.0,
        frame_length=25.0, frame_shift=10.0)
    out = log_mel_fbank(waveform, pre)[0]
    assert reference.shape[0] == 98
    torch.testing.assert_close(out[:98], (reference + 4.0) / 2.0)
    torch.testing.assert_close(out[98:], torch.full((22, 64), 2.0))  # zeros, normalised


def test_fbank_crops_at_the_end() -> None:
    pre = Preprocessing(audio_frames=50, num_mel_bins=32)
    waveform = torch.randn(32000)
    long = log_mel_fbank(waveform, Preprocessing(audio_frames=500, num_mel_bins=32))
    torch.testing.assert_close(log_mel_fbank(waveform, pre), long[:, :50])


def test_fbank_of_silence_is_finite() -> None:
    pre = Preprocessing(audio_frames=100, num_mel_bins=128)
    out = log_mel_fbank(torch.zeros(16000), pre)
    assert torch.isfinite(out).all()
    floor = (math.log(torch.finfo(torch.float32).eps) - pre.audio_mean) / pre.audio_std
    torch.testing.assert_close(out[0, :98], torch.full((98, 128), floor))
    assert torch.isfinite(log_mel_fbank(torch.zeros(10), pre)).all()  # shorter than one window


def test_fbank_rejects_a_batched_waveform() -> None:
    with pytest.raises(ValueError, match=r"1-D \[samples\]"):
        log_mel_fbank(torch.zeros(2, 16000), Preprocessing())


@pytest.mark.parametrize("height, width", [(48, 64), (64, 48), (224, 224), (10, 30)])
def test_frames_to_tensor_shape(height: int, width: int) -> None:
    pre = Preprocessing(frame_size=32)
    frames = torch.randint(0, 256, (3, height, width, 3), dtype=torch.uint8)
    out = frames_to_tensor(frames, pre)
    assert out.shape == (3, 3, 32, 32) and out.dtype == torch.float32


def test_frames_to_tensor_normalises_and_crops_the_centre() -> None:
    pre = Preprocessing(frame_size=16)
    frames = torch.zeros(2, 32, 96, 3, dtype=torch.uint8)  # landscape: black, white middle third
    frames[:, :, 32:64] = 255
    frames[1, :, :, 0] = 0  # second frame: no red at all
    out = frames_to_tensor(frames, pre)  # resized to 16x48, centre 16x16 = the white third
    mean = torch.tensor(pre.video_mean)[:, None, None]
    std = torch.tensor(pre.video_std)[:, None, None]
    inner = out[:, :, :, 2:-2]  # away from the resize's blur at the black border
    torch.testing.assert_close(inner[:, 0], ((1 - mean) / std).expand(3, 16, 12))
    torch.testing.assert_close(inner[0, 1], torch.full((16, 12), -pre.video_mean[0] / pre.video_std[0]))


def test_frames_to_tensor_rejects_channels_first_input() -> None:
    with pytest.raises(ValueError, match=r"uint8 \[T, H, W, 3\]"):
        frames_to_tensor(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), Preprocessing())


def test_load_clip_gives_model_inputs(tmp_path: Path) -> None:
    pre = Preprocessing(clip_seconds=1.0, num_frames=4, frame_size=24, num_mel_bins=40,
                        audio_frames=90)
    clip = load_clip(media.write_av_clip(tmp_path / "a.mp4", seconds=1.0, size=32), 0.0, pre)
    assert clip["video"].shape == (3, 4, 24, 24) and clip["audio"].shape == (1, 90, 40)
    assert torch.isfinite(clip["video"]).all() and torch.isfinite(clip["audio"]).all()
