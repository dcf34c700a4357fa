"""The ``looming`` development collection: layout, determinism, what carries the class and what does not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from datamodules import demo
from datamodules.decode import read_clip
from datamodules.demo_scenes import Canvas
from datamodules.looming_scenes import CLASSES, render_looming_scene
from datamodules.preprocessing import Preprocessing

CANVAS = Canvas(size=32, seconds=2.0, fps=8, sample_rate=16000)


def _object_area(frames: np.ndarray) -> np.ndarray:
    """Pixels far from the frame's median colour (the background's: the object covers few), per frame ``[T]``."""
    background = np.median(frames.astype(int).reshape(len(frames), -1, 3), axis=1)  # (T, 3)
    return (np.abs(frames.astype(int) - background[:, None, None]).sum(axis=-1) > 60).sum(axis=(1, 2))


def test_renders_eight_class_folders_that_decode(tmp_path: Path) -> None:
    clips = demo.render_demo_clips(tmp_path, num_unlabeled=3, clips_per_class=1, seed=0, size=32,
                                   collection="looming")
    assert clips.class_names == sorted(CLASSES) and len(CLASSES) == 8
    assert sorted(p.name for p in clips.labeled.iterdir()) == sorted(CLASSES)
    frames, waveform = read_clip(next(clips.unlabeled.glob("*.mp4")), 0.0,
                                 Preprocessing(clip_seconds=2.0, num_frames=16, frame_size=32))
    assert frames.shape == (16, 32, 32, 3) and waveform.shape == (32000,) and waveform.abs().max() > 0


def test_unknown_collection_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="looming"):
        demo.render_demo_clips(tmp_path, num_unlabeled=1, clips_per_class=0, seed=0, collection="lomming")
    with pytest.raises(ValueError, match="demo"):
        demo.ensure_collection("nope", tmp_path)


def test_a_clip_is_a_function_of_its_seed() -> None:
    a = render_looming_scene("disc_looming", np.random.default_rng(5), CANVAS)
    b = render_looming_scene("disc_looming", np.random.default_rng(5), CANVAS)
    c = render_looming_scene("disc_looming", np.random.default_rng(6), CANVAS)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("shape", ["disc", "square", "triangle", "cross"])
def test_looming_objects_grow_and_receding_ones_shrink(shape: str) -> None:
    """The direction is the class: most frame-to-frame size changes are growth (looming) or shrinkage."""
    growing = {}
    for direction in ("looming", "receding"):
        steps = []
        for seed in range(12):
            frames, _ = render_looming_scene(f"{shape}_{direction}", np.random.default_rng(seed), Canvas(64, 2.0, 8, 16000))
            area = _object_area(frames)
            shown = (area[1:] > 0) & (area[:-1] > 0)  # both frames show the object (no dropout)
            change = np.sign(np.diff(area))[shown]
            steps += list(change[change != 0])
        growing[direction] = np.mean(np.array(steps) > 0)
    assert growing["looming"] > 0.7 and growing["receding"] < 0.3, growing


def test_colour_and_loudness_do_not_give_the_class_away() -> None:
    brightness, loudness = {}, {}
    for name in CLASSES:
        clips = [render_looming_scene(name, np.random.default_rng(seed), CANVAS) for seed in range(60)]
        brightness[name] = np.mean([f.mean() for f, _ in clips])
        loudness[name] = np.mean([np.sqrt(np.mean(a**2)) for _, a in clips])
    assert max(brightness.values()) - min(brightness.values()) < 12  # of 255; clips spread by ~30
    assert max(loudness.values()) / min(loudness.values()) < 1.3


def test_hum_frequency_follows_the_background_hue() -> None:
    """The cross-modal 'room' cue: clips with a low-hue background hum lower than high-hue ones."""
    def hum_peak(audio: np.ndarray) -> float:
        spectrum = np.abs(np.fft.rfft(audio))
        freqs = np.fft.rfftfreq(len(audio), 1 / 16000)
        band = (freqs >= 55) & (freqs <= 250)
        return float(freqs[band][np.argmax(spectrum[band])])

    def hue(frames: np.ndarray) -> float:
        import colorsys
        r, g, b = np.median(frames[0].reshape(-1, 3), axis=0) / 255
        return colorsys.rgb_to_hsv(r, g, b)[0]

    pairs = []
    for seed in range(30):
        frames, audio = render_looming_scene("square_receding", np.random.default_rng(seed), Canvas(32, 2.0, 8, 16000))
        pairs.append((hue(frames), hum_peak(audio)))
    hues, peaks = np.array(pairs).T
    assert np.corrcoef(hues, np.log(peaks))[0, 1] > 0.8
