"""Synthetic audio-visual scenes for the built-in demo clips.

Each class is one small function that draws an object's shape and motion and makes a sound whose
events are synchronised with the motion's events (a beep when the ball touches the floor). The
class is carried by both modalities: by shape and kind of motion in the video, and by timbre and
rhythm in the audio. Everything else is a nuisance drawn independently for each clip and each
modality, from the same distribution for every class:

* video: background colour (dark, any hue) and texture, object colour (bright, any hue), object
  size, position, speed and phase;
* audio: loudness (the clip's RMS level), base pitch, background noise level and a small timing
  jitter of each sound event around its visual event.

The event rate is a nuisance too (0.45-0.9 s between events in every class), so rhythm alone does
not give the class away; the timbre and the motion's shape do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

EVENT_SECONDS = 0.25  # length of one sound event
JITTER_SECONDS = 0.015  # std of a sound event's offset from its visual event


@dataclass
class Canvas:
    """The clip format and its time axes.

    Attributes:
        size: frame width and height in pixels (even, for yuv420p).
        seconds: clip length.
        fps: video frame rate.
        sample_rate: audio sample rate.
    """

    size: int
    seconds: float
    fps: int
    sample_rate: int

    @property
    def frame_times(self) -> np.ndarray:
        return np.arange(round(self.seconds * self.fps)) / self.fps  # (T,)

    @property
    def sample_times(self) -> np.ndarray:
        return np.arange(round(self.seconds * self.sample_rate)) / self.sample_rate  # (N,)

    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre coordinates: x ``[1, 1, S]`` and y ``[1, S, 1]``, to broadcast with ``[T, 1, 1]``."""
        axis = np.arange(self.size) + 0.5
        return axis[None, None, :], axis[None, :, None]  # x, y


@dataclass
class Scene:
    """One clip's class content before the nuisances of colour and level are applied.

    Attributes:
        masks: bool ``[T, S, S]``, where the object is.
        sound: float ``[N]``, the class's sound at an arbitrary level.
    """

    masks: np.ndarray
    sound: np.ndarray


def _triangle(z: np.ndarray) -> np.ndarray:
    """A triangle wave in [0, 1] with its extremes (the turning points) at integer ``z``."""
    return np.abs(np.mod(z, 2.0) - 1.0)


def _event_times(period: float, phase: float, canvas: Canvas) -> np.ndarray:
    """Times ``(k - phase) * period`` inside the clip, for integer k."""
    ks = np.arange(np.ceil(phase), np.floor(canvas.seconds / period + phase) + 1)
    times = (ks - phase) * period
    return times[(times >= 0) & (times < canvas.seconds)]


def _place(template: np.ndarray, times: np.ndarray, rng: np.random.Generator, canvas: Canvas) -> np.ndarray:
    """Adds ``template`` at each event time, each shifted by its own timing jitter."""
    sound = np.zeros(len(canvas.sample_times))
    for time in times + rng.normal(0.0, JITTER_SECONDS, size=len(times)):
        start = int(round(max(time, 0.0) * canvas.sample_rate))
        piece = template[: max(len(sound) - start, 0)]
        sound[start:start + len(piece)] += piece
    return sound


def _event_axis(canvas: Canvas) -> np.ndarray:
    return np.arange(round(EVENT_SECONDS * canvas.sample_rate)) / canvas.sample_rate


def _chirp(f_start: float, f_end: float, canvas: Canvas) -> np.ndarray:
    t = _event_axis(canvas)
    rate = (f_end - f_start) / EVENT_SECONDS
    return np.sin(2 * np.pi * (f_start * t + 0.5 * rate * t**2)) * np.hanning(len(t))


def _period(rng: np.random.Generator) -> float:
    return rng.uniform(0.45, 0.9)


