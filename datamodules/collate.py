"""Batching of clips, including clips that failed to load.

A dataset item is either a sample ``{"video", "audio", "meta": {"path", "start_s", "video_id", "view",
"av_offset_s"}, "label"?}`` or a failure ``{"skipped": {"path", "reason", "detail"}}``. Failures are never replaced by zero
tensors: they leave the batch and travel in ``meta["skipped"]`` so the report can record them.
"""

from __future__ import annotations

from typing import Any

import torch


def collate_clips(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stacks the samples of a batch and collects its failures.

    Args:
        items: samples and failures, as `ClipDataset` and `ClipStream` make them. A streamed
            item may carry ``"video_seen": name`` (one item per video) so the report counts files.

    Returns:
        ``{"video": float [B, 3, T, S, S], "audio": float [B, 1, F, M] (or "waveform": float
        [B, samples] when the features are computed on the device, with "fbank_mask_seed": long
        [B] when the fbank masks of ``data.augment`` are still to apply there),
        "audio_mask": bool [B, F] (streamed clips: which fbank frames come from real audio, not
        padding),
        "meta": {"path": list[str], "start_s": float32 [B], "video_id": long [B], "view": long [B],
        "av_offset_s": float32 [B], "skipped": list[dict], "videos_seen": list[str]},
        "label": long [B]}`` where B counts the samples only, and ``label`` is present when the
        samples have labels. When every item failed, B = 0 and ``video`` and ``audio`` are
        ``torch.empty(0)`` (no known shape) and there is no ``label``.

        ``video_id`` is the clip's stable identity: the video's position in its source (streamed:
        `Source.video_id`; `ClipDataset`: the file's position among its entries), the same in
        every epoch and after a resume. ``view`` numbers the views of a clip and ``av_offset_s``
        is where its audio window starts after its video window (``start_s``), in seconds
        (`datamodules.views`); the views of a streamed clip are consecutive rows, ``view`` 0 first,
        and are all present or all left out.
    """
    samples = [item for item in items if "skipped" not in item]
    skipped = [item["skipped"] for item in items if "skipped" in item]
    meta = {
        "path": [s["meta"]["path"] for s in samples],
        "start_s": torch.tensor([s["meta"]["start_s"] for s in samples], dtype=torch.float32),  # (B,)
        "video_id": torch.tensor([s["meta"]["video_id"] for s in samples], dtype=torch.long),  # (B,)
        "view": torch.tensor([s["meta"]["view"] for s in samples], dtype=torch.long),  # (B,)
        "av_offset_s": torch.tensor([s["meta"]["av_offset_s"] for s in samples], dtype=torch.float32),  # (B,)
        "skipped": skipped,
        "videos_seen": [item["video_seen"] for item in items if "video_seen" in item],
    }
    if not samples:
        return {"video": torch.empty(0), "audio": torch.empty(0), "meta": meta}
    batch: dict[str, Any] = {
        # "video" (B, 3, T, S, S); "audio" (B, 1, F, M) or, with features on the device, "waveform" (B, N);
        # "audio_mask" (B, F); "fbank_mask_seed" (B,)
        key: torch.stack([s[key] for s in samples])
        for key in ("video", "audio", "waveform", "audio_mask", "fbank_mask_seed") if key in samples[0]
    }
    batch["meta"] = meta
    labelled = ["label" in s for s in samples]
    assert all(labelled) or not any(labelled), "a batch mixes labelled and unlabelled samples"
    if all(labelled):
        batch["label"] = torch.tensor([s["label"] for s in samples], dtype=torch.long)  # (B,)
    return batch
