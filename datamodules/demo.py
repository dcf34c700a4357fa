"""The built-in demo clips: a small synthetic audio-visual dataset rendered on first use.

`python -m avssl.pretrain` with no arguments pretrains on these clips, and the probe measures the
result on their labelled part, without downloading anything. Six classes, each carried by both
the video (shape and motion) and the audio (timbre and rhythm, synchronised with the motion); the
scenes and their nuisances are described in `datamodules.demo_scenes` and docs/data.md.

Layout::

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamodules.decode import DECORD_BAD_WIDTHS
from datamodules.demo_scenes import CLASSES, Canvas, render_scene
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


def _demo_clips(root: Path) -> DemoClips:
    return DemoClips(root=root, unlabeled=root / "unlabeled", labeled=root / "labeled",
                     class_names=sorted(CLASSES))


def render_demo_clips(out_dir: Path, *, num_unlabeled: int, clips_per_class: int, seed: int,
                      size: int = 64, seconds: float = 2.0, fps: int = 8) -> DemoClips:
    """Renders a demo set into ``out_dir`` (created if needed).

    Args:
        out_dir: the folder to fill.
        num_unlabeled: clips in ``unlabeled/``, each of a random class.
        clips_per_class: clips per class in ``labeled/<class>/``.
        seed: the set is a function of the seed (and of the sizes).
        size: frame width and height in pixels; must be even (yuv420p).
        seconds: clip length.
        fps: frame rate.

    Returns:
        The folders and the class names.

    Raises:
        ValueError: if ``size`` is odd or one decord cannot decode, or a count is negative.
    """
    if size % 2 or size < 8 or size in DECORD_BAD_WIDTHS:
        raise ValueError(f"size={size}: must be even (H.264 yuv420p), at least 8 pixels and not one "
                         f"of {DECORD_BAD_WIDTHS}, which decord cannot decode; 32 or 64 work.")
    if num_unlabeled < 0 or clips_per_class < 0:
        raise ValueError(f"num_unlabeled={num_unlabeled}, clips_per_class={clips_per_class}: "
                         "must be >= 0.")
    canvas = Canvas(size=size, seconds=seconds, fps=fps, sample_rate=SAMPLE_RATE)
    clips = _demo_clips(Path(out_dir))
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
        frames, audio = render_scene(class_name, rng, canvas)
        write_mp4(path, frames, fps, audio, SAMPLE_RATE)
    return clips


def default_cache_dir() -> Path:
    """``$AVSSL_CACHE_DIR``, or ``~/.cache/avssl``."""
    return Path(os.environ.get("AVSSL_CACHE_DIR") or Path.home() / ".cache" / "avssl")


def ensure_demo_clips(cache_dir: Path | None = None) -> DemoClips:
    """Returns the default demo set, rendering it on first use.

    The set is rendered into a temporary folder next to its final place and then renamed, so an
    interrupted render leaves nothing that a later call would mistake for a finished set, and two
    processes rendering at once both end up with the same complete set.

    Args:
        cache_dir: where to keep it; default `default_cache_dir()`. The set lives in the
            versioned sub-folder ``demo-v{DEMO_VERSION}``.

    Returns:
        The folders and the class names.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root = cache_dir / f"demo-v{DEMO_VERSION}"
    if root.is_dir():
        log.info("using the demo clips in %s", root)
        return _demo_clips(root)
    cache_dir.mkdir(parents=True, exist_ok=True)
    log.info("rendering the demo clips into %s (first use; about 10-20 s)", root)
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".demo-v{DEMO_VERSION}-", dir=cache_dir))
    tmp.chmod(0o755)  # mkdtemp makes it private; the finished set is readable like any cache
    try:
        render_demo_clips(tmp, num_unlabeled=DEFAULT_NUM_UNLABELED,
                          clips_per_class=DEFAULT_CLIPS_PER_CLASS, seed=DEFAULT_SEED)
        os.rename(tmp, root)
        log.info("rendered the demo clips in %.1f s", time.perf_counter() - started)
    except OSError:
        if not root.is_dir():  # not a lost race with another process: a real failure
            raise
        log.info("another process finished the demo clips first; using them")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _demo_clips(root)
