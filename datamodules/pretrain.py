"""The unlabelled data module for pretraining: clips streamed from a folder, manifest or shards."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from datamodules.audio_features import log_mel_fbank_batch
from datamodules.augmentation import Augmentation, mask_fbank
from datamodules.errors import NoUsableClipsError, StrictDataError
from datamodules.report import DataReport
from datamodules.sources import Source, SourceConfig, open_source
from datamodules.stream import ClipStream, StreamSettings
from datamodules.workers import ignore_stop_signals

log = logging.getLogger(__name__)


class AVPretrainDataModule(pl.LightningDataModule):
    """Clips streamed from a data source, for self-supervised pretraining.

    Nothing is scanned up front: each epoch the videos are dealt to the (rank, worker) pairs and
    decoded as they are read (see `ClipStream`). Bad files are skipped with their reason, or with
    ``strict`` stop the run; batches follow the contract of `collate_clips`, and
    ``batch["meta"]`` carries what `DataReport.add_batch` needs. The data position (epoch and
    batches trained on) is saved in Lightning checkpoints, so a run resumed mid-epoch does not
    read the clips it already trained on again.

    Args:
        source: where the videos are (``data.source``, or ``data.root`` for a folder).
        settings: clip cutting, shuffling and workers; ``rank`` and ``world_size`` are taken from
            the Trainer when one is attached.
        strict: the loader raises `StrictDataError` for the first bad file (in the main process,
            before the batch that holds it is trained on) instead of skipping it.
        path_key: the key that set ``source.path`` (``data.root`` for the folder shorthand),
            named in errors.

    Attributes:
        report: filled by the training loop (`DataReportCallback`).

    Raises:
        DataPathError, DataSourceError: from `setup`, for a missing or malformed source.
        NoUsableClipsError: from `setup`, when the source has no video at all.
    """

    def __init__(self, source: SourceConfig, settings: StreamSettings, strict: bool = False,
                 path_key: str = "data.source.path") -> None:
        super().__init__()
        self.source_config = source
        self.path_key = path_key
        self.settings = settings
        self.strict = strict
        self.report = DataReport()
        self.source: Source | None = None
        self._resume: dict[str, int] | None = None
        self._epochs_started = 0

    def setup(self, stage: str | None = None) -> None:
        """Opens the source (lists files, reads the manifest, counts shard samples) once."""
        if self.source is not None:
            return
        self.source = open_source(self.source_config, path_key=self.path_key)
        log.info("pretraining data: %s", self.source.description)
        if sum(self.source.group_sizes()) == 0:
            raise NoUsableClipsError(self.source_config.path, 0, {}, self.source_config.extensions,
                                     key=self.path_key, extensions_key="data.source.extensions")

    def train_dataloader(self) -> DataLoader:
        self.setup()
        settings = self._on_ranks(self.settings)
        return _PositionedLoader(ClipStream(self.source, settings), settings.num_workers, self.strict, self.next_position)

    @property
    def num_videos(self) -> int:
        """Videos in the source, bad ones included; their ``meta["video_id"]`` are 0 to ``num_videos - 1``."""
        self.setup()
        return sum(self.source.group_sizes())

    def whole_set_dataloader(self) -> DataLoader:
        """One plain clip of every video of the source, for objectives that need the whole set between
        rounds (XDC's k-means): `avssl.objectives.whole_set.embed_whole_set` reads it.

        The same stream as training (decoding in isolated processes, ``data.policies``,
        ``data.strict``, bad files in ``meta["skipped"]``, split across ranks and workers with every
        video read by exactly one of them), but one centred clip per video (``uniform`` sampling),
        one view, in sync, centre crop, no augmentation, and the same order in every call.
        """
        self.setup()
        pre = replace(self.settings.preprocessing, crop="center")
        settings = self._on_ranks(replace(self.settings, preprocessing=pre, clips_per_video=1, views_per_video=1,
                                          av_offset_s=(0.0, 0.0), sampling="uniform", augment=Augmentation()))
        return _PositionedLoader(ClipStream(self.source, settings), settings.num_workers, self.strict, lambda: (0, 0))

    def _on_ranks(self, settings: StreamSettings) -> StreamSettings:
        """`settings` for this process: rank and world size from the Trainer, when one is attached."""
        trainer = self.trainer
        return replace(settings, rank=trainer.global_rank if trainer else 0, world_size=trainer.world_size if trainer else 1)

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """With ``audio_features_on=device``, computes the fbank where the batch now is (the GPU).

        The fbank masks of ``data.augment.audio`` follow, each row's drawn from the seed its worker
        sent (``fbank_mask_seed``), so they are the masks the worker would have drawn.
        """
        if "waveform" in batch:
            pre = self.settings.preprocessing
            audio = log_mel_fbank_batch(batch.pop("waveform"), pre)  # (B, 1, F, M)
            if "fbank_mask_seed" in batch:
                seeds = batch.pop("fbank_mask_seed").tolist()
                audio = torch.stack([mask_fbank(row, pre, self.settings.augment.audio, seed)
                                     for row, seed in zip(audio, seeds)])  # (B, 1, F, M)
            batch["audio"] = audio
        return batch

    def next_position(self) -> tuple[int, int]:
        """The epoch the loader starts now, and the batches of it already trained on (resume).

        A restored position is used by the first epoch the loader starts after the restore.
        Lightning may start it before it restores its own epoch counter (when the module asks for
        ``trainer.estimated_stepping_batches``), so the position carries its epoch.
        """
        if self._resume is not None:
            epoch, batches_done = self._resume["epoch"], self._resume["batches_done"]
            self._resume = None
            log.info("resuming epoch %d after the %d batches already trained on", epoch, batches_done)
            return epoch, batches_done
        epoch = self.trainer.current_epoch if self.trainer else self._epochs_started
        self._epochs_started += 1
        return epoch, 0

    def state_dict(self) -> dict[str, Any]:
        """Saved in Lightning checkpoints: the data position and the data report so far.

        The position is the current epoch and the batches of it trained on, counted by the
        Trainer (the loader reads ahead of training); a finished epoch is saved as the start of
        the next one. It also records the settings the epoch's plan was made from, and the
        source's fingerprint (`Source.fingerprint`: its files' names and sizes).
        """
        state: dict[str, Any] = {"report": self.report.to_state()}
        if self.trainer is not None:
            epoch = self.trainer.current_epoch
            done = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
            if done >= self.trainer.num_training_batches:
                epoch, done = epoch + 1, 0
            state["position"] = {"epoch": epoch, "batches_done": done, "plan": self.plan_settings(self.trainer.world_size)}
            if self.source is not None:
                state["position"]["source"] = self.source.fingerprint()
        return state

    def plan_settings(self, world_size: int) -> dict[str, Any]:
        """The settings an epoch's plan depends on, by config key (see datamodules/epoch_plan.py).

        ``data.augment`` is not one of them: augmentation changes what a clip looks like, not
        which clips an epoch reads, so a run may resume mid-epoch with it changed.
        """
        s = self.settings
        return {
            "data.source.path": self.source_config.path,
            "data.batch_size": s.batch_size,
            "data.clips_per_video": s.clips_per_video,
            "data.views_per_video": s.views_per_video,
            "data.av_offset_s": list(s.av_offset_s),
            "data.clip_sampling": s.sampling,
            "data.num_workers": s.readers,  # 0 and 1 both mean one reader per rank
            "data.preprocessing.clip_seconds": s.preprocessing.clip_seconds,
            "run.seed": s.seed,
            "number of processes (trainer.devices x trainer.num_nodes)": world_size,
        }

    def resume_conflicts(self, state: dict[str, Any], world_size: int) -> list[str]:
        """Why the saved `state` cannot be resumed with these settings (empty: it can).

        Only a position inside an epoch binds the settings and the source's files: the batches
        already trained on are counted in that epoch's plan, and another plan would train some
        clips twice and skip others. A position at an epoch boundary can be resumed with any
        settings; a changed source is logged, and the next epoch is planned from it. Opens the
        source (`setup`) to compare it with the checkpoint's.
        """
        position = state.get("position") or {}
        changed = self._source_change(position.get("source"))
        if not position.get("batches_done"):
            if changed:
                log.info("%s; the next epoch is planned from it as it is now", changed)
            return []
        saved, now = position.get("plan", {}), self.plan_settings(world_size)
        conflicts = [f"{key} (checkpoint: {saved[key]}, now: {now[key]})"
                     for key in now if key in saved and saved[key] != now[key]]
        return conflicts + ([changed] if changed else [])

    def _source_change(self, saved: dict[str, Any] | None) -> str | None:
        """How the source differs from the checkpoint's fingerprint (None: the same, or not recorded)."""
        if not saved:
            return None
        self.setup()
        now = self.source.fingerprint()
        if now == saved:
            return None
        counts = (f"{now['videos']} videos now, {saved['videos']} then" if now["videos"] != saved["videos"] else
                  f"as many videos, {now['videos']}, but other names or sizes")
        return f"the files of {self.path_key}={self.source_config.path} changed since the checkpoint ({counts})"

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.report.load_state(state_dict["report"])
        self._resume = state_dict.get("position")


class _PositionedLoader(DataLoader):
    """A DataLoader that tells its `ClipStream` which epoch (and resume point) it is about to read.

    Workers are started anew for every epoch (not persistent), so each starts from the stream's
    current position, which ``position()`` gives as ``(epoch, batches_done)`` at each iteration.
    With ``strict``, the first failure in a batch raises `StrictDataError` here, in the main process.
    """

    def __init__(self, stream: ClipStream, num_workers: int, strict: bool,
                 position: Callable[[], tuple[int, int]]) -> None:
        super().__init__(stream, batch_size=None, num_workers=num_workers,
                         prefetch_factor=2 if num_workers else None, worker_init_fn=ignore_stop_signals)
        self._strict = strict
        self._position = position

    def __iter__(self) -> Iterator[Any]:
        self.dataset.set_position(*self._position())
        for batch in super().__iter__():
            if self._strict and batch["meta"]["skipped"]:
                first = batch["meta"]["skipped"][0]
                raise StrictDataError(first["reason"], first["detail"], first["path"])
            yield batch