def _bouncing_ball(rng: np.random.Generator, canvas: Canvas, radius: float, pitch: float) -> Scene:
    """A disc bouncing on a floor; a decaying beep at every floor contact."""
    s, t = canvas.size, canvas.frame_times[:, None, None]
    period, phase = _period(rng), rng.uniform()
    floor = rng.uniform(s - radius - 0.15 * s, s - radius)
    height = min(rng.uniform(0.3, 0.55) * s, floor - radius)  # stays in the frame
    x_period, x_phase = rng.uniform(1.5, 3.0), rng.uniform(0, 2)
    cx = radius + (s - 2 * radius) * _triangle(t / x_period + x_phase)
    cy = floor - height * np.abs(np.sin(np.pi * (t / period + phase)))
    x, y = canvas.grid()
    masks = (x - cx) ** 2 + (y - cy) ** 2 <= (0.9 * radius) ** 2
    e = _event_axis(canvas)
    beep = np.sin(2 * np.pi * pitch * e) * np.exp(-e / 0.08)
    return Scene(masks, _place(beep, _event_times(period, phase, canvas), rng, canvas))


def _sliding_square(rng: np.random.Generator, canvas: Canvas, radius: float, pitch: float) -> Scene:
    """A square sliding between the walls; a square-wave buzz at every wall."""
    s, t = canvas.size, canvas.frame_times[:, None, None]
    period, phase = _period(rng), rng.uniform(0, 2)
    cx = radius + (s - 2 * radius) * _triangle(t / period + phase)
    cy = rng.uniform(radius, s - radius)
    x, y = canvas.grid()
    half = 0.8 * radius
    masks = (np.abs(x - cx) <= half) & (np.abs(y - cy) <= half)
    e = _event_axis(canvas)
    buzz = np.sign(np.sin(2 * np.pi * pitch * e)) * np.exp(-e / 0.08)
    return Scene(masks, _place(buzz, _event_times(period, phase, canvas), rng, canvas))


def _rotating_bar(rng: np.random.Generator, canvas: Canvas, radius: float, pitch: float) -> Scene:
    """A bar spinning about its centre; a rising chirp each time it passes vertical."""
    s, t = canvas.size, canvas.frame_times[:, None, None]
    period, phase = _period(rng), rng.uniform()  # period: one half-turn
    half_length, half_width = 1.5 * radius, max(0.4 * radius, 1.0)
    cx, cy = rng.uniform(half_length, s - half_length, size=2)
    angle = rng.choice([-1, 1]) * np.pi * (t / period + phase)  # 0 (mod pi): vertical
    x, y = canvas.grid()
    along = (x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)
    across = (x - cx) * np.cos(angle) - (y - cy) * np.sin(angle)
    masks = (np.abs(along) <= half_length) & (np.abs(across) <= half_width)
    rising = _chirp(pitch, 2.5 * pitch, canvas)
    return Scene(masks, _place(rising, _event_times(period, phase, canvas), rng, canvas))


def _pulsing_ring(rng: np.random.Generator, canvas: Canvas, radius: float, pitch: float) -> Scene:
    """A ring growing and shrinking; a tone whose loudness follows the ring's size (tremolo)."""
    s = canvas.size
    period, phase = _period(rng), rng.uniform()
    cx, cy = rng.uniform(1.5 * radius, s - 1.5 * radius, size=2)
    t = canvas.frame_times[:, None, None]
    ring_radius = radius * (1 + 0.45 * np.sin(2 * np.pi * (t / period + phase)))
    x, y = canvas.grid()
    distance = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    masks = np.abs(distance - ring_radius) <= max(0.2 * radius, 1.0)
    audio_t = canvas.sample_times + rng.normal(0.0, JITTER_SECONDS)  # one jitter for the clip
    envelope = (0.5 * (1 + np.sin(2 * np.pi * (audio_t / period + phase)))) ** 3  # loudest when largest
    return Scene(masks, np.sin(2 * np.pi * pitch * canvas.sample_times) * envelope)


