"""A run whose training diverged stops at once: a loss term or a parameter is no longer finite.

Nothing of such a state is worth keeping, and training on would only spread NaN through every
parameter: the run stops at that step, saves no checkpoint and exports nothing, so ``last.ckpt``
keeps the last finite state. The message names the term (or parameter), the step and the settings
that usually cause it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from avssl.config import PretrainConfig


class TrainingDiverged(Exception):
    """A loss term or a parameter became NaN or infinite; the run stopped without saving that state.

    Args:
        what: the value that is not finite, e.g. ``the loss term infonce/nce is nan``.
        step: the training step it happened at.

    Attributes:
        advice: the settings to change, filled in by `avssl.pretrain.run` (`divergence_advice`).
        kept: the checkpoint holding the last finite state and its step (None: none was saved).
    """

    def __init__(self, what: str, step: int) -> None:
        super().__init__(what, step)
        self.what = what
        self.step = step
        self.advice = ""
        self.kept: tuple[Path, int] | None = None

    def __str__(self) -> str:
        kept = (f"{self.kept[0]} keeps step {self.kept[1]}, the last finite state" if self.kept
                else "no checkpoint of this run holds a finite state")
        return (f"training diverged at step {self.step}: {self.what}. The run stopped without saving or exporting "
                f"this state ({kept}). {self.advice}").strip()


def non_finite_terms(terms: dict[str, Tensor]) -> list[str]:
    """The names of the scalar loss terms in `terms` that are NaN or infinite (one host sync)."""
    finite = torch.isfinite(torch.stack([value.detach().float().reshape(()) for value in terms.values()]))
    if bool(finite.all()):
        return []
    return [name for name, ok in zip(terms, finite.tolist()) if not ok]


def non_finite_parameter(module: nn.Module) -> str | None:
    """The name of the first parameter of `module` holding a NaN or infinity (None: all finite)."""
    params = list(module.named_parameters())
    if not params or bool(torch.stack([p.detach().isfinite().all() for _, p in params]).all()):
        return None
    return next(name for name, p in params if not bool(p.detach().isfinite().all()))


def divergence_advice(config: PretrainConfig) -> str:
    """What to change in `config` so that training stays finite."""
    t = config.trainer
    changes = [f"lower optim.lr (now {config.optim.lr:g}; try a tenth)"]
    if not t.precision.startswith(("32", "64")):
        changes.append(f"train in full precision (trainer.precision=32-true; now {t.precision})")
    if t.gradient_clip_val is None:
        changes.append("clip gradients (trainer.gradient_clip_val=1.0)")
    else:
        changes.append(f"clip gradients harder (trainer.gradient_clip_val, now {t.gradient_clip_val:g})")
    return f"To keep training finite, {', '.join(changes[:-1])} or {changes[-1]}, in a new run."
