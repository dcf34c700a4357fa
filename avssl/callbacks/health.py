"""Warns once when an objective's loss term stays at (or above) its chance value.

A loss that sits at its chance value (InfoNCE at ln(2B-1), a normalised reconstruction at 1), or
above it, is an objective that learns nothing, whatever else the run does; users should hear that
during the run, not from a probe at its end. Each objective states the chance value of its terms
(`ObjectiveOutput.chance`), what to check (`Objective.stuck_hint`) and which of its settings to
change (`Objective.stuck_settings`); the training step passes ``{"<objective>/<term>": (value,
chance)}`` on to this callback. The warning says what was measured (how far above, or how little
below, the chance value the term is) and suggests values that differ from the run's own: the
objective's settings and the optimizer's learning rate and warm-up.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, Optional

import pytorch_lightning as pl

from avssl.config import OptimConfig

log = logging.getLogger(__name__)


def measured_against_chance(value: float, chance: float) -> str:
    """How a loss compares with its chance value, in words.

    Examples:
        >>> measured_against_chance(5.33, 4.04)
        '5.330, 31.9% above its chance value 4.040'
        >>> measured_against_chance(4.0, 4.04)
        '4.000, only 1.0% below its chance value 4.040'
    """
    gap = value / chance - 1.0
    if abs(gap) < 5e-4:
        return f"{value:.3f}, at its chance value {chance:.3f}"
    if gap > 0:
        return f"{value:.3f}, {gap:.1%} above its chance value {chance:.3f}"
    return f"{value:.3f}, only {-gap:.1%} below its chance value {chance:.3f}"


def optimizer_settings_to_try(optim: OptimConfig) -> dict[str, tuple[Any, Any]]:
    """``{"optim.<key>": (value in this run, value to try)}`` for a term stuck at chance: a third of
    the learning rate (rounded to one digit) and a longer warm-up; never the run's own values.

    Examples:
        >>> optimizer_settings_to_try(OptimConfig(lr=1e-3, warmup_epochs=1))
        {'optim.lr': (0.001, 0.0003), 'optim.warmup_epochs': (1, 2)}
    """
    return {
        "optim.lr": (optim.lr, float(f"{optim.lr / 3:.1g}")),
        "optim.warmup_epochs": (optim.warmup_epochs, max(1, 2 * optim.warmup_epochs)),
    }


class ChanceMonitor(pl.Callback):
    """Logs one warning per loss term still within ``tolerance`` of its chance value, or above it, after ``patience_steps``.

    Args:
        patience_steps: training steps before a term is judged (0: never warn).
        tolerance: a term is "at chance" while its mean over the last ``window`` steps is above
            ``(1 - tolerance)`` times the mean of its chance values over the same steps (the chance
            value moves with the batch size).
        window: steps averaged before comparing (single steps are noisy).
        optim: the run's optimizer settings, for the values the warning suggests (None: it
            suggests none of the optimizer's).

    Raises:
        ValueError: for a negative patience, a tolerance outside [0, 1) or a window < 1.
    """

    def __init__(self, patience_steps: int = 200, tolerance: float = 0.02, window: int = 20,
                 optim: Optional[OptimConfig] = None):
        if patience_steps < 0 or not 0.0 <= tolerance < 1.0 or window < 1:
            raise ValueError(f"patience_steps={patience_steps}, tolerance={tolerance}, window={window}: need "
                             "patience_steps >= 0, 0 <= tolerance < 1 and window >= 1")
        self.patience_steps = patience_steps
        self.tolerance = tolerance
        self.window = window
        self.optim = optim
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
                if trainer.is_global_zero:
                    self._warn(key, smoothed, chance, trainer.global_step, len(recent), pl_module)

    def _warn(self, key: str, value: float, chance: float, step: int, steps: int, pl_module: pl.LightningModule) -> None:
        name = key.split("/", 1)[0]
        objective = pl_module.objectives[name]
        settings = {f"objectives.{name}.{setting}": values for setting, values in objective.stuck_settings().items()}
        if self.optim is not None:
            settings.update(optimizer_settings_to_try(self.optim))
        to_try = ", ".join(f"{setting}={_shown(new)} (this run: {_shown(current)})"
                           for setting, (current, new) in settings.items())
        log.warning(
            "objectives.%s: loss term '%s' is %s after %d steps (mean of the last %d), so this objective is not "
            "learning: %s%s", name, key, measured_against_chance(value, chance), step, steps, objective.stuck_hint,
            f" Try {to_try}." if to_try else "",
        )


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
