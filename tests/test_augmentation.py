"""Training-time augmentation (``data.augment``): each part, its reproducibility, the stream, the config."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from avssl.config import ConfigError, available_recipes, load_config
from datamodules.audio_features import log_mel_fbank
from datamodules.augmentation import (LOG_MEL_PER_DB, AudioAugmentation, Augmentation, VideoAugmentation,
                                      augment_frames, gain_waveform, mask_fbank, speed_waveform)
from datamodules.clips import load_clip
from datamodules.demo import render_demo_clips
from datamodules.labeled import LabeledClipDataModule
from datamodules.preprocessing import Preprocessing
from datamodules.pretrain import AVPretrainDataModule
from datamodules.sources import SourceConfig, open_source
from datamodules.stream import ClipStream, StreamSettings
from datamodules.video_transforms import resize_and_crop

PRE = Preprocessing(clip_seconds=1.0, num_frames=3, frame_size=16, num_mel_bins=32, audio_frames=64)
VIDEO_PARTS = {
    "resized_crop": VideoAugmentation(resized_crop_scale=[0.2, 0.5]),
    "brightness": VideoAugmentation(brightness=0.8),
    "contrast": VideoAugmentation(contrast=0.8),
    "saturation": VideoAugmentation(saturation=0.8),
    "hue": VideoAugmentation(hue=0.4),
    "grayscale": VideoAugmentation(grayscale_p=1.0),
}
ALL_VIDEO = VideoAugmentation(resized_crop_scale=[0.2, 1.0], brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1,
                              grayscale_p=0.5)
AUDIO = AudioAugmentation(time_mask_frames=12, time_masks=2, freq_mask_bins=6, freq_masks=2, gain_db=[-6.0, 6.0],
                          speed=[0.8, 1.25])


def _frames(num_frames: int = 3, height: int = 24, width: int = 40, seed: int = 0) -> torch.Tensor:
    """Textured colour frames, all alike (so any difference between frames is the transform's); uint8 [T, H, W, 3]."""
    frame = torch.randint(0, 256, (1, height, width, 3), dtype=torch.uint8, generator=_generator(seed))
    return frame.expand(num_frames, -1, -1, -1).contiguous()


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- video -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("crop", ["center", "random"])
def test_video_augmentation_off_is_resize_and_crop_with_the_same_draws(crop: str) -> None:
    pre = replace(PRE, crop=crop)
    for seed in range(3):
        expected = resize_and_crop(_frames(), pre, _generator(seed))
        assert torch.equal(augment_frames(_frames(), pre, VideoAugmentation(), _generator(seed)), expected)


@pytest.mark.parametrize("part", VIDEO_PARTS)
def test_each_video_part_changes_the_clip_keeps_its_shape_and_is_reproducible(part: str) -> None:
    aug = VIDEO_PARTS[part]
    plain = resize_and_crop(_frames(), PRE, _generator(0))
    out = augment_frames(_frames(), PRE, aug, _generator(0))
    assert out.dtype == torch.uint8 and out.shape == (3, 3, 16, 16)
    assert not torch.equal(out, plain)
    assert torch.equal(augment_frames(_frames(), PRE, aug, _generator(0)), out)
    if part == "grayscale":
        assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])  # three equal channels


def test_colour_parts_keep_the_crops_of_a_run_without_augmentation() -> None:
    # grey frames are their own greyscale (up to rounding): only the crop position could differ
    pre = replace(PRE, crop="random")
    grey = _frames()[..., :1].expand(-1, -1, -1, 3).contiguous()
    for seed in range(4):
        expected = resize_and_crop(grey, pre, _generator(seed)).int()
        out = augment_frames(grey, pre, VideoAugmentation(grayscale_p=1.0), _generator(seed)).int()
        assert (out - expected).abs().max() <= 1  # another crop of the noise would differ by up to 255


