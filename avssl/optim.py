"""Optimizer and learning-rate schedule from `OptimConfig`.

Schedules are stepped per optimizer step so that warm-up works for runs of a few epochs too.
Cosine decay with linear warm-up is lightly's `CosineWarmupScheduler`; CAV-MAE's published
schedule is `multistep` (x0.5 every 5 epochs from epoch 10).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from lightly.utils.scheduler import CosineWarmupScheduler
from torch import nn

from avssl.config import OptimConfig


def build_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    optimizer_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[cfg.name]
    return optimizer_cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.betas))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    if cfg.scheduler == "cosine":
        return CosineWarmupScheduler(optimizer, warmup_epochs=warmup, max_epochs=max(total_steps, warmup + 1), end_value=cfg.final_lr_ratio)
    milestones = [m * steps_per_epoch for m in cfg.milestones] if cfg.scheduler == "multistep" else []

    def factor(step: int) -> float:
        ramp = min(1.0, (step + 1) / warmup) if warmup else 1.0
        return ramp * cfg.gamma ** sum(step >= m for m in milestones)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
