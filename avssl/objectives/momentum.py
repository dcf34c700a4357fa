"""Momentum ("EMA") teachers: a teacher that follows its student, updated once per optimizer step.

After every optimizer step each teacher moves towards its student,
``teacher = m * teacher + (1 - m) * student``, with the momentum ``m`` rising from a base to a final
value on a cosine over the run's optimizer steps. This is the schedule of BYOL (Grill et al.,
"Bootstrap Your Own Latent", NeurIPS 2020, arXiv:2006.07733: 0.996 to 1), which DINO (Caron et al.,
"Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021, arXiv:2104.14294) and
solo-learn's ``MomentumUpdater`` use too. It is the shared part for the distillation family's
teachers (XKD, DINO-style heads).

Why a callback and not the training step: under ``trainer.accumulate_grad_batches=N`` the training
step and ``on_train_batch_end`` run N times per optimizer step; a teacher updated there would move
N times as fast as its schedule says. `MomentumUpdate` updates only when ``trainer.global_step``
(Lightning's count of optimizer steps) has advanced since its last update, solo-learn's
``last_step`` guard. The update itself is lightly's `update_momentum`.

State on resume: none of its own. The momentum is a function of ``trainer.global_step`` and the
run's length (like the learning-rate schedule, `avssl.optim`), and the guard starts from the
global step Lightning restores; the teachers' weights are parameters of the objective, so the
module's checkpoint holds them.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import nn


def teacher_copy(student: nn.Module) -> nn.Module:
    """A teacher for `student`: a deep copy with the same weights and no gradients.

    Return it from the objective's ``frozen_modules()`` (`MomentumUpdate.teachers`): the module
    then keeps it in eval mode and out of the optimizer.
    """
    teacher = copy.deepcopy(student)
    deactivate_requires_grad(teacher)
    return teacher


def _check_pair(student: nn.Module, teacher: nn.Module) -> None:
    if student is teacher:
        raise ValueError("a teacher must be a copy of its student, not the student itself: make it with "
                         "teacher_copy(student)")
    for kind, theirs, ours in (("parameters", teacher.parameters(), student.parameters()),
                               ("buffers", teacher.buffers(), student.buffers())):
        shapes = [tuple(t.shape) for t in theirs], [tuple(s.shape) for s in ours]
        if shapes[0] != shapes[1]:
            raise ValueError(f"the teacher's {kind} do not match its student's ({len(shapes[0])} tensors against "
                             f"{len(shapes[1])}, or other shapes): make the teacher with teacher_copy(student)")


class MomentumUpdate(pl.Callback):
    """Moves each teacher towards its student once per optimizer step (see the module docstring).

    An objective with an EMA teacher holds one and returns it from ``callbacks()``, returns its
    `teachers` from ``frozen_modules()``, and may log `momentum` as a health scalar. The student
    may be the module's backbone (an objective receives it): the callback only refers to it, so
    the checkpoint does not hold it twice.

    Args:
        pairs: ``(student, teacher)`` module pairs, each teacher made by `teacher_copy`.
        base_momentum: the momentum of the first update (BYOL, DINO: 0.996).
        final_momentum: the momentum of the last update (BYOL, DINO: 1.0).

    Attributes:
        momentum: the momentum of the next update: ``base_momentum`` before training, then the
            cosine from ``base_momentum`` to ``final_momentum`` over the run's optimizer steps
            (``trainer.estimated_stepping_batches``).

    The teachers' floating-point buffers (BatchNorm running statistics) are averaged like the
    parameters (``update_momentum`` averages parameters only), and other buffers (batch counters)
    copied: a frozen teacher runs in eval mode, so it normalises with these statistics, which
    otherwise would stay those of its copy.

    Raises:
        ValueError: a momentum outside [0, 1], or a teacher whose parameters or buffers do not
            match its student's.

    Examples:
        >>> student = nn.Linear(4, 4)
        >>> teacher = teacher_copy(student)
        >>> update = MomentumUpdate([(student, teacher)], base_momentum=0.99)
        >>> update.momentum, update.teachers == [teacher]
        (0.99, True)
    """

    def __init__(self, pairs: Sequence[tuple[nn.Module, nn.Module]], base_momentum: float = 0.996,
                 final_momentum: float = 1.0) -> None:
        for name, value in (("base_momentum", base_momentum), ("final_momentum", final_momentum)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value}: must be in [0, 1] (BYOL, DINO: 0.996 rising to 1.0)")
        for student, teacher in pairs:
            _check_pair(student, teacher)
        self.pairs = list(pairs)
        self.base_momentum = base_momentum
        self.final_momentum = final_momentum
        self.momentum = base_momentum
        self._total_steps = 1
        self._last_step = 0

    @property
    def teachers(self) -> list[nn.Module]:
        """The teachers, for the objective's ``frozen_modules()``."""
        return [teacher for _, teacher in self.pairs]

    def _momentum_at(self, step: int) -> float:
        """The momentum of the update that follows optimizer step ``step + 1`` (``step`` counted from 0)."""
        return cosine_schedule(min(step, self._total_steps), self._total_steps, self.base_momentum, self.final_momentum)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        total = trainer.estimated_stepping_batches
        if math.isinf(total):
            raise ValueError("the momentum schedule spans the run's optimizer steps, which Lightning cannot count "
                             "here: set trainer.max_steps (or max_epochs with a dataloader of known length)")
        self._total_steps = int(total)
        self._last_step = trainer.global_step  # after a resume: the restored step
        self.momentum = self._momentum_at(trainer.global_step)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step == self._last_step:
            return  # inside an accumulation window: no optimizer step since the last update
        self.update(self.momentum)
        self._last_step = trainer.global_step
        self.momentum = self._momentum_at(trainer.global_step)

    @torch.no_grad()
    def update(self, momentum: float) -> None:
        """``teacher = momentum * teacher + (1 - momentum) * student`` for every pair (parameters and buffers)."""
        for student, teacher in self.pairs:
            update_momentum(student, teacher, momentum)
            for ours, theirs in zip(teacher.buffers(), student.buffers()):
                if ours.is_floating_point():
                    ours.mul_(momentum).add_(theirs, alpha=1.0 - momentum)
                else:
                    ours.copy_(theirs)
