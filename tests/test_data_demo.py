"""The built-in demo clips: layout, decoding, determinism, A/V synchrony and the cache."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest

from datamodules import demo
from datamodules.decode import probe_file, read_clip
from datamodules.demo_scenes import CLASSES, Canvas, render_scene
from datamodules.labeled import LabeledClipDataModule
from datamodules.preprocessing import Preprocessing
from datamodules.pretrain import AVPretrainDataModule
from datamodules.sources import SourceConfig
from datamodules.stream import StreamSettings

PRE = Preprocessing(clip_seconds=1.0, num_frames=4, frame_size=32, num_mel_bins=32, audio_frames=100)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> demo.DemoClips:
    return demo.render_demo_clips(tmp_path_factory.mktemp("demo"), num_unlabeled=6,
                                  clips_per_class=3, seed=0, size=32, seconds=1.0)


def test_layout_and_class_names(tiny: demo.DemoClips) -> None:
    assert tiny.class_names == sorted(CLASSES) and len(tiny.class_names) == 6
    assert sorted(p.name for p in tiny.unlabeled.iterdir()) == [f"clip_{i:05d}.mp4" for i in range(6)]
    assert sorted(p.name for p in tiny.labeled.iterdir()) == tiny.class_names
    for name in tiny.class_names:
        assert sorted(p.name for p in (tiny.labeled / name).iterdir()) == [
            f"{name}_{i:03d}.mp4" for i in range(3)]


def test_clips_decode_with_audio_at_the_requested_format(tiny: demo.DemoClips) -> None:
    path = tiny.labeled / "bouncing_ball" / "bouncing_ball_000.mp4"
    info = probe_file(path)
    assert (info.width, info.height, info.fps, info.num_frames) == (32, 32, 8.0, 8)
    assert info.has_audio and info.duration_s == pytest.approx(1.0)
    frames, waveform = read_clip(path, 0.0, PRE)
    assert frames.shape == (4, 32, 32, 3) and waveform.shape == (16000,)
    assert frames.float().std() > 5 and waveform.abs().max() > 0.01  # not blank, not silent


def _pretrain_module(root: Path, batch_size: int, seed: int = 0) -> AVPretrainDataModule:
    return AVPretrainDataModule(SourceConfig(path=str(root)),
                                StreamSettings(preprocessing=PRE, batch_size=batch_size, seed=seed))


def test_data_modules_read_both_parts(tiny: demo.DemoClips) -> None:
    pretrain = _pretrain_module(tiny.unlabeled, batch_size=3)
    for batch in pretrain.train_dataloader():
        pretrain.report.add_batch(batch["meta"])
    assert (pretrain.report.files_seen, pretrain.report.clips) == (6, 6) and not pretrain.report.skipped
    labeled = LabeledClipDataModule(str(tiny.labeled), PRE, batch_size=8, num_workers=0)
    labeled.setup()
    assert labeled.class_names == tiny.class_names
    assert (labeled.num_train, labeled.num_test) == (12, 6)  # round(0.3 * 3) = 1 test clip per class


def test_pretrain_loader_order_is_a_function_of_the_seed(tiny) -> None:
    # The labelled folder, searched recursively, holds 18 clips.
    def order(batch_size: int, seed: int) -> list[str]:
        loader = _pretrain_module(tiny.labeled, batch_size, seed).train_dataloader()
        assert len(loader) == -(-18 // batch_size)  # every clip, the last batch partial
        return [path for batch in loader for path in batch["meta"]["path"]]

    assert order(4, seed=1) == order(4, seed=1) != order(4, seed=2)
    assert sorted(order(10, seed=1)) == sorted(order(4, seed=2)) and len(order(10, seed=1)) == 18


def test_scenes_are_deterministic_and_seeds_differ() -> None:
    canvas = Canvas(size=32, seconds=1.0, fps=8, sample_rate=16000)
    for name in CLASSES:
        frames, audio = render_scene(name, np.random.default_rng(5), canvas)
        again, audio_again = render_scene(name, np.random.default_rng(5), canvas)
        other, _ = render_scene(name, np.random.default_rng(6), canvas)
        assert frames.shape == (8, 32, 32, 3) and frames.dtype == np.uint8
        assert audio.shape == (16000,) and audio.dtype == np.float32 and np.abs(audio).max() <= 1
        np.testing.assert_array_equal(frames, again)
        np.testing.assert_array_equal(audio, audio_again)
        assert not np.array_equal(frames, other)


def _object_pixels(frames: np.ndarray) -> np.ndarray:
    """Bool [T, S, S]: pixels far from the frame's median colour (the background)."""
    background = np.median(frames.reshape(len(frames), -1, 3), axis=1)[:, None, None]
    return np.abs(frames.astype(float) - background).sum(-1) > 60


