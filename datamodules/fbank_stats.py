"""Fbank statistics of a data source, for the normalisation settings of a recipe.

Recipes normalise log-mel features with published statistics (CAV-MAE's AudioSet ones by
default). For a collection that sounds different, compute the mean and standard deviation of the
fbank values on your own clips (``python -m avssl.data stats``). The clips are cut and decoded
exactly as pretraining would cut them (the recipe's clip length, sample rate, window, hop and mel
bins), and only the fbank frames that come from real audio count: a frame whose window holds any
zero padding (a file or audio track shorter than the clip, a delayed track) is left out (the
batch's ``audio_mask``), and files without audio are skipped, not counted as silence.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from torch.utils.data import DataLoader
from tqdm import tqdm

from datamodules.errors import NoUsableClipsError
from datamodules.preprocessing import Preprocessing
from datamodules.report import DataReport
from datamodules.sources import SourceConfig, open_source
from datamodules.stream import ClipStream, StreamSettings


def real_fbank_frames(pre: Preprocessing) -> int:
    """Fbank frames kaldi computes from one clip's samples (``snip_edges``: no frames past its end)."""
    samples = round(pre.clip_seconds * pre.sample_rate)
    window = round(pre.frame_length_ms * pre.sample_rate / 1000)
    shift = round(pre.frame_shift_ms * pre.sample_rate / 1000)
    return 1 + (samples - window) // shift


def fbank_stats(source: SourceConfig, settings: StreamSettings, progress: bool = True,
                path_key: str = "data.source.path") -> dict[str, Any]:
    """Mean and std of the raw log-mel values of a source's clips.

    Args:
        source: the videos.
        settings: how clips are cut and decoded (the recipe's); normalisation, the frame count
            and the no-audio policy are overridden, and padded frames are left out, so that only
            real audio counts.
        progress: show a progress bar.
        path_key: the key or argument that set ``source.path``, named in errors.

    Returns:
        ``{"audio_mean", "audio_std", "clips", "fbank_frames", "report"}``.

    Raises:
        NoUsableClipsError: when no clip of the source could be read.
    """
    pre = replace(settings.preprocessing, audio_mean=0.0, audio_std=1.0,
                  audio_frames=real_fbank_frames(settings.preprocessing),
                  num_frames=1, fps=None, frame_size=16, crop="center")
    settings = replace(settings, preprocessing=pre, policies=replace(settings.policies, no_audio="skip"))
    stream = ClipStream(open_source(source, path_key=path_key), settings)
    loader = DataLoader(stream, batch_size=None, num_workers=settings.num_workers)
    total, total_sq, count = 0.0, 0.0, 0
    report = DataReport()
    for batch in tqdm(loader, total=len(stream), desc="fbank stats", unit="batch", disable=not progress):
        report.add_batch(batch["meta"])
        if batch["audio"].numel():
            values = batch["audio"][:, 0][batch["audio_mask"]].double()  # (real frames, mels)
            total += float(values.sum())
            total_sq += float(values.square().sum())
            count += values.numel()
    if count == 0:
        raise NoUsableClipsError(source.path, report.files_seen, report.counts_by_reason(), source.extensions,
                                 key=path_key, extensions_key="data.source.extensions")
    mean = total / count
    std = math.sqrt(max(total_sq / count - mean * mean, 0.0))
    return {"audio_mean": mean, "audio_std": std, "clips": report.clips,
            "fbank_frames": count // pre.num_mel_bins, "report": report.to_dict()}
