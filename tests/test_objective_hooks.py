"""Objective hooks and state: an objective's callbacks reach the Trainer, its frozen parts stay
frozen and in eval mode, and its state (parameters, buffers, extra state) survives a checkpoint."""

import copy
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from avssl.config import load_config
from avssl.module import AVPretrainModule
from avssl.objectives import Objective, ObjectiveOutput

TINY = ["recipe=default", "backbone.tower_width=4", "backbone.embed_dim=16", "optim.warmup_epochs=0",
        "objectives.av_infonce.projection_dim=8", "objectives.av_infonce.projection_hidden_dim=16",
        "objectives.av_infonce.gather_distributed=false"]


class CountSteps(pl.Callback):
    def __init__(self, objective: "TeacherObjective") -> None:
        self.objective = objective

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self.objective.updates += 1  # where an EMA teacher would follow the student


class TeacherObjective(Objective):
    """A student head regressing a frozen teacher's output, with a step counter as extra state."""

    requires = frozenset({"video_embedding"})

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.pass_names = ("unmasked",)
        self.student = nn.Linear(dim, dim)
        self.teacher = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(0.5))
        self.updates = 0

    def forward(self, passes: dict, batch: dict) -> ObjectiveOutput:
        z = passes["unmasked"]["video_embedding"]
        assert not self.teacher.training, "the frozen teacher must stay in eval mode"
        return ObjectiveOutput({"regression": (self.student(z) - self.teacher(z)).pow(2).mean()})

    def callbacks(self) -> list[pl.Callback]:
        return [CountSteps(self)]

    def frozen_modules(self) -> list[nn.Module]:
        return [self.teacher]

    def get_extra_state(self) -> dict:
        return {"updates": self.updates}

    def set_extra_state(self, state: dict) -> None:
        self.updates = state["updates"]


def _module_with_teacher() -> tuple[AVPretrainModule, TeacherObjective]:
    module = AVPretrainModule(load_config(TINY))
    objective = TeacherObjective(module.backbone.embed_dim)
    module.objectives["teacher"], module.weights["teacher"] = objective, 1.0
    for part in objective.frozen_modules():  # as the module does for objectives it builds itself
        part.requires_grad_(False)
    module.passes_read |= set(objective.pass_names)
    return module.train(), objective


def test_callbacks_frozen_parts_and_extra_state(tmp_path):
    torch.manual_seed(0)
    module, objective = _module_with_teacher()
    teacher_before = copy.deepcopy(objective.teacher.state_dict())
    batches = [{"audio": torch.randn(4, 1, 32, 32), "video": torch.randn(4, 3, 2, 32, 32)} for _ in range(3)]
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, DataLoader(batches, batch_size=None))

    assert objective.updates == 3  # its callback ran after every step
    assert any(isinstance(c, CountSteps) for c in trainer.callbacks)
    assert module.training and not objective.teacher.training
    for key, value in objective.teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), f"the frozen teacher's {key} changed"
    assert all(p.grad is None for p in objective.teacher.parameters())

    trainer.save_checkpoint(tmp_path / "last.ckpt")
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"]
    restored, restored_objective = _module_with_teacher()
    restored.load_state_dict(state)
    assert restored_objective.updates == 3
    assert torch.equal(restored_objective.student.weight, objective.student.weight)
