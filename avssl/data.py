"""``python -m avssl.data stats SOURCE [recipe=NAME] [key=value ...]``: fbank statistics of your data.

Recipes normalise log-mel features with published statistics (CAV-MAE's AudioSet ones by
default). For a collection that sounds different, compute the mean and standard deviation of the
fbank values on your own clips and put them in the recipe. The clips are cut and decoded exactly as
pretraining would cut them (the recipe's clip length, sample rate, window, hop and mel bins), and
only the fbank frames that come from real audio count: no padding, and files without audio are
skipped, not counted as silence.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from avssl.config import ConfigError, load_config
from datamodules.errors import ClipError, DataPathError, DataSourceError, NoUsableClipsError
from datamodules.preprocessing import Preprocessing
from datamodules.report import DataReport
from datamodules.sources import SourceConfig, open_source
from datamodules.stream import ClipStream, StreamSettings

log = logging.getLogger("avssl.data")

USER_ERRORS = (ConfigError, ClipError, DataPathError, DataSourceError, NoUsableClipsError)


def real_fbank_frames(pre: Preprocessing) -> int:
    """Fbank frames kaldi computes from one clip's samples (``snip_edges``: no padded frames)."""
    samples = round(pre.clip_seconds * pre.sample_rate)
    window = round(pre.frame_length_ms * pre.sample_rate / 1000)
    shift = round(pre.frame_shift_ms * pre.sample_rate / 1000)
    return 1 + (samples - window) // shift


def fbank_stats(source: SourceConfig, settings: StreamSettings, progress: bool = True) -> dict[str, Any]:
    """Mean and std of the raw log-mel values of a source's clips.

    Args:
        source: the videos.
        settings: how clips are cut and decoded (the recipe's); normalisation, padding and the
            no-audio policy are overridden so that only real audio counts.
        progress: show a progress bar.

    Returns:
        ``{"audio_mean", "audio_std", "clips", "fbank_frames", "report"}``.

    Raises:
        NoUsableClipsError: when no clip of the source could be read.
    """
    pre = replace(settings.preprocessing, audio_mean=0.0, audio_std=1.0,
                  audio_frames=real_fbank_frames(settings.preprocessing),
                  num_frames=1, fps=None, frame_size=16, crop="center")
    settings = replace(settings, preprocessing=pre, policies=replace(settings.policies, no_audio="skip"))
    stream = ClipStream(open_source(source), settings)
    loader = DataLoader(stream, batch_size=None, num_workers=settings.num_workers)
    total, total_sq, count = 0.0, 0.0, 0
    report = DataReport()
    for batch in tqdm(loader, total=len(stream), desc="fbank stats", unit="batch", disable=not progress):
        report.add_batch(batch["meta"])
        if batch["audio"].numel():
            values = batch["audio"].double()
            total += float(values.sum())
            total_sq += float(values.square().sum())
            count += values.numel()
    if count == 0:
        raise NoUsableClipsError(source.path, report.files_seen, report.counts_by_reason(), source.extensions)
    mean = total / count
    std = math.sqrt(max(total_sq / count - mean * mean, 0.0))
    return {"audio_mean": mean, "audio_std": std, "clips": report.clips,
            "fbank_frames": count // pre.num_mel_bins, "report": report.to_dict()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m avssl.data",
        description="Data tools. 'stats' computes the fbank mean/std of a source's clips, to set "
                    "data.preprocessing.audio_mean and audio_std in a recipe.")
    commands = parser.add_subparsers(dest="command", required=True)
    stats = commands.add_parser("stats", help="fbank mean and std of a source's clips")
    stats.add_argument("source", help="a folder of videos, a manifest (.csv/.jsonl) or shards (a.tar, s-{000..009}.tar)")
    stats.add_argument("overrides", nargs="*", help="recipe=NAME and key=value overrides that set the clip and fbank settings")
    stats.add_argument("--out", type=Path, help="also write the figures and the data report as JSON here")
    stats.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.overrides)
        data = config.data
        settings = StreamSettings(preprocessing=data.preprocessing, policies=data.policies, batch_size=16,
                                  clips_per_video=data.clips_per_video, sampling=data.clip_sampling,
                                  seed=config.run.seed, num_workers=data.num_workers)
        source = replace(data.source, path=args.source)
        torch.set_num_threads(1)
        result = fbank_stats(source, settings, progress=not args.no_progress)
    except USER_ERRORS as err:
        print(f"avssl.data: error: {err}", file=sys.stderr)
        return 2
    print(f"{result['clips']} clips, {result['fbank_frames']} fbank frames "
          f"({result['report']['skipped_count']} files skipped)")
    print(f"audio_mean={result['audio_mean']:.4f} audio_std={result['audio_std']:.4f}")
    print(f"use: data.preprocessing.audio_mean={result['audio_mean']:.4f} "
          f"data.preprocessing.audio_std={result['audio_std']:.4f}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
