"""The run's one checkpoint, ``checkpoints/last.ckpt``: when it is saved and how it is written.

It is saved at the end of every epoch, every ``run.checkpoint_every_n_steps`` steps when set, at
the last step when ``trainer.max_steps`` ends training inside an epoch, and on Ctrl-C or SIGTERM,
so it always holds the newest state and the data position to resume from.

A stop signal during training (`StopSignals`) does not raise at whatever line is running: at the
end of the current step the checkpoint is saved and training stops there, from a well-defined
state (under DDP every rank stops at the same step). A second signal stops at once, saving what it
can. Every save goes through `AtomicCheckpointIO`: a kill at any moment leaves the previous
``last.ckpt`` intact. A state whose parameters are not finite is never saved (`TrainingDiverged`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Checkpoint
from pytorch_lightning.plugins import TorchCheckpointIO

from avssl.atomic_files import atomic_write
from avssl.callbacks.stop_signals import StopSignals
from avssl.divergence import TrainingDiverged, non_finite_parameter

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, writing next to the target and renaming atomically.

    Lightning's own writer stages the file in ``$TMPDIR``: on another filesystem the final move is
    a copy, and a kill during it leaves a truncated checkpoint and an orphaned temporary file.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as partial:
            torch.save(checkpoint, partial)


class LastCheckpoint(Checkpoint):
    """Keeps ``last.ckpt`` in `directory` current (see the module docstring for when).

    As a `Checkpoint`, Lightning runs its hooks after the other callbacks', so a save holds what
    they counted for the same batch (e.g. the data report).

    Args:
        directory: the run's ``checkpoints/`` folder.
        stop_signals: the run's `StopSignals`: a signal it received ends training at the end of a step.
        every_n_steps: also save every N optimizer steps (0: not between epoch ends).

    Attributes:
        saved_step: the global step the file holds (None: nothing saved yet by this run).
        interrupted: True once a stop signal (`StopSignals`) stopped the run (and, during
            training, the checkpoint was saved).
    """

    def __init__(self, directory: str | Path, stop_signals: StopSignals, every_n_steps: int = 0) -> None:
        self.path = Path(directory) / "last.ckpt"
        self.every_n_steps = every_n_steps
        self.stop_signals = stop_signals
        self.saved_step: int | None = None
        self.interrupted = False
        self._training = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.saved_step = trainer.global_step if self.path.is_file() else None  # resumed: the file holds this step
        self._training = True

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        stop = self.stop_signals.received is not None
        if trainer.world_size > 1:  # every rank stops at the same step, or the others would wait forever
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop or (self.every_n_steps and step % self.every_n_steps == 0) or (trainer.max_steps > 0 and step >= trainer.max_steps):
            self._save(trainer)
        if stop:
            raise KeyboardInterrupt  # Lightning's interrupt handling, from the end of a step

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # An epoch cut short (max_steps) was saved at its last batch: saved from here, Lightning would
        # count it as finished and resume at the next epoch while the data resumes inside this one.
        if trainer.fit_loop.epoch_loop.batch_progress.current.processed >= trainer.num_training_batches:
            self._save(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self.interrupted = True
            if self._training:  # before training (e.g. during the random-init probe) there is nothing new to save
                self._save(trainer, after_interrupt=True)

    def _save(self, trainer: pl.Trainer, after_interrupt: bool = False) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking or self.saved_step == trainer.global_step:
            return  # a smoke run saves nothing, as with Lightning's own checkpointing
        bad = non_finite_parameter(trainer.lightning_module)
        if bad is not None:  # the previous, finite last.ckpt stays
            if after_interrupt:
                log.error("%s not saved: the parameter %s is not finite at step %d", self.path, bad,
                          trainer.global_step)
                return
            raise TrainingDiverged(f"the parameter {bad} holds NaN or infinite values after the update",
                                   trainer.global_step)
        if after_interrupt and trainer.world_size > 1:
            # Other ranks may already be gone: no barrier (trainer.save_checkpoint has one), rank 0 writes.
            if trainer.is_global_zero:
                checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
                trainer.strategy.checkpoint_io.save_checkpoint(checkpoint, self.path)
        else:
            trainer.save_checkpoint(self.path, weights_only=False)
        self.saved_step = trainer.global_step
        log.debug("saved %s at step %d", self.path, trainer.global_step)
