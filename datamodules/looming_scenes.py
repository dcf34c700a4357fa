"""Synthetic scenes of the ``looming`` development collection: built to reward a pairing shortcut.

Unlike the demo (`datamodules.demo_scenes`: six kinds of motion, each with a sound *event* at its
visual events), a ``looming`` class is a shape and a direction of change: the object grows
(``looming``: it approaches, its sound swells and rises in pitch, then it jumps back far away) or
shrinks (``receding``: it jumps close and then moves away, its sound fading and falling). Four
shapes with four timbres times two directions make eight classes. What the classes share is the
shape, the timbre and the *direction* of the size, loudness and pitch ramps.

Everything else is drawn per clip and shared by nothing, most of it strong:

* video: background colour and texture (a grating of random orientation, frequency and contrast,
  or pixel noise), object colour (any hue; only a minimum contrast to the background), the size
  range, the position and drift, the ramp's period (speed) and phase;
* audio: base pitch, a spectral tilt (equalisation), coloured noise (white to brown) at a random
  level, mains-like hum, overall loudness.

And, on purpose, three cues that tell a clip's audio from other clips' without the class, because
each clip carries them in both streams:

* **timing**: the ramp's period and phase are heard and seen; on top of that the object vanishes
  for one to three short random moments (one or two frames) and the sound drops out with it;
* **colour and room tone**: the background's hue sets the hum's frequency (60-240 Hz), a static
  cue that a model can match across the streams, like the same room seen and heard;
* **loudness and brightness**: the object's brightness follows the clip's loudness.

A contrastive objective can therefore match every pair perfectly while learning nothing of the
class; one that learns what transfers must ignore these.
"""

from __future__ import annotations

import colorsys

import numpy as np

from datamodules.demo_scenes import Canvas

SHAPES = ("disc", "square", "triangle", "cross")
DIRECTIONS = ("looming", "receding")
CLASSES = tuple(f"{shape}_{direction}" for shape in SHAPES for direction in DIRECTIONS)
HUM_HZ = (60.0, 240.0)  # the hum's frequency range, set by the background's hue
BLINK_SECONDS = (0.1, 0.25)  # length of one dropout of both streams


def _ramp(t: np.ndarray, period: float, phase: float, direction: str) -> np.ndarray:
    """Sawtooth in [0, 1]: rising then jumping back (looming) or jumping up then falling (receding)."""
    up = np.mod(t / period + phase, 1.0)
    return up if direction == "looming" else 1.0 - up


def _shape_mask(shape: str, x: np.ndarray, y: np.ndarray, cx: np.ndarray, cy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """bool ``[T, S, S]``: pixels inside the shape of radius ``r`` ``[T, 1, 1]`` centred at ``(cx, cy)``."""
    dx, dy = x - cx, y - cy
    if shape == "disc":
        return dx**2 + dy**2 <= r**2
    if shape == "square":
        return (np.abs(dx) <= 0.85 * r) & (np.abs(dy) <= 0.85 * r)
    if shape == "triangle":  # apex up
        depth = dy + r
        return (depth >= 0) & (depth <= 1.8 * r) & (np.abs(dx) <= 0.6 * depth)
    arm = np.maximum(0.3 * r, 1.0)  # cross
    return ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r))


def _partials(shape: str) -> list[tuple[float, float]]:
    """(frequency ratio, amplitude) of each shape's timbre."""
    if shape == "disc":  # nearly pure
        return [(1.0, 1.0), (2.0, 0.15)]
    if shape == "square":  # odd harmonics, square-wave like
        return [(n, 1.0 / n) for n in (1, 3, 5, 7, 9)]
    if shape == "triangle":  # every harmonic, sawtooth like
        return [(n, 1.0 / n) for n in range(1, 9)]
    return [(1.0, 1.0), (2.76, 0.6), (5.40, 0.4), (8.93, 0.25)]  # cross: inharmonic, bell like


def _tone(shape: str, pitch: np.ndarray, sample_rate: int) -> np.ndarray:
    """A tone of the shape's timbre whose fundamental follows ``pitch`` ``[N]`` (Hz)."""
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate  # (N,)
    nyquist = sample_rate / 2
    sound = np.zeros_like(pitch)
    for ratio, amplitude in _partials(shape):
        sound += amplitude * np.sin(ratio * phase) * (ratio * pitch < nyquist)
    return sound


def _coloured_noise(rng: np.random.Generator, n: int, sample_rate: int, beta: float) -> np.ndarray:
    """Noise with a 1/f^beta power spectrum (0: white, 1: pink, 2: brown), unit RMS."""
    spectrum = np.fft.rfft(rng.normal(size=n))
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    spectrum *= np.maximum(freqs, 20.0) ** (-beta / 2)
    noise = np.fft.irfft(spectrum, n)
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def _tilt(sound: np.ndarray, sample_rate: int, slope: float) -> np.ndarray:
    """Equalisation: the spectrum multiplied by (f / 1 kHz)^slope (slope < 0 darker, > 0 brighter)."""
    spectrum = np.fft.rfft(sound)
    freqs = np.fft.rfftfreq(len(sound), 1.0 / sample_rate)
    spectrum *= (np.maximum(freqs, 50.0) / 1000.0) ** slope
    return np.fft.irfft(spectrum, len(sound))


