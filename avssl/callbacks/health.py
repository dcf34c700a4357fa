"""Warns once when an objective's loss term stays at its chance value.

A loss that sits at its chance value (InfoNCE at ln(2B-1), a normalised reconstruction at 1) is an
objective that learns nothing, whatever else the run does; users should hear that during the
run, not from a probe at its end. Each objective states the chance value of its terms
(`ObjectiveOutput.chance`) and a hint of what to try (`Objective.stuck_hint`); the training step
passes ``{"<objective>/<term>": (value, chance)}`` on to this callback.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import pytorch_lightning as pl

log = logging.getLogger(__name__)


class ChanceMonitor(pl.Callback):
    """Logs one warning per loss term still within ``tolerance`` of its chance value after ``patience_steps``.

    Args:
        patience_steps: training steps before a term is judged (0: never warn).
        tolerance: a term is "at chance" while its mean over the last ``window`` steps is above
            ``(1 - tolerance)`` times the mean of its chance values over the same steps (the chance
            value moves with the batch size).
        window: steps averaged before comparing (single steps are noisy).

    Raises:
        ValueError: for a negative patience, a tolerance outside [0, 1) or a window < 1.
    """

    def __init__(self, patience_steps: int = 200, tolerance: float = 0.02, window: int = 20):
        if patience_steps < 0 or not 0.0 <= tolerance < 1.0 or window < 1:
            raise ValueError(f"patience_steps={patience_steps}, tolerance={tolerance}, window={window}: need "
                             "patience_steps >= 0, 0 <= tolerance < 1 and window >= 1")
        self.patience_steps = patience_steps
        self.tolerance = tolerance
        self.window = window
        self._recent: dict[str, deque[tuple[float, float]]] = {}  # term -> recent (value, chance)
        self.warned: set[str] = set()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self.patience_steps or not isinstance(outputs, dict):
            return
        for key, value_and_chance in outputs.get("chance", {}).items():
            recent = self._recent.setdefault(key, deque(maxlen=self.window))
            recent.append(value_and_chance)
            if key in self.warned or trainer.global_step < self.patience_steps or len(recent) < self.window:
                continue
            smoothed = sum(v for v, _ in recent) / len(recent)
            chance = sum(c for _, c in recent) / len(recent)
            if smoothed > (1.0 - self.tolerance) * chance:
                self.warned.add(key)
                objective = key.split("/", 1)[0]
                hint = pl_module.objectives[objective].stuck_hint
                if trainer.is_global_zero:
                    log.warning(
                        "objectives.%s: loss term '%s' is still at its chance value after %d steps (mean of the "
                        "last %d: %.3f, chance %.3f), so this objective is not learning: %s",
                        objective, key, trainer.global_step, len(recent), smoothed, chance, hint,
                    )