def test_all_video_parts_same_seed_same_clip_other_seed_other_clip() -> None:
    outs = [augment_frames(_frames(), PRE, ALL_VIDEO, _generator(seed)) for seed in (0, 0, 1, 2)]
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], outs[2]) and not torch.equal(outs[2], outs[3])


def test_every_frame_of_a_clip_gets_the_same_crop_and_colours() -> None:
    for seed in range(5):
        out = augment_frames(_frames(num_frames=4), PRE, ALL_VIDEO, _generator(seed))  # (3, T, S, S)
        assert all(torch.equal(out[:, 0], out[:, t]) for t in range(1, 4))


def test_the_resized_crop_is_cut_from_the_full_frame() -> None:
    # left half black, right half white, 64 px wide: a resize-then-centre-crop to 16 px always shows
    # both halves; a crop of 5% of the full frame lies in one half for most draws
    frames = torch.zeros(1, 32, 64, 3, dtype=torch.uint8)
    frames[:, :, 32:] = 255
    aug = VideoAugmentation(resized_crop_scale=[0.05, 0.05], resized_crop_ratio=[1.0, 1.0])
    means = [float(augment_frames(frames, PRE, aug, _generator(seed)).float().mean()) for seed in range(8)]
    assert any(m == 0.0 for m in means) and any(m == 255.0 for m in means)


def test_bad_frames_are_refused() -> None:
    with pytest.raises(ValueError, match=r"frames must be uint8 \[T, H, W, 3\]"):
        augment_frames(torch.zeros(2, 3, 16, 16, dtype=torch.uint8), PRE, ALL_VIDEO, _generator(0))


# --- audio -----------------------------------------------------------------------------------------


def _fbank(seed: int = 0) -> torch.Tensor:
    return torch.randn(1, PRE.audio_frames, PRE.num_mel_bins, generator=_generator(seed))  # (1, F, M)


@pytest.mark.parametrize("axis,aug", [
    ("freq", AudioAugmentation(freq_mask_bins=10, freq_masks=2)),
    ("time", AudioAugmentation(time_mask_frames=20, time_masks=3)),
])
def test_fbank_masks_set_whole_stripes_to_the_mask_value(axis: str, aug: AudioAugmentation) -> None:
    fill = (aug.mask_value - PRE.audio_mean) / PRE.audio_std  # 0 before normalisation, as CAV-MAE
    fbank = _fbank()
    changed = []
    for seed in range(6):
        out = mask_fbank(fbank, PRE, aug, seed)
        assert out.shape == fbank.shape
        masked = out != fbank  # (1, F, M)
        assert torch.all(out[masked] == fill)
        stripes = masked[0].all(dim=0) if axis == "freq" else masked[0].all(dim=1)  # mel bins or frames
        other = masked[0].any(dim=0) if axis == "freq" else masked[0].any(dim=1)
        assert torch.equal(stripes, other)  # every masked value lies in a stripe masked from end to end
        width = aug.freq_mask_bins * aug.freq_masks if axis == "freq" else aug.time_mask_frames * aug.time_masks
        assert int(stripes.sum()) < width
        changed.append(int(stripes.sum()))
        assert torch.equal(mask_fbank(fbank, PRE, aug, seed), out)  # the seed decides
    assert len(set(changed)) > 1  # and the widths vary with it


def test_mask_value_is_a_log_mel_energy_before_normalisation() -> None:
    aug = AudioAugmentation(time_mask_frames=60, mask_value=PRE.audio_mean)  # SpecAugment's mean: 0 after
    out = mask_fbank(_fbank(), PRE, aug, seed=3)
    assert torch.all(out[out != _fbank()] == 0.0)


def test_fbank_masks_and_gain_off_are_the_identity() -> None:
    fbank, waveform = _fbank(), torch.randn(16000)
    assert mask_fbank(fbank, PRE, AudioAugmentation(), seed=1) is fbank
    assert gain_waveform(waveform, AudioAugmentation(), _generator(0)) is waveform
    assert mask_fbank(fbank, PRE, AudioAugmentation(time_mask_frames=10, time_masks=0), seed=1) is fbank


