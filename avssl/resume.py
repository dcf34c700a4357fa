"""Checking ``run.resume`` before any work: the checkpoint must be intact, fit the recipe's model,
and hold a data position these data settings can continue from.

Lightning would find each of these problems only inside ``trainer.fit``, as a long traceback (or,
for changed data settings, not at all: the resumed epoch would silently re-train clips).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from avssl.errors import ConfigError
from avssl.torch_files import load_torch_file, weights_mismatch
from datamodules.pretrain import AVPretrainDataModule


def check_resume_checkpoint(path: str | Path, module: nn.Module, datamodule: AVPretrainDataModule, world_size: int) -> None:
    """Raises `ConfigError` (one line, naming the file) unless `path` can be resumed here."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"run.resume={path}: no such checkpoint file; point it at a run's checkpoints/last.ckpt.")
    try:
        checkpoint = load_torch_file(path, "checkpoint", "a .ckpt file")
    except ValueError as err:
        raise ConfigError(f"run.resume: {err}; resume from an intact last.ckpt, or start a new run.") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ConfigError(f"run.resume={path}: not a Lightning checkpoint of avssl (it holds no state_dict); "
                          "resume from a run's checkpoints/last.ckpt.")
    mismatch = weights_mismatch(module.state_dict(), checkpoint["state_dict"])
    if mismatch:
        raise ConfigError(f"run.resume={path}: the checkpoint's model does not fit this recipe's ({mismatch}). Resume "
                          "with the settings the run was started with (its config.yaml), or start a new run.")
    conflicts = datamodule.resume_conflicts(checkpoint.get(type(datamodule).__qualname__, {}), world_size)
    if conflicts:
        raise ConfigError(f"run.resume={path}: the checkpoint stopped inside an epoch whose clips were planned with "
                          f"other data settings: {'; '.join(conflicts)}. Resuming would re-train clips already seen; "
                          "set them back to the checkpoint's values, or resume from a checkpoint saved at an epoch end.")
