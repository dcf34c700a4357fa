"""``python -m avssl.data stats SOURCE [recipe=NAME] [key=value ...]``: fbank statistics of your data.

Prints the mean and std to put in ``data.preprocessing`` (see `datamodules.fbank_stats`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

import torch

from avssl.config import load_config
from avssl.errors import ConfigError
from datamodules.errors import ClipError, DataPathError, DataSourceError, NoUsableClipsError
from datamodules.fbank_stats import fbank_stats
from datamodules.stream import StreamSettings

USER_ERRORS = (ConfigError, ClipError, DataPathError, DataSourceError, NoUsableClipsError)


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
        result = fbank_stats(source, settings, progress=not args.no_progress, path_key="SOURCE")
    except USER_ERRORS as err:
        print(f"avssl.data: error: {err}", file=sys.stderr)
        return 2
    print(f"{result['clips']} clips, {result['fbank_frames']} fbank frames "
          f"({result['report']['skipped_count']} files skipped)")
    print(f"audio_mean={result['audio_mean']:.4f} audio_std={result['audio_std']:.4f}")
    print(f"use: data.preprocessing.audio_mean={result['audio_mean']:.4f} "
          f"data.preprocessing.audio_std={result['audio_std']:.4f}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, ensure_ascii=True) + "\n", encoding="ascii")  # as data_report.json
    return 0


if __name__ == "__main__":
    sys.exit(main())