def test_a_gain_shifts_the_normalised_fbank_by_the_documented_constant() -> None:
    pre = replace(PRE, audio_frames=128)
    waveform = 0.1 * torch.randn(16000, generator=_generator(0))  # 1 s of noise: every mel bin above kaldi's floor
    for gain_db in (6.0, -12.0):
        aug = AudioAugmentation(gain_db=[gain_db, gain_db])
        shift = log_mel_fbank(gain_waveform(waveform, aug, _generator(0)), pre) - log_mel_fbank(waveform, pre)
        real = shift[:, :98]  # 1 s gives 98 frames; the zero padding after them stays as it was
        torch.testing.assert_close(real, torch.full_like(real, gain_db * LOG_MEL_PER_DB / pre.audio_std),
                                   atol=1e-3, rtol=0)
        assert torch.all(shift[:, 98:] == 0)


def test_a_gain_range_draws_a_gain_per_clip_from_the_generator() -> None:
    waveform = torch.ones(100)
    aug = AudioAugmentation(gain_db=[-6.0, 6.0])
    ratios = [float(gain_waveform(waveform, aug, _generator(seed))[0]) for seed in range(8)]
    assert all(10 ** (-6 / 20) <= r <= 10 ** (6 / 20) for r in ratios) and len(set(ratios)) == 8
    assert float(gain_waveform(waveform, aug, _generator(3))[0]) == ratios[3]


def _peak_hz(waveform: torch.Tensor, sample_rate: int) -> float:
    return float(torch.fft.rfft(waveform).abs().argmax()) * sample_rate / len(waveform)


@pytest.mark.parametrize("factor,rate", [(0.5, 8000), (1.6, 8000), (0.733, 44100), (1.371, 22050)])
def test_a_speed_change_moves_the_pitch_and_keeps_the_length(factor: float, rate: int) -> None:
    seconds = 2.0  # 0.733 and 1.371 are off the factor's grid: rounded to 0.74 and 1.38, at any rate
    tone = torch.sin(2 * math.pi * 440 * torch.arange(int(rate * seconds)) / rate)
    changed = speed_waveform(tone, rate, AudioAugmentation(speed=[factor, factor]))
    assert changed.shape == tone.shape
    assert _peak_hz(changed, rate) == pytest.approx(440 * factor, rel=0.02)
    tail = changed[-len(changed) // 10:]  # past the resampled tone's end when faster: repeated, not silent
    assert tail.square().mean().sqrt() > 0.5


def test_a_speed_range_draws_a_factor_per_clip_from_the_generator_and_off_is_the_identity() -> None:
    rate = 8000
    tone = torch.sin(2 * math.pi * 400 * torch.arange(rate) / rate)
    assert speed_waveform(tone, rate, AudioAugmentation(), _generator(0)) is tone
    aug = AudioAugmentation(speed=[0.7, 1.4])
    peaks = [_peak_hz(speed_waveform(tone, rate, aug, _generator(seed)), rate) for seed in range(6)]
    assert all(0.7 * 400 * 0.98 <= p <= 1.4 * 400 * 1.02 for p in peaks) and len(set(peaks)) > 3
    assert _peak_hz(speed_waveform(tone, rate, aug, _generator(2)), rate) == peaks[2]


# --- the stream ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return render_demo_clips(tmp_path_factory.mktemp("demo"), num_unlabeled=4, clips_per_class=2, seed=0,
                             size=32, seconds=1.5)


def _read(root: Path, epoch: int = 0, batches_done: int = 0, **settings) -> list[dict]:
    options = dict(preprocessing=replace(PRE, crop="random"), batch_size=2, views_per_video=2)
    options.update(settings)
    stream = ClipStream(open_source(SourceConfig(path=str(root))), StreamSettings(**options))
    stream.set_position(epoch, batches_done)
    return list(DataLoader(stream, batch_size=None, num_workers=0))


