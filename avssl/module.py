"""The pretraining LightningModule: a backbone, a weighted list of objectives and an optimizer.

It owns no data, probes or model zoo (those are the datamodule's and the callbacks'): each step
runs every encoder pass that some objective reads (the recipe's ``passes``: each with its own
masking) once, lets every objective read the passes by name, and sums the weighted loss terms. Each term is logged as ``train/<objective>/<term>``, the total as ``train/loss``; each
objective's health scalars and chance values as ``health/<objective>/<name>``. The step also returns
``{"chance": {"<objective>/<term>": (value, chance)}}`` for `avssl.callbacks.ChanceMonitor`. A term
or total that is NaN or infinite stops the run before backward (`avssl.divergence`).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from avssl.backbones.registry import build_encoder
from avssl.config import PretrainConfig, from_dict
from avssl.divergence import TrainingDiverged, non_finite_terms
from avssl.init_from import load_init_from
from avssl.objectives.contract import build_objectives
from avssl.optim import build_optimizer, build_scheduler


class AVPretrainModule(pl.LightningModule):
    """Self-supervised audio-visual pretraining of an encoder from `build_encoder` (`backbone.kind`).

    The backbone is final before any objective is built: it is built, then loaded from
    ``backbone.init_from`` when set (`avssl.init_from`), then handed to the objectives.

    Args:
        config: the run's configuration, or its plain-dict form (as stored in checkpoints).

    Raises:
        ConfigError: ``backbone.init_from`` cannot be loaded or does not fit the recipe's architecture;
            or an objective cannot be built or does not fit (`avssl.objectives.contract.build_objectives`).
    """

    def __init__(self, config: PretrainConfig | dict[str, Any]):
        super().__init__()
        if isinstance(config, dict):
            config = from_dict(config)
        self.config = config
        # Stored as plain data so checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters({"config": asdict(config)})
        self.backbone = build_encoder(config.backbone.resolve(config.data.preprocessing))
        if config.backbone.init_from is not None:  # before any objective sees the backbone (a teacher copies it)
            load_init_from(self.backbone, config.backbone.init_from)
        objectives, self.weights = build_objectives(config, self.backbone)
        self.objectives = nn.ModuleDict(objectives)
        # each pass some objective reads runs once per step (avssl.objectives.Objective)
        self.passes_read = {p for objective in self.objectives.values() for p in objective.pass_names}
        for part in self._frozen():
            part.requires_grad_(False)
        self.train()  # the frozen parts in eval mode from the start

    def _frozen(self) -> list[nn.Module]:
        return [part for objective in self.objectives.values() for part in objective.frozen_modules()]

    def train(self, mode: bool = True) -> AVPretrainModule:
        """As `nn.Module.train`, but the objectives' frozen parts stay in eval mode."""
        super().train(mode)
        for part in self._frozen():
            part.eval()
        return self

    def configure_callbacks(self) -> list[pl.Callback]:
        """The objectives' own callbacks (`Objective.callbacks`); Lightning adds them to the Trainer's."""
        return [callback for objective in self.objectives.values() for callback in objective.callbacks()]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any] | Tensor | None:
        batch_size = batch["video"].shape[0]
        if self._smallest_batch(batch_size) < 2:
            # Too few usable clips (the failures are in the data report): nothing to learn. Under DDP
            # every rank must still run backward, or the others would wait for it forever.
            if self.trainer.world_size > 1:
                return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
            return None
        passes = {
            name: self.backbone.forward_features(batch["audio"], batch["video"], spec.audio, spec.video)
            for name, spec in self.config.passes.items() if name in self.passes_read
        }
        total = torch.zeros((), device=self.device)
        at_chance: dict[str, tuple[float, float]] = {}
        terms: dict[str, Tensor] = {}
        for name, objective in self.objectives.items():
            result = objective(passes, batch)
            for term, value in result.losses.items():
                self.log(f"train/{name}/{term}", value, batch_size=batch_size)
                terms[f"{name}/{term}"] = value
            for metric, value in result.health.items():
                self.log(f"health/{name}/{metric}", value, batch_size=batch_size)
            for term, chance in result.chance.items():
                self.log(f"health/{name}/{term}_chance", chance, batch_size=batch_size)
                at_chance[f"{name}/{term}"] = (result.losses[term].item(), chance)
            total = total + self.weights[name] * sum(result.losses.values())
        self.log("train/loss", total, prog_bar=True, batch_size=batch_size)
        self._stop_if_not_finite(terms | {"loss": total})
        return {"loss": total, "chance": at_chance}

    def _stop_if_not_finite(self, terms: dict[str, Tensor]) -> None:
        """Raises `TrainingDiverged` before backward when a loss term is NaN or infinite (on any rank)."""
        bad = non_finite_terms(terms)
        all_finite = not bad
        if self.trainer.world_size > 1:  # every rank stops at the same step, or the others would wait forever
            all_finite = self.trainer.strategy.reduce_boolean_decision(all_finite, all=True)
        if all_finite:
            return
        step = self.trainer.global_step + 1
        if not bad:
            raise TrainingDiverged("a loss term is not finite on another rank", step)
        label = {name: "the total loss" if name == "loss" else name for name in bad}
        first = label[bad[0]] if bad[0] == "loss" else f"the loss term {bad[0]}"
        others = f" (also not finite: {', '.join(label[name] for name in bad[1:])})" if len(bad) > 1 else ""
        raise TrainingDiverged(f"{first} is {terms[bad[0]].item()}{others}", step)

    def _smallest_batch(self, batch_size: int) -> int:
        """This batch's size, or under DDP the smallest of all ranks' (every rank then agrees)."""
        if self.trainer.world_size == 1:
            return batch_size
        return int(self.all_gather(torch.tensor(batch_size, device=self.device)).min())

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build_optimizer([p for p in self.parameters() if p.requires_grad], self.config.optim)
        # optimizer steps, after trainer.limit_train_batches / fast_dev_run and gradient accumulation
        total_steps = int(self.trainer.estimated_stepping_batches)  # also loads the train dataloader
        # Lightning also steps on an epoch's last, incomplete accumulation window
        steps_per_epoch = max(1, math.ceil(self.trainer.num_training_batches / self.trainer.accumulate_grad_batches))
        scheduler = build_scheduler(optimizer, self.config.optim, steps_per_epoch, total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