def _zigzag_triangle(rng: np.random.Generator, canvas: Canvas, radius: float, pitch: float) -> Scene:
    """A triangle moving in a zig-zag; a noise burst at every turn."""
    s, t = canvas.size, canvas.frame_times[:, None, None]
    period, phase = _period(rng), rng.uniform(0, 2)
    x_period, x_phase = rng.uniform(1.5, 3.0), rng.uniform(0, 2)
    cx = radius + (s - 2 * radius) * _triangle(t / x_period + x_phase)
    cy = radius + (s - 2 * radius) * _triangle(t / period + phase)
    x, y = canvas.grid()
    depth = y - (cy - radius)  # 0 at the apex, 2 * radius at the base
    masks = (depth >= 0) & (depth <= 2 * radius) & (np.abs(x - cx) <= 0.6 * depth)
    e = _event_axis(canvas)
    # High-passed noise (first difference) so the burst's pitch range differs from the tones.
    burst = np.diff(rng.uniform(-1.0, 1.0, len(e) + 1)) * np.exp(-e / 0.1)
    return Scene(masks, _place(burst, _event_times(period, phase, canvas), rng, canvas))


def _flickering_cross(rng: np.random.Generator, canvas: Canvas, radius: float, pitch: float) -> Scene:
    """A cross blinking on and off while drifting; a falling chirp each time it appears."""
    s, t = canvas.size, canvas.frame_times[:, None, None]
    period, phase = _period(rng), rng.uniform()
    start, end = rng.uniform(1.3 * radius, s - 1.3 * radius, size=(2, 2))
    cx = start[0] + (end[0] - start[0]) * t / canvas.seconds
    cy = start[1] + (end[1] - start[1]) * t / canvas.seconds
    visible = np.mod(t / period + phase, 1.0) < 0.6  # switches on at integer t / period + phase
    x, y = canvas.grid()
    arm, reach = max(0.45 * radius, 1.0), 1.3 * radius
    dx, dy = np.abs(x - cx), np.abs(y - cy)
    masks = visible & (((dx <= arm) & (dy <= reach)) | ((dy <= arm) & (dx <= reach)))
    falling = _chirp(2.5 * pitch, pitch, canvas)
    return Scene(masks, _place(falling, _event_times(period, phase, canvas), rng, canvas))


SceneFn = Callable[[np.random.Generator, Canvas, float, float], Scene]

CLASSES: dict[str, SceneFn] = {
    "bouncing_ball": _bouncing_ball,
    "sliding_square": _sliding_square,
    "rotating_bar": _rotating_bar,
    "pulsing_ring": _pulsing_ring,
    "zigzag_triangle": _zigzag_triangle,
    "flickering_cross": _flickering_cross,
}


def render_scene(class_name: str, rng: np.random.Generator, canvas: Canvas) -> tuple[np.ndarray, np.ndarray]:
    """Draws one clip of a class with freshly drawn nuisances.

    Args:
        class_name: a key of `CLASSES`.
        rng: the clip's random generator; the clip is a function of its state.
        canvas: size, length, frame rate and sample rate.

    Returns:
        ``frames``: uint8 ``[T, S, S, 3]`` and ``audio``: float32 ``[N]`` in [-1, 1].
    """
    s = canvas.size
    radius = rng.uniform(0.15, 0.25) * s
    pitch = float(np.exp(rng.uniform(np.log(300.0), np.log(900.0))))
    scene = CLASSES[class_name](rng, canvas, radius, pitch)

    # Video nuisances: a darker background colour with a faint static texture, a brighter object
    # colour. Keeping the object brighter than the background (any hue for either) leaves the
    # shape visible to simple features; fully random colours drown it (see docs/data.md).
    background = rng.uniform(0, 110, size=3)
    colour = rng.uniform(150, 255, size=3)
    texture = rng.normal(0, 8, size=(s, s, 1))
    image = np.where(scene.masks[..., None], colour, background + texture)  # (T, S, S, 3)
    frames = np.clip(np.rint(image), 0, 255).astype(np.uint8)

    # Audio nuisances: overall level (RMS) and background noise level.
    sound = scene.sound / (np.sqrt(np.mean(scene.sound**2)) + 1e-8) * rng.uniform(0.02, 0.08)
    sound += rng.normal(0, rng.uniform(0.003, 0.03), size=len(sound))
    return frames, np.clip(sound, -1.0, 1.0).astype(np.float32)