def _clips(batches: list[dict]) -> list[tuple]:
    """(path, start_s, view) of every row, in order."""
    return [(path, float(start), int(view)) for b in batches
            for path, start, view in zip(b["meta"]["path"], b["meta"]["start_s"], b["meta"]["view"])]


def test_augmented_batches_come_out_of_the_stream_reproducibly(demo) -> None:
    augment = Augmentation(ALL_VIDEO, AUDIO)
    plain = _read(demo.unlabeled)
    first, again = _read(demo.unlabeled, augment=augment), _read(demo.unlabeled, augment=augment)
    resumed = _read(demo.unlabeled, epoch=0, batches_done=1, augment=augment)
    batch = first[0]
    assert batch["video"].shape == (4, 3, 3, 16, 16) and batch["audio"].shape == (4, 1, 64, 32)
    assert batch["video"].dtype == batch["audio"].dtype == torch.float32
    assert _clips(first) == _clips(plain)  # the same clips, starts and views: augmentation moves nothing
    for augmented, original in zip(first, plain):
        assert not torch.equal(augmented["video"], original["video"])
        assert not torch.equal(augmented["audio"], original["audio"])
    for a, b in zip(first, again):  # (seed, epoch, video) decides
        assert torch.equal(a["video"], b["video"]) and torch.equal(a["audio"], b["audio"])
    for a, b in zip(first[1:], resumed):  # also after a resume
        assert torch.equal(a["video"], b["video"]) and torch.equal(a["audio"], b["audio"])
    assert not torch.equal(batch["video"][0], batch["video"][1])  # two views of a clip: their own draws
    # uniform sampling cuts the same clips in the next epoch, which augments them anew
    videos = [{clip: b["video"][row] for b in batches for row, clip in enumerate(_clips([b]))}
              for batches in (first, _read(demo.unlabeled, epoch=1, augment=augment))]
    assert videos[0].keys() == videos[1].keys()
    assert all(not torch.equal(videos[0][clip], videos[1][clip]) for clip in videos[0])


def test_fbank_augmentation_on_the_device_equals_the_workers(demo) -> None:
    augment = Augmentation(audio=AUDIO)
    audio = {}
    for where in ("worker", "device"):
        module = AVPretrainDataModule(SourceConfig(path=str(demo.unlabeled)), StreamSettings(
            preprocessing=PRE, batch_size=2, audio_features_on=where, augment=augment))
        batch = next(iter(module.train_dataloader()))
        assert ("fbank_mask_seed" in batch) == (where == "device")
        batch = module.on_after_batch_transfer(batch, 0)
        assert "fbank_mask_seed" not in batch and "waveform" not in batch
        audio[where] = batch["audio"]
    assert audio["device"].shape == (2, 1, 64, 32)
    torch.testing.assert_close(audio["device"], audio["worker"])


def test_the_labeled_data_is_never_augmented(demo) -> None:
    # the probe's data module takes no augmentation: its clips are the plain centre-cropped ones,
    # even for a recipe that trains with random crops
    labeled = LabeledClipDataModule(str(demo.labeled), replace(PRE, crop="random"), batch_size=4, num_workers=0)
    center = replace(PRE, crop="center")
    rows = 0
    for batch in [*labeled.train_dataloader(), *labeled.test_dataloader()]:
        for row, (path, start) in enumerate(zip(batch["meta"]["path"], batch["meta"]["start_s"].tolist())):
            plain = load_clip(path, start, center)
            assert torch.equal(batch["video"][row], plain["video"]) and torch.equal(batch["audio"][row], plain["audio"])
            rows += 1
    assert rows == 12


