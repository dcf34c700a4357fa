"""EMA teachers (avssl.objectives.momentum): the update is its formula, it runs once per optimizer
step under gradient accumulation, its momentum follows the cosine from base to final, a resumed run
continues it exactly, and the teacher never gets a gradient."""

import copy
import math
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from avssl.config import load_config
from avssl.module import AVPretrainModule
from avssl.objectives import Objective, ObjectiveOutput
from avssl.objectives.momentum import MomentumUpdate, teacher_copy

TINY = ["recipe=default", "backbone.tower_width=4", "backbone.embed_dim=16", "optim.warmup_epochs=0",
        "objectives.av_infonce.projection_dim=8", "objectives.av_infonce.projection_hidden_dim=16",
        "objectives.av_infonce.gather_distributed=false"]


class RecordingUpdate(MomentumUpdate):
    """Records the momentum of every update."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.used: list[float] = []

    def update(self, momentum: float) -> None:
        self.used.append(momentum)
        super().update(momentum)


class Toy(pl.LightningModule):
    """A student regressing its inputs, with an EMA teacher."""

    def __init__(self, base: float = 0.9, final: float = 1.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.student = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
        self.teacher = teacher_copy(self.student)
        self.ema = RecordingUpdate([(self.student, self.teacher)], base, final)

    def configure_callbacks(self) -> list[pl.Callback]:
        return [self.ema]

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        return (self.student(batch) - batch).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.1, momentum=0.9)


def _batches(n: int) -> DataLoader:
    generator = torch.Generator().manual_seed(1)
    return DataLoader([torch.randn(8, 4, generator=generator) for _ in range(n)], batch_size=None)


def _trainer(tmp_path, **kwargs: Any) -> pl.Trainer:
    return pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=tmp_path, accelerator="cpu", **kwargs)


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.996, 1.0])
def test_the_update_is_its_formula(momentum):
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5))
    teacher = teacher_copy(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    student(torch.randn(16, 3))  # moves the running statistics and counts a batch
    before = copy.deepcopy(teacher.state_dict())
    MomentumUpdate([(student, teacher)]).update(momentum)
    for key, value in teacher.state_dict().items():
        theirs = student.state_dict()[key]
        if value.is_floating_point():  # parameters and running statistics
            assert torch.allclose(value, momentum * before[key] + (1 - momentum) * theirs), key
        else:
            assert torch.equal(value, theirs), key  # num_batches_tracked is copied


def test_a_teacher_copy_has_the_weights_and_no_gradients():
    student = nn.Linear(3, 3)
    teacher = teacher_copy(student)
    assert all(torch.equal(t, s) for t, s in zip(teacher.parameters(), student.parameters()))
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())


def test_bad_settings_say_what_to_do():
    student = nn.Linear(3, 3)
    with pytest.raises(ValueError, match=r"base_momentum=1.5: must be in \[0, 1\]"):
        MomentumUpdate([(student, teacher_copy(student))], base_momentum=1.5)
    with pytest.raises(ValueError, match=r"do not match its student's.*teacher_copy\(student\)"):
        MomentumUpdate([(student, nn.Linear(3, 4))])
    with pytest.raises(ValueError, match="not the student itself"):
        MomentumUpdate([(student, student)])


@pytest.mark.parametrize("batches, accumulate, steps", [(8, 2, 4), (7, 2, 4), (6, 3, 2), (5, 1, 5)])
def test_one_update_per_optimizer_step_under_gradient_accumulation(tmp_path, batches, accumulate, steps):
    model = Toy()
    trainer = _trainer(tmp_path, max_epochs=1, accumulate_grad_batches=accumulate)
    trainer.fit(model, _batches(batches))
    assert trainer.global_step == steps
    assert len(model.ema.used) == steps  # not one per micro-batch (`batches`)


def test_the_momentum_rises_on_a_cosine_from_base_to_final(tmp_path):
    model = Toy(base=0.9, final=1.0)
    trainer = _trainer(tmp_path, max_epochs=2, accumulate_grad_batches=2)
    trainer.fit(model, _batches(6))  # 3 optimizer steps per epoch
    used = model.ema.used
    assert len(used) == 6 and used[0] == 0.9 and used[-1] == 1.0
    for step, m in enumerate(used):  # BYOL's schedule: 1 - (1 - base) (cos(pi k / (K - 1)) + 1) / 2
        assert m == pytest.approx(1 - 0.1 * (math.cos(math.pi * step / 5) + 1) / 2)
    assert model.ema.momentum == 1.0


def test_a_resumed_run_continues_the_teacher_and_its_schedule(tmp_path):
    whole = Toy()
    _trainer(tmp_path / "whole", max_epochs=2, accumulate_grad_batches=2).fit(whole, _batches(4))

    class StopAfterFirstEpoch(pl.Callback):
        def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            trainer.should_stop = True

    first = Toy()
    trainer = _trainer(tmp_path / "first", max_epochs=2, accumulate_grad_batches=2, callbacks=[StopAfterFirstEpoch()])
    trainer.fit(first, _batches(4))
    trainer.save_checkpoint(tmp_path / "first.ckpt")
    resumed = Toy()
    _trainer(tmp_path / "resumed", max_epochs=2, accumulate_grad_batches=2).fit(resumed, _batches(4),
                                                                                 ckpt_path=tmp_path / "first.ckpt")
    assert first.ema.used + resumed.ema.used == whole.ema.used  # 2 + 2 updates, the same momenta
    for key, value in whole.teacher.state_dict().items():
        assert torch.allclose(resumed.teacher.state_dict()[key], value), key


class EMAObjective(Objective):
    """A student head distilling from its EMA teacher, with the momentum as a health scalar."""

    requires = frozenset({"video_embedding"})

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.pass_names = ("unmasked",)
        self.student = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(0.5))
        self.teacher = teacher_copy(self.student)
        self.ema = MomentumUpdate([(self.student, self.teacher)], base_momentum=0.5)

    def forward(self, passes: dict, batch: dict) -> ObjectiveOutput:
        z = passes["unmasked"]["video_embedding"]
        loss = (self.student(z) - self.teacher(z.roll(1, 0))).pow(2).mean()
        return ObjectiveOutput({"distill": loss}, health={"momentum": z.new_tensor(self.ema.momentum)})

    def callbacks(self) -> list[pl.Callback]:
        return [self.ema]

    def frozen_modules(self) -> list[nn.Module]:
        return self.ema.teachers


def test_through_the_module_the_teacher_gets_no_gradient_and_follows_once_per_step(tmp_path):
    torch.manual_seed(0)
    module = AVPretrainModule(load_config([*TINY, "trainer.accumulate_grad_batches=2"]))
    objective = EMAObjective(module.backbone.embed_dim)
    module.objectives["ema"], module.weights["ema"] = objective, 1.0
    for part in objective.frozen_modules():  # as the module does for objectives it builds itself
        part.requires_grad_(False)
    module.passes_read |= set(objective.pass_names)
    module.train()
    teacher_before = copy.deepcopy(objective.teacher.state_dict())
    batches = [{"audio": torch.randn(4, 1, 32, 32), "video": torch.randn(4, 3, 2, 32, 32)} for _ in range(4)]
    trainer = _trainer(tmp_path, max_epochs=1, accumulate_grad_batches=2)
    trainer.fit(module, DataLoader(batches, batch_size=None))

    assert trainer.global_step == 2
    in_optimizer = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    for p in objective.teacher.parameters():
        assert not p.requires_grad and p.grad is None and id(p) not in in_optimizer
    assert not objective.teacher.training
    assert any(not torch.equal(v, teacher_before[k]) for k, v in objective.teacher.state_dict().items())
    assert trainer.callback_metrics["health/ema/momentum"] == 1.0  # logged by the objective: the last update's
    assert objective.ema.momentum == 1.0
