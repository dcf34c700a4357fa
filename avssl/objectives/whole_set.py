"""One embedding pass over the whole unlabeled set, for objectives that work in rounds.

XDC (Alwassel et al., "Self-Supervised Learning by Cross-Modal Audio-Video Clustering", NeurIPS
2020, arXiv:1911.12667) clusters the features of every training video at the start of each round
and trains the other modality on the cluster labels. Such an objective needs the whole set, not
the batch: from one of its callbacks (`Objective.callbacks`), typically in
``on_train_epoch_start``, it calls `embed_whole_set`, which reads one plain clip of every video
through the pretraining stream (`AVPretrainDataModule.whole_set_dataloader`: the same decoding,
bad-file policies, isolation and rank/worker split as training) and returns every rank's
embeddings, keyed by ``meta["video_id"]``, on every rank.

A video the pass skipped (a bad file) has no row: the objective must leave it out (no pseudo-label,
no loss for its clips). Its skips are logged and written to ``data_report.json`` under ``"whole_set"``.

Shape letters: B clips of a batch, N videos embedded over all ranks, n on this rank.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch import Tensor

from datamodules.pretrain import AVPretrainDataModule
from datamodules.report import DataReport

log = logging.getLogger(__name__)

REPORT_SECTION = "whole_set"  # its key in data_report.json


@dataclass
class SetEmbeddings:
    """The embeddings of one pass over the unlabeled set, every rank's, sorted by video.

    Attributes:
        video_ids: long ``[N]``, ascending: the ``meta["video_id"]`` of each embedded video.
        embeddings: name -> ``[N, ...]`` (the names `embed` gave); row i is video ``video_ids[i]``.
            On the training device.
        num_videos: the source's videos (ids 0 to ``num_videos - 1``); an id missing from
            `video_ids` was skipped by the pass and must be ignored by the objective.
        report: the pass's account: files read, clips embedded, skipped files with their reasons.
    """

    video_ids: Tensor
    embeddings: dict[str, Tensor]
    num_videos: int
    report: DataReport

    def rows(self, video_ids: Tensor) -> Tensor:
        """The row of each of `video_ids` (long ``[B]``, e.g. a batch's ``meta["video_id"]``) in
        `embeddings`, or -1 for a video the pass has no row for; long ``[B]``."""
        ids = video_ids.to(self.video_ids.device)
        if not len(self.video_ids):
            return torch.full_like(ids, -1)
        pos = torch.searchsorted(self.video_ids, ids).clamp(max=len(self.video_ids) - 1)  # (B,)
        return torch.where(self.video_ids[pos] == ids, pos, -1)


def embed_whole_set(trainer: pl.Trainer, embed: Callable[[dict[str, Any]], dict[str, Tensor]]) -> SetEmbeddings:
    """Embeds one centred clip of every video of the unlabeled set, on every rank's share, and gathers them.

    Runs under ``torch.no_grad`` with the module in eval mode (batch-norm statistics untouched),
    and restores its training mode after. Every rank must call it (it gathers across ranks).

    Args:
        trainer: the running Trainer; its datamodule is the `AVPretrainDataModule` (as in
            `avssl.pretrain`).
        embed: a batch on the training device (``audio`` computed, as for ``training_step``) ->
            named embeddings, each ``[B, ...]``, e.g.
            ``lambda b: {"audio": module.backbone.encode_audio(b["audio"])}``.

    Returns:
        The gathered embeddings (`SetEmbeddings`), the same on every rank; the pass's skips are also
        in ``data_report.json`` under ``"whole_set"``.

    Raises:
        RuntimeError: the Trainer was given dataloaders instead of the pretraining data module.
        ValueError: `embed` gave a tensor whose rows are not the batch's clips.
        StrictDataError: with ``data.strict``, the first bad file.
    """
    datamodule = trainer.datamodule
    if not isinstance(datamodule, AVPretrainDataModule):
        raise RuntimeError("embed_whole_set reads the unlabeled set through the pretraining data module, but the "
                           f"Trainer's datamodule is {type(datamodule).__name__}; fit with "
                           "datamodule=AVPretrainDataModule(...), as avssl.pretrain does.")
    module = trainer.lightning_module
    report = DataReport(f"data_report.json ('{REPORT_SECTION}')")
    ids: list[Tensor] = []
    parts: dict[str, list[Tensor]] = {}
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            for batch in datamodule.whole_set_dataloader():
                report.add_batch(batch["meta"])
                if not batch["meta"]["path"]:
                    continue  # every clip of this batch failed, or padding
                batch = trainer.strategy.batch_to_device(batch)
                clips = len(batch["meta"]["path"])
                for name, value in embed(batch).items():
                    if value.shape[0] != clips:
                        raise ValueError(f"embed gave '{name}' of shape {tuple(value.shape)} for a batch of {clips} "
                                         "clips; it must give one row per clip, [B, ...].")
                    parts.setdefault(name, []).append(value)
                ids.append(batch["meta"]["video_id"])
    finally:
        module.train(was_training)
    device = trainer.strategy.root_device
    video_ids = torch.cat(ids) if ids else torch.empty(0, dtype=torch.long, device=device)  # (n,)
    embeddings = {name: torch.cat(values) for name, values in parts.items()}  # name -> (n, ...)
    video_ids, embeddings, report = gather_set(trainer, video_ids, embeddings, report)
    datamodule.report.sections[REPORT_SECTION] = report
    if trainer.is_global_zero:
        log.info("whole-set pass: %d of %d videos embedded; %s (details in data_report.json under '%s')",
                 len(video_ids), datamodule.num_videos, report.summary(), REPORT_SECTION)
    return SetEmbeddings(video_ids, embeddings, datamodule.num_videos, report)


def gather_set(trainer: pl.Trainer, video_ids: Tensor, embeddings: dict[str, Tensor],
               report: DataReport) -> tuple[Tensor, dict[str, Tensor], DataReport]:
    """Every rank's rows and reports, the same on every rank, rows sorted by video id.

    Ranks hold different numbers of rows (a rank's bad files, padding), so each pads its rows to
    the largest count for the strategy's ``all_gather`` and the padding is cut off after; the row
    counts, embedding shapes and reports go through ``torch.distributed.all_gather_object``.

    Args:
        trainer: gives ``world_size`` and the ``strategy`` whose ``all_gather`` is used.
        video_ids: long ``[n]``, this rank's videos.
        embeddings: name -> ``[n, ...]``, this rank's rows (empty dict when it embedded nothing).
        report: this rank's account of the pass.
    """
    if trainer.world_size > 1:
        shapes = {name: (tuple(value.shape[1:]), value.dtype) for name, value in embeddings.items()}
        infos: list[Any] = [None] * trainer.world_size
        dist.all_gather_object(infos, (len(video_ids), shapes, report.to_state()))
        counts = [count for count, _, _ in infos]
        shapes = next((s for _, s, _ in infos if s), {})  # from a rank that embedded something
        report = DataReport(report.location)
        for _, _, state in infos:
            report.absorb(state)

        def everyones(rows: Tensor) -> Tensor:
            padded = torch.cat([rows, rows.new_zeros((max(counts) - len(rows), *rows.shape[1:]))])  # (max n, ...)
            gathered = trainer.strategy.all_gather(padded)  # (world_size, max n, ...)
            return torch.cat([gathered[rank, :count] for rank, count in enumerate(counts)])  # (N, ...)

        video_ids = everyones(video_ids)
        embeddings = {name: everyones(embeddings.get(name, video_ids.new_empty((0, *shape), dtype=dtype)))
                      for name, (shape, dtype) in shapes.items()}
    order = video_ids.argsort()  # (N,)
    return video_ids[order], {name: value[order] for name, value in embeddings.items()}, report