def _blinks(rng: np.random.Generator, canvas: Canvas) -> list[tuple[float, float]]:
    """One to three (start, end) seconds where the object and its sound drop out."""
    spans = []
    for _ in range(rng.integers(1, 4)):
        length = rng.uniform(*BLINK_SECONDS)
        start = rng.uniform(0.0, canvas.seconds - length)
        spans.append((start, start + length))
    return spans


def _visible(times: np.ndarray, blinks: list[tuple[float, float]]) -> np.ndarray:
    return ~np.any([(times >= a) & (times < b) for a, b in blinks], axis=0)


def _rgb(hue: float, saturation: float, value: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, saturation, value)) * 255.0


def render_looming_scene(class_name: str, rng: np.random.Generator, canvas: Canvas) -> tuple[np.ndarray, np.ndarray]:
    """Draws one clip of a ``looming`` class with freshly drawn nuisances and cross-modal cues.

    Args:
        class_name: one of `CLASSES` (``<shape>_<direction>``).
        rng: the clip's random generator; the clip is a function of its state.
        canvas: size, length, frame rate and sample rate.

    Returns:
        ``frames``: uint8 ``[T, S, S, 3]`` and ``audio``: float32 ``[N]`` in [-1, 1].
    """
    shape, direction = class_name.split("_")
    s, sr = canvas.size, canvas.sample_rate
    t_video, t_audio = canvas.frame_times, canvas.sample_times  # (T,), (N,)
    period, phase = rng.uniform(0.7, 2.5), rng.uniform()
    blinks = _blinks(rng, canvas)
    loudness = rng.uniform(0.0, 1.0)  # shared cue: object brightness and sound level

    # Video: textured background whose hue sets the hum; the object grows or shrinks as it drifts.
    r_max = rng.uniform(0.28, 0.4) * s
    r_min = r_max * rng.uniform(0.45, 0.6)
    size = _ramp(t_video, period, phase, direction)[:, None, None]  # (T, 1, 1)
    radius = r_min + (r_max - r_min) * size
    start = rng.uniform(r_max, s - r_max, size=2)
    drift = rng.normal(0.0, 0.1 * s, size=2) / canvas.seconds
    t = t_video[:, None, None]
    cx = np.clip(start[0] + drift[0] * t, r_max, s - r_max)
    cy = np.clip(start[1] + drift[1] * t, r_max, s - r_max)
    x, y = canvas.grid()
    visible = _visible(t_video, blinks)[:, None, None]  # (T, 1, 1)
    masks = _shape_mask(shape, x, y, cx, cy, radius) & visible  # (T, S, S)

    background_hue = rng.uniform()
    background = _rgb(background_hue, rng.uniform(0.3, 1.0), rng.uniform(0.05, 0.4))  # darker than any object
    if rng.uniform() < 0.5:  # a grating of random orientation and frequency
        angle, cycles = rng.uniform(0, np.pi), rng.uniform(1.0, 6.0)
        grating = np.sin(2 * np.pi * cycles * (x * np.cos(angle) + y * np.sin(angle)) / s + rng.uniform(0, 2 * np.pi))
        texture = rng.uniform(5, 25) * grating[0][..., None]  # (S, S, 1)
    else:  # pixel noise
        texture = rng.normal(0.0, rng.uniform(3, 12), size=(s, s, 1))
    value = 0.75 + 0.25 * loudness  # the object is as bright as the clip is loud
    colour = _rgb(rng.uniform(), rng.uniform(0.0, 0.8), value)
    image = np.where(masks[..., None], colour, background + texture)  # (T, S, S, 3)
    frames = np.clip(np.rint(image), 0, 255).astype(np.uint8)

    # Audio: the shape's timbre, swelling and rising with the size; hum, noise, tilt, level.
    ramp = _ramp(t_audio, period, phase, direction)  # (N,)
    pitch = np.exp(rng.uniform(np.log(180.0), np.log(600.0))) * 2.0 ** (0.7 * (ramp - 0.5))
    gate = _visible(t_audio, blinks).astype(float)
    gate = np.convolve(gate, np.hanning(81) / np.hanning(81).sum(), mode="same")  # 5 ms ramps, no clicks
    tone = _tone(shape, pitch, sr) * (0.15 + 0.85 * ramp) * gate
    tone = _tilt(tone, sr, rng.uniform(-0.8, 0.8))
    tone /= np.sqrt(np.mean(tone**2)) + 1e-8
    hum_hz = HUM_HZ[0] * (HUM_HZ[1] / HUM_HZ[0]) ** background_hue
    hum = sum(np.sin(2 * np.pi * k * hum_hz * t_audio) / k for k in (1, 2, 3))
    noise = _coloured_noise(rng, len(t_audio), sr, rng.uniform(0.0, 2.0))
    sound = tone + rng.uniform(0.1, 0.6) * hum + rng.uniform(0.05, 0.5) * noise
    level = 0.01 * 10 ** (1.0 * loudness)  # RMS 0.01-0.1: 20 dB of loudness
    sound *= level / (np.sqrt(np.mean(sound**2)) + 1e-8)
    return frames, np.clip(sound, -1.0, 1.0).astype(np.float32)
