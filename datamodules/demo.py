"""The built-in synthetic collections, rendered on first use: the demo clips and ``looming``.

`python -m avssl.pretrain` with no arguments pretrains on the demo clips, and the probe measures
the result on their labelled part, without downloading anything. Six classes, each carried by both
the video (shape and motion) and the audio (timbre and rhythm, synchronised with the motion); the
scenes and their nuisances are described in `datamodules.demo_scenes` and docs/data.md.

``looming`` (`datamodules.looming_scenes`) is a second development collection of another design:
eight classes (a shape and whether it approaches or recedes), strong per-clip nuisances in both
streams and cross-modal cues (timing, background colour and hum, brightness and loudness) that let
a model match a clip's audio to its video without learning the class. `bench/quality.py
--collection looming` measures recipes on it; `ensure_collection("looming")` renders it.

Layout (of every collection)::

    <root>/unlabeled/clip_00000.mp4 ...            classes drawn at random, names hide them
    <root>/labeled/<class_name>/<class_name>_000.mp4 ...

Clips are H.264 (yuv420p) with 16 kHz mono AAC audio in mp4. Everything is a function of the
seed.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamodules import demo_scenes, looming_scenes
from datamodules.decode import DECORD_BAD_WIDTHS
from datamodules.demo_scenes import Canvas
from datamodules.encode import write_mp4

log = logging.getLogger(__name__)

DEMO_VERSION = 3  # bump when the clips change, so old caches are not reused
SAMPLE_RATE = 16000
# ensure_demo_clips' set: 480 unlabelled clips and 80 labelled clips per class, 2 s at 64 px, 8 fps.
DEFAULT_NUM_UNLABELED = 480
DEFAULT_CLIPS_PER_CLASS = 80
DEFAULT_SEED = 0


@dataclass
class DemoClips:
    """Where the demo clips are.

    Attributes:
        root: the demo folder.
        unlabeled: flat folder of clips without labels (for pretraining).
        labeled: one folder per class (for probes).
        class_names: the classes, in label order (sorted folder names).
    """

    root: Path
    unlabeled: Path
    labeled: Path
    class_names: list[str]


SceneRenderer = Callable[[str, np.random.Generator, Canvas], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Collection:
    """A synthetic collection: its classes, how one clip of a class is drawn, and its default size.

    Attributes:
        classes: the class names.
        render: ``(class_name, rng, canvas) -> (frames uint8 [T, S, S, 3], audio float32 [N])``.
        version: bump when the clips change, so old caches are not reused.
        num_unlabeled: clips in ``unlabeled/`` of the cached set.
        clips_per_class: clips per class in ``labeled/`` of the cached set.
    """

    classes: tuple[str, ...]
    render: SceneRenderer
    version: int
    num_unlabeled: int
    clips_per_class: int


COLLECTIONS: dict[str, Collection] = {
    "demo": Collection(tuple(demo_scenes.CLASSES), demo_scenes.render_scene, DEMO_VERSION,
                       DEFAULT_NUM_UNLABELED, DEFAULT_CLIPS_PER_CLASS),
    # 600 unlabelled clips and 60 labelled per class (480: 336 train / 144 test at the probe's 0.3)
    "looming": Collection(looming_scenes.CLASSES, looming_scenes.render_looming_scene, 2, 600, 60),
}


def _collection(name: str) -> Collection:
    if name not in COLLECTIONS:
        raise ValueError(f"collection={name!r} is unknown; choose one of {sorted(COLLECTIONS)}")
    return COLLECTIONS[name]


def _clips_in(root: Path, collection: Collection) -> DemoClips:
    return DemoClips(root=root, unlabeled=root / "unlabeled", labeled=root / "labeled",
                     class_names=sorted(collection.classes))


def render_demo_clips(out_dir: Path, *, num_unlabeled: int, clips_per_class: int, seed: int,
                      size: int = 64, seconds: float = 2.0, fps: int = 8, collection: str = "demo") -> DemoClips:
    """Renders a set of a synthetic collection (the demo by default) into ``out_dir`` (created if needed).

    Args:
        out_dir: the folder to fill.
        num_unlabeled: clips in ``unlabeled/``, each of a random class.
        clips_per_class: clips per class in ``labeled/<class>/``.
        seed: the set is a function of the seed (and of the sizes).
        size: frame width and height in pixels; must be even (yuv420p).
        seconds: clip length.
        fps: frame rate.
        collection: a key of `COLLECTIONS`.

    Returns:
        The folders and the class names.

    Raises:
        ValueError: if ``size`` is odd or one decord cannot decode, a count is negative or the
            collection is unknown.
    """
    kind = _collection(collection)
    if size % 2 or size < 8 or size in DECORD_BAD_WIDTHS:
        raise ValueError(f"size={size}: must be even (H.264 yuv420p), at least 8 pixels and not one "
                         f"of {DECORD_BAD_WIDTHS}, which decord cannot decode; 32 or 64 work.")
    if num_unlabeled < 0 or clips_per_class < 0:
        raise ValueError(f"num_unlabeled={num_unlabeled}, clips_per_class={clips_per_class}: "
                         "must be >= 0.")
    canvas = Canvas(size=size, seconds=seconds, fps=fps, sample_rate=SAMPLE_RATE)
    clips = _clips_in(Path(out_dir), kind)
    names = clips.class_names
    jobs = [(clips.unlabeled / f"clip_{i:05d}.mp4", None, [seed, 0, i]) for i in range(num_unlabeled)]
    jobs += [(clips.labeled / name / f"{name}_{i:03d}.mp4", name, [seed, 1, label, i])
             for label, name in enumerate(names) for i in range(clips_per_class)]
    clips.unlabeled.mkdir(parents=True, exist_ok=True)
    for name in names:
        (clips.labeled / name).mkdir(parents=True, exist_ok=True)
    for path, name, rng_key in jobs:
        rng = np.random.default_rng(rng_key)
        class_name = name if name is not None else names[rng.integers(len(names))]
        frames, audio = kind.render(class_name, rng, canvas)
        write_mp4(path, frames, fps, audio, SAMPLE_RATE)
    return clips


def default_cache_dir() -> Path:
    """``$AVSSL_CACHE_DIR``, or ``~/.cache/avssl``."""
    return Path(os.environ.get("AVSSL_CACHE_DIR") or Path.home() / ".cache" / "avssl")


def ensure_demo_clips(cache_dir: Path | None = None) -> DemoClips:
    """Returns the default demo set, rendering it on first use (`ensure_collection` of ``demo``)."""
    return ensure_collection("demo", cache_dir)


def ensure_collection(name: str, cache_dir: Path | None = None) -> DemoClips:
    """Returns the cached set of a synthetic collection, rendering it on first use.

    The set is rendered into a temporary folder next to its final place and then renamed, so an
    interrupted render leaves nothing that a later call would mistake for a finished set, and two
    processes rendering at once both end up with the same complete set.

    Args:
        name: a key of `COLLECTIONS` (``demo``, ``looming``).
        cache_dir: where to keep it; default `default_cache_dir()`. The set lives in the
            versioned sub-folder ``<name>-v<version>``.

    Returns:
        The folders and the class names.

    Raises:
        ValueError: for an unknown collection.
    """
    kind = _collection(name)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root = cache_dir / f"{name}-v{kind.version}"
    if root.is_dir():
        log.info("using the %s clips in %s", name, root)
        return _clips_in(root, kind)
    cache_dir.mkdir(parents=True, exist_ok=True)
    log.info("rendering the %s clips into %s (first use; about 10-20 s)", name, root)
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-v{kind.version}-", dir=cache_dir))
    tmp.chmod(0o755)  # mkdtemp makes it private; the finished set is readable like any cache
    try:
        render_demo_clips(tmp, num_unlabeled=kind.num_unlabeled, clips_per_class=kind.clips_per_class,
                          seed=DEFAULT_SEED, collection=name)
        os.rename(tmp, root)
        log.info("rendered the %s clips in %.1f s", name, time.perf_counter() - started)
    except OSError:
        if not root.is_dir():  # not a lost race with another process: a real failure
            raise
        log.info("another process finished the %s clips first; using them", name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _clips_in(root, kind)