def _energy_per_frame(audio: np.ndarray, num_frames: int) -> np.ndarray:
    """Mean square of the audio during each video frame, [T]."""
    return (audio.reshape(num_frames, -1) ** 2).mean(1)


@pytest.mark.parametrize("name", ["bouncing_ball", "pulsing_ring"])
def test_sound_events_follow_the_visual_events(name: str) -> None:
    # At 100 fps: audio energy per frame correlates with the ball's depth (loud at the floor) or
    # the ring's size (loud when large) in the same clip, and not with another clip's sound.
    canvas = Canvas(size=32, seconds=2.0, fps=100, sample_rate=16000)
    rows = np.arange(32)[None, :, None]
    same, other = [], []
    for seed in range(6):
        frames, audio = render_scene(name, np.random.default_rng(seed), canvas)
        _, audio_other = render_scene(name, np.random.default_rng(seed + 100), canvas)
        mask = _object_pixels(frames)
        visual = (mask * rows).sum((1, 2)) / mask.sum((1, 2)) if name == "bouncing_ball" else mask.sum((1, 2))
        same.append(np.corrcoef(visual, _energy_per_frame(audio, 200))[0, 1])
        other.append(np.corrcoef(visual, _energy_per_frame(audio_other, 200))[0, 1])
    assert min(same) > 0.3 and np.mean(same) > np.mean(other) + 0.3


def test_nuisances_do_not_give_the_class_away() -> None:
    # The mean colour and the loudness of a clip are drawn the same way for every class.
    canvas = Canvas(size=32, seconds=1.0, fps=8, sample_rate=16000)
    colour, loudness = {}, {}
    for name in CLASSES:
        clips = [render_scene(name, np.random.default_rng(seed), canvas) for seed in range(100)]
        colour[name] = np.mean([f.mean() for f, _ in clips])
        loudness[name] = np.mean([np.sqrt(np.mean(a**2)) for _, a in clips])
    assert max(colour.values()) - min(colour.values()) < 8  # of 255; clips spread by ~17
    assert max(loudness.values()) / min(loudness.values()) < 1.25


def test_ensure_demo_clips_renders_once_then_reuses(tmp_path: Path, monkeypatch, caplog) -> None:
    small = dataclasses.replace(demo.COLLECTIONS["demo"], num_unlabeled=2, clips_per_class=1)
    monkeypatch.setitem(demo.COLLECTIONS, "demo", small)
    monkeypatch.setenv("AVSSL_CACHE_DIR", str(tmp_path))
    with caplog.at_level(logging.INFO, logger="datamodules.demo"):
        clips = demo.ensure_demo_clips()
    assert clips.root == tmp_path / f"demo-v{demo.DEMO_VERSION}"
    assert [p.name for p in tmp_path.iterdir()] == [clips.root.name]  # no temporary folder left
    assert len(list(clips.unlabeled.glob("*.mp4"))) == 2 and "rendering" in caplog.text
    stamp = (clips.unlabeled / "clip_00000.mp4").stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="datamodules.demo"):
        again = demo.ensure_demo_clips()
    assert again == clips and "rendering" not in caplog.text
    assert (clips.unlabeled / "clip_00000.mp4").stat().st_mtime_ns == stamp


def test_render_rejects_sizes_decord_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="size=16"):
        demo.render_demo_clips(tmp_path, num_unlabeled=1, clips_per_class=0, seed=0, size=16)
