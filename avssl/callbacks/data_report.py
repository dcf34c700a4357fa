"""Keeps the run's ``data_report.json`` up to date.

Files rejected when the source is scanned are already in the report; clips that fail later, inside
a DataLoader worker, travel back in ``batch["meta"]["skipped"]`` and are merged here. The report is
written after every epoch, at the end and on an exception, so no accounting is lost.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from datamodules.report import DataReport

log = logging.getLogger(__name__)


class DataReportCallback(pl.Callback):
    """Merges per-batch skips into `report` and writes it to `path`."""

    def __init__(self, report: DataReport, path: str | Path):
        self.report = report
        self.path = Path(path)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        skipped = batch["meta"]["skipped"]
        if skipped:
            self.report.merge(skipped)
            for item in skipped:
                log.warning("skipped %s (%s): %s", item["path"], item["reason"], item["detail"])

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer)
        log.info("data: %s (details in %s)", self.report.summary(), self.path)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._write(trainer)

    def _write(self, trainer: pl.Trainer) -> None:
        if trainer.is_global_zero:
            self.report.write_json(self.path)
