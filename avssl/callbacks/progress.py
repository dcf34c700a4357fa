"""Training progress: a bar on a terminal, log lines in a log file, both counting epochs from 1.

On a terminal `EpochProgressBar` is Lightning's TQDM bar, described as the log lines describe
the epoch (``epoch 3/20``; Lightning's own bar says ``Epoch 2``). In a file each redraw of a bar
stays, thousands per epoch; `LineProgress` logs one readable line instead, every ``interval_s``
seconds and at the end of each epoch::

    epoch 3/20  batch 120/400  step 920  train/loss=1.230  4.1 batches/s
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ProgressBar, TQDMProgressBar

log = logging.getLogger("avssl.progress")


def epoch_label(trainer: pl.Trainer) -> str:
    """The current epoch as users read it, counted from 1: ``epoch 3/20`` (``epoch 3`` without an epoch limit)."""
    epochs = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
    return f"epoch {trainer.current_epoch + 1}{epochs}"


class EpochProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, with the epoch counted from 1 as in the log lines (`epoch_label`).

    One bar serves every epoch (Lightning's default ``leave=False``): it is reset at an epoch's
    start, as Lightning's own does, but described before it is drawn again (Lightning's would
    first draw ``Epoch 0``).
    """

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        total = self.total_train_batches
        self.train_progress_bar.set_description(epoch_label(trainer), refresh=False)
        self.train_progress_bar.reset(total=None if total == math.inf else total)
        self.train_progress_bar.initial = 0


class LineProgress(ProgressBar):
    """A Lightning progress bar that logs a line every ``interval_s`` seconds and once per epoch.

    Args:
        interval_s: seconds between two lines within an epoch.

    Raises:
        ValueError: for ``interval_s`` <= 0.
    """

    def __init__(self, interval_s: float = 30.0) -> None:
        super().__init__()
        if interval_s <= 0:
            raise ValueError(f"interval_s={interval_s}: must be > 0")
        self.interval_s = interval_s
        self._enabled = True
        self._batches = 0  # batches done in the current epoch
        self._since_batches = 0  # ... when the last line was logged
        self._since_time = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._batches = self._since_batches = 0
        self._since_time = time.monotonic()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        self._batches = batch_idx + 1
        if self._enabled and time.monotonic() - self._since_time >= self.interval_s:
            self._log_line(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._enabled:
            self._log_line(trainer, pl_module)

    def _log_line(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        now = time.monotonic()
        rate = (self._batches - self._since_batches) / max(now - self._since_time, 1e-9)
        self._since_batches, self._since_time = self._batches, now
        total = self.total_train_batches
        batches = f"/{total}" if total != math.inf else ""
        metrics = "  ".join(f"{name}={_format(value)}" for name, value in self.get_metrics(trainer, pl_module).items()
                            if name != "v_num")
        log.info("%s  batch %d%s  step %d  %s  %.2f batches/s", epoch_label(trainer), self._batches, batches,
                 trainer.global_step, metrics, rate)


def _format(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def progress_callbacks(enabled: bool) -> list[pl.Callback]:
    """When progress is enabled, `EpochProgressBar` if stdout is a terminal, else `LineProgress`; none when disabled."""
    if not enabled:
        return []
    return [EpochProgressBar()] if sys.stdout.isatty() else [LineProgress()]
