"""Keeps the run's ``data_report.json`` up to date and logs what was skipped.

Every batch's ``meta`` says which videos were first read in it, how many clips it holds and which
files failed (with their reason); they are counted here. Under DDP each rank counts its own
batches and rank 0 writes the ranks' reports combined. The report is written after every epoch,
at the end and on an exception, so no accounting is lost; the summary, with skips grouped by
reason, is logged after every epoch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch.distributed as dist

from datamodules.errors import NoUsableClipsError
from datamodules.report import DataReport

log = logging.getLogger(__name__)


class DataReportCallback(pl.Callback):
    """Counts each batch into `report` and writes it (all ranks combined) to `path`.

    Args:
        report: the pretraining data module's report.
        path: where ``data_report.json`` goes.
        source: how the source is named in errors.
        key: the config key that set the source (``data.root`` or ``data.source.path``), named in
            errors.
    """

    def __init__(self, report: DataReport, path: str | Path, source: str = "the data source",
                 key: str = "data.source.path") -> None:
        self.report = report
        self.path = Path(path)
        self.source = source
        self.key = key
        self._combined: DataReport | None = None  # the last report written

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.report.add_batch(batch["meta"])
        for item in batch["meta"]["skipped"]:
            log.debug("skipped %s (%s): %s", item["path"], item["reason"], item["detail"])

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        combined = self._write(trainer)
        if combined.clips == 0:
            raise NoUsableClipsError(self.source, combined.files_seen, combined.counts_by_reason(), [],
                                     key=self.key, extensions_key="data.source.extensions")
        if trainer.is_global_zero:
            log.info("data after epoch %d/%d: %s (details in %s)", trainer.current_epoch + 1, trainer.max_epochs,
                     combined.summary(), self.path)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not (dist.is_available() and dist.is_initialized()):  # peers may be gone: no collective here
            self._write(trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Other callbacks' on_train_end (the final linear probe) run after ours and may add to a
        # section of the report (files of the labeled set that failed to decode): write it again.
        if trainer.is_global_zero and self._combined is not None:
            self._combined.write_json(self.path)

    def _write(self, trainer: pl.Trainer) -> DataReport:
        combined = self.report
        if dist.is_available() and dist.is_initialized() and trainer.world_size > 1:
            states: list[Any] = [None] * trainer.world_size
            dist.all_gather_object(states, self.report.to_state())
            combined = DataReport(self.report.location)
            combined.sections = self.report.sections  # rank-local data (the probe's): ours
            for state in states:
                combined.absorb(state)
        if trainer.is_global_zero:
            combined.write_json(self.path)
        self._combined = combined
        return combined
