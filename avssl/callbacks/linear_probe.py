"""Linear-probe callback: how good are the frozen embeddings, during and after pretraining.

Runs the protocol of `avssl.evaluation.linear_probe` on a labeled datamodule when training ends
(and every ``every_n_epochs`` epochs if set). With ``random_init_baseline`` it first probes a
freshly initialised backbone of the same architecture, so the figures show what pretraining
bought. Each probe logs what it probes when it starts and shows its progress (a bar on a
terminal, log lines otherwise, none with ``trainer.enable_progress_bar=false``). Top-1 goes to
the logger (``probe/<pretrained|random_init>/<audio|video|joint>_top1``) and, with the clip
counts and the protocol, to ``path`` as JSON.

Degenerate labeled data (`datamodules.split_check`) is refused by the datamodule's ``setup``,
which pretraining calls before training starts. If clips that fail to decode make a split
degenerate later, that probe is logged as an error and left out, and training goes on: the run
keeps its checkpoint and export.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from avssl.backbones.encoder import AudioVisualEncoder
from avssl.backbones.registry import build_seeded_encoder
from avssl.evaluation.linear_probe import FEATURE_SETS, linear_probe
from datamodules.errors import DataSourceError
from datamodules.labeled import LabeledClipDataModule

log = logging.getLogger(__name__)


class LinearProbeCallback(pl.Callback):
    """Probes ``pl_module.backbone`` on `datamodule`.

    Args:
        datamodule: the labeled clips (train and test splits).
        path: JSON file the results are written to.
        every_n_epochs: also probe after every n-th epoch (0: only at the end).
        random_init_baseline: probe a freshly initialised copy of the architecture first.
        seed: seed of the baseline's initialisation and of the probe's hold-out split.
    """

    def __init__(self, datamodule: LabeledClipDataModule, path: str | Path, every_n_epochs: int = 0, random_init_baseline: bool = True, seed: int = 0):
        self.datamodule = datamodule
        self.path = Path(path)
        self.every_n_epochs = every_n_epochs
        self.random_init_baseline = random_init_baseline
        self.seed = seed
        self.results: dict[str, Any] = {}

    def _probe(self, trainer: pl.Trainer, name: str, encoder: AudioVisualEncoder, device: torch.device) -> None:
        try:
            result = linear_probe(encoder, self.datamodule, device, self.seed, name,
                                  show_progress=trainer.progress_bar_callback is not None)
        except DataSourceError as err:
            log.error("linear probe (%s) not run: %s", name, err)
            return
        self._record(trainer, name, result)

    def _record(self, trainer: pl.Trainer, name: str, result: dict[str, Any]) -> None:
        self.results[name] = result
        metrics = {f"probe/{name}/{k}_top1": result[k]["top1"] for k in FEATURE_SETS}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        log.info("linear probe (%s): %s", name, ", ".join(f"{k} {result[k]['top1']:.1%}" for k in FEATURE_SETS))
        self._write()

    def _write(self) -> None:
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.results, indent=2))
        os.replace(tmp, self.path)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self.datamodule.setup("fit")
        if self.random_init_baseline:
            fresh = build_seeded_encoder(pl_module.backbone.spec, self.seed).to(pl_module.device)
            self._probe(trainer, "random_init", fresh, pl_module.device)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if trainer.is_global_zero and self.every_n_epochs and epoch % self.every_n_epochs == 0 and epoch < trainer.max_epochs:
            self._probe(trainer, f"epoch_{epoch}", pl_module.backbone, pl_module.device)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self._probe(trainer, "pretrained", pl_module.backbone, pl_module.device)
