"""The unlabelled data module for pretraining: clips streamed from a folder, manifest or shards."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from datamodules.audio_features import log_mel_fbank_batch
from datamodules.errors import NoUsableClipsError, StrictDataError
from datamodules.report import DataReport
from datamodules.sources import Source, SourceConfig, open_source
from datamodules.stream import ClipStream, StreamSettings

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

    Attributes:
        report: filled by the training loop (`DataReportCallback`).

    Raises:
        DataPathError, DataSourceError: from `setup`, for a missing or malformed source.
        NoUsableClipsError: from `setup`, when the source has no video at all.
    """

    def __init__(self, source: SourceConfig, settings: StreamSettings, strict: bool = False) -> None:
        super().__init__()
        self.source_config = source
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
        self.source = open_source(self.source_config)
        log.info("pretraining data: %s", self.source.description)
        if sum(self.source.group_sizes()) == 0:
            raise NoUsableClipsError(self.source_config.path, 0, {}, self.source_config.extensions)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        trainer = self.trainer
        settings = replace(self.settings, rank=trainer.global_rank if trainer else 0,
                           world_size=trainer.world_size if trainer else 1)
        return _PositionedLoader(ClipStream(self.source, settings), settings.num_workers, self)

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """With ``audio_features_on=device``, computes the fbank where the batch now is (the GPU)."""
        if "waveform" in batch:
            batch["audio"] = log_mel_fbank_batch(batch.pop("waveform"), self.settings.preprocessing)
        return batch

    def next_position(self) -> tuple[int, int]:
        """The epoch the loader starts now, and the batches of it already trained on (resume)."""
        epoch = self.trainer.current_epoch if self.trainer else self._epochs_started
        self._epochs_started += 1
        batches_done = 0
        if self._resume is not None and self._resume["epoch"] == epoch:
            batches_done = self._resume["batches_done"]
            log.info("resuming epoch %d after the %d batches already trained on", epoch, batches_done)
        self._resume = None
        return epoch, batches_done

    def position(self) -> dict[str, int]:
        """The data position: the current epoch and the batches of it trained on so far.

        Counted by the Trainer, not by the loader, which reads ahead of training.
        """
        if self.trainer is None:
            return {}
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current
        return {"epoch": self.trainer.current_epoch, "batches_done": progress.processed}

    def resume_from(self, position: dict[str, int]) -> None:
        """Makes the next epoch the loader starts skip the batches `position` says were trained on."""
        self._resume = dict(position) if position else None

    def state_dict(self) -> dict[str, Any]:
        """The data report so far, saved in Lightning checkpoints (the position is the loader's)."""
        return {"report": self.report.to_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "report" in state_dict:
            self.report.load_state(state_dict["report"])


class _PositionedLoader(DataLoader):
    """A DataLoader that tells its `ClipStream` which epoch (and resume point) it is about to read.

    Workers are started anew for every epoch (not persistent), so each starts from the stream's
    current position. Its state (`state_dict`) is the data position, which Lightning saves in
    checkpoints and gives back on resume.
    """

    def __init__(self, stream: ClipStream, num_workers: int, datamodule: AVPretrainDataModule) -> None:
        super().__init__(stream, batch_size=None, num_workers=num_workers,
                         prefetch_factor=2 if num_workers else None)
        self._datamodule = datamodule

    def __iter__(self) -> Iterator[Any]:
        self.dataset.set_position(*self._datamodule.next_position())
        for batch in super().__iter__():
            if self._datamodule.strict and batch["meta"]["skipped"]:
                first = batch["meta"]["skipped"][0]
                raise StrictDataError(first["reason"], first["detail"], first["path"])
            yield batch

    def state_dict(self) -> dict[str, int]:
        return self._datamodule.position()

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._datamodule.resume_from(state_dict)