def test_a_resume_may_change_the_augmentation() -> None:
    source = SourceConfig(path="/videos")
    before = AVPretrainDataModule(source, StreamSettings(preprocessing=PRE))
    after = AVPretrainDataModule(source, StreamSettings(preprocessing=PRE, augment=Augmentation(ALL_VIDEO, AUDIO)))
    state = {"position": {"epoch": 0, "batches_done": 3, "plan": before.plan_settings(1)}}
    assert after.resume_conflicts(state, 1) == []
    assert not any("augment" in key for key in after.plan_settings(1))


# --- config ----------------------------------------------------------------------------------------


def test_augmentation_is_off_unless_a_recipe_names_it() -> None:
    off = Augmentation()
    assert not off.video.enabled and not off.audio.masks and not off.audio.gain and not off.audio.speed_perturbation
    default = load_config([]).data.augment
    assert default.audio.speed_perturbation and default.audio.speed == [0.67, 1.0]
    assert not default.video.enabled and not default.audio.masks and not default.audio.gain
    assert load_config(["recipe=cav_mae_demo"]).data.augment == default  # the demo forms slow the audio down
    for recipe in available_recipes():
        if recipe not in ("default", "cav_mae_demo"):
            assert load_config([f"recipe={recipe}"]).data.augment == off, recipe
    assert load_config(["data.augment.audio.speed=[1,1]"]).data.augment == off


def test_augmentation_overrides_reach_the_config() -> None:
    config = load_config(["data.augment.video.resized_crop_scale=[0.2,1.0]", "data.augment.video.brightness=0.4",
                          "data.augment.audio.time_mask_frames=24", "data.augment.audio.gain_db=[-6,6]"])
    augment = config.data.augment
    assert augment.video.resized_crop and augment.video.color_jitter and augment.audio.masks and augment.audio.gain
    assert augment.audio.gain_db == [-6.0, 6.0]


@pytest.mark.parametrize("args,message", [
    (["data.augment.video.resized_crop_scale=[0.9,0.1]"],
     r"^data.augment.video.resized_crop_scale=\[0.9, 0.1\]: min 0.9 is above max 0.1"),
    (["data.augment.video.resized_crop_scale=[0,1]"],
     r"^data.augment.video.resized_crop_scale=\[0.0, 1.0\]: min \(0.0\) must be in \(0.0, 1.0\]"),
    (["data.augment.video.resized_crop_ratio=[1.0]"],
     r"^data.augment.video.resized_crop_ratio=\[1.0\]: must be \[min, max\]"),
    (["data.augment.video.hue=0.7"], r"^data.augment.video.hue=0.7: must be in \[0.0, 0.5\]"),
    (["data.augment.video.brightness=-1"], r"^data.augment.video.brightness=-1.0: must be in \[0.0, 10.0\]"),
    (["data.augment.video.grayscale_p=2"], r"^data.augment.video.grayscale_p=2.0: must be in \[0.0, 1.0\]"),
    (["data.augment.audio.gain_db=[6,-6]"], r"^data.augment.audio.gain_db=\[6.0, -6.0\]: min 6.0 is above max -6.0"),
    (["data.augment.audio.time_masks=-1"], r"^data.augment.audio.time_masks=-1: must be in \[0, 100\]"),
    (["data.augment.audio.speed=[0,1.2]"], r"^data.augment.audio.speed=\[0.0, 1.2\]: min \(0.0\) must be in \[0.1, 10.0\]"),
    (["data.augment.audio.time_mask_frames=200", "data.preprocessing.audio_frames=100"],
     r"^data.augment.audio.time_mask_frames=200: wider than the fbank's 100 \(data.preprocessing.audio_frames\)"),
    (["data.augment.audio.freq_mask_bins=200"], r"^data.augment.audio.freq_mask_bins=200: wider than the fbank's"),
    (["data.augment.video.flip=0.5"], r"^data.augment.video.flip: unknown key"),
])
def test_bad_augmentation_values_stop_with_one_message_naming_the_key(args: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        load_config(args)
    assert "\n" not in str(err.value)
