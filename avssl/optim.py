"""Optimizer and learning-rate schedule from `OptimConfig`.

Schedules are stepped per optimizer step so that warm-up works for runs of a few epochs too.
Cosine decay with linear warm-up is lightly's `CosineWarmupScheduler`; CAV-MAE's published
schedule is `multistep` (x0.5 every 5 epochs from epoch 10).

A schedule is a function of the step and of the run's configuration, also after a resume: a
checkpoint restores the step, not the schedule's shape. A resumed run whose length changed (e.g. a
longer ``trainer.max_steps``) continues on the cosine laid out over the new length, from the
resumed step. (``optim.*`` itself cannot change on resume: `avssl.resume` refuses it.)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import torch
from lightly.utils.scheduler import CosineWarmupScheduler
from torch import nn

from avssl.config import OptimConfig

log = logging.getLogger(__name__)


def build_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    optimizer_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[cfg.name]
    return optimizer_cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.betas))


class ConfiguredCosineScheduler(CosineWarmupScheduler):
    """lightly's cosine schedule, whose checkpoint restores only the position on the curve.

    `CosineWarmupScheduler` saves its warm-up and total lengths with its state, so a resumed run
    would keep the old curve whatever its configuration says (past its old end, at the final
    learning rate). Here they stay as built from the configuration.
    """

    # what the configuration decides: kept from __init__ when a checkpoint is loaded
    _SHAPE = ("warmup_epochs", "max_epochs", "start_value", "end_value", "period", "warmup_start_value",
              "warmup_end_value", "base_lrs")

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved_length = state_dict.get("max_epochs", self.max_epochs)
        super().load_state_dict({k: v for k, v in state_dict.items() if k not in self._SHAPE})
        # Lightning restores the optimizer (its learning rate) before the scheduler: set it on the curve
        lrs = [base * self.scale_lr(self.last_epoch) for base in self.base_lrs]
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        if saved_length != self.max_epochs:
            log.info("optim.scheduler=cosine: the schedule now spans %d steps (the checkpoint's: %d); it continues "
                     "from step %d at lr %.3g (was %.3g)", self.max_epochs, saved_length, self.last_epoch,
                     lrs[0], self._last_lr[0])
        self._last_lr = lrs


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    if cfg.scheduler == "cosine":
        return ConfiguredCosineScheduler(optimizer, warmup_epochs=warmup, max_epochs=max(total_steps, warmup + 1),
                                         end_value=cfg.final_lr_ratio)
    milestones = [m * steps_per_epoch for m in cfg.milestones] if cfg.scheduler == "multistep" else []

    def factor(step: int) -> float:  # a plain function: LambdaLR saves none of it in checkpoints
        ramp = min(1.0, (step + 1) / warmup) if warmup else 1.0
        return ramp * cfg.gamma ** sum(step >= m for m in milestones)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
