"""``run.resume`` before any work: ``auto`` resolved, and the checkpoint checked: it must be intact,
fit the recipe's model, have been trained with these ``optim`` settings, and hold a data position
these data settings (and this data) can continue from.

Lightning would find the first two problems only inside ``trainer.fit``, as a long traceback, and
the others not at all: a changed ``optim.*`` would be overridden by the checkpoint's optimizer and
schedule state while ``config.yaml`` recorded the new value, and a resumed epoch planned from other
settings or other files would silently train some clips twice and skip others.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from avssl.config import OptimConfig, PretrainConfig
from avssl.errors import ConfigError
from avssl.run_dir import RunDirectory
from avssl.torch_files import load_torch_file, weights_mismatch
from datamodules.pretrain import AVPretrainDataModule

log = logging.getLogger(__name__)

AUTO = "auto"


def resolve_auto_resume(config: PretrainConfig) -> PretrainConfig:
    """`config` with ``run.resume=auto`` replaced by what it means for ``run.dir``.

    ``auto`` continues ``run.dir`` from its ``checkpoints/last.ckpt`` (the only checkpoint a run
    keeps, always complete: it is written atomically) when there is one, and starts a new run there
    when there is none yet: the same command serves a job's first start and every restart (SLURM
    requeue, docs/getting-started.md).

    Raises:
        ConfigError: ``run.resume=auto`` without ``run.dir``.
    """
    if config.run.resume != AUTO:
        return config
    if not config.run.dir:
        raise ConfigError("run.resume=auto continues the run in run.dir, which is unset: set run.dir=DIR (the same "
                          "for the first start and every restart), or give run.resume a checkpoint file.")
    last = RunDirectory(Path(config.run.dir)).last_checkpoint
    if last.is_file():
        log.info("run.resume=auto: continuing from %s", last)
        return replace(config, run=replace(config.run, resume=str(last)))
    log.info("run.resume=auto: %s holds no checkpoint yet; starting a new run there", config.run.dir)
    return replace(config, run=replace(config.run, resume=None))


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
    changed = _changed_optim_settings(checkpoint, module.config.optim)
    if changed:
        raise ConfigError(f"run.resume={path}: {', '.join(changed)}; the optimizer and its learning-rate schedule "
                          "continue from the checkpoint, so a changed optim.* would not apply. Resume with the "
                          f"checkpoint's values, or start a new run from its weights with the new ones: python -m "
                          f"avssl.export {path} --out DIR, then backbone.init_from=DIR.")
    conflicts = datamodule.resume_conflicts(checkpoint.get(type(datamodule).__qualname__, {}), world_size)
    if conflicts:
        raise ConfigError(f"run.resume={path}: the checkpoint stopped inside an epoch whose clips were planned with "
                          f"other data: {'; '.join(conflicts)}. Resuming would re-train clips already seen and skip "
                          "others; set them back as they were at the checkpoint, or resume from a checkpoint saved "
                          "at an epoch end.")


def _changed_optim_settings(checkpoint: dict[str, Any], optim: OptimConfig) -> list[str]:
    """``optim.<key>=<now> (checkpoint: <then>)`` for each key that differs from the checkpoint's run.

    Every avssl checkpoint stores its run's configuration (the module's hyper-parameters); one that
    does not (not written by `AVPretrainModule`) is not checked, with a log line saying so.
    """
    stored = (checkpoint.get("hyper_parameters") or {}).get("config", {}).get("optim")
    try:
        saved = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(OptimConfig), stored or {}))
    except OmegaConfBaseException:
        saved = None
    if stored is None or saved is None:
        log.info("run.resume: the checkpoint does not record readable optim settings; they are not compared")
        return []
    now, then = asdict(optim), asdict(saved)
    return [f"optim.{f.name}={now[f.name]} (checkpoint: {then[f.name]})"
            for f in fields(OptimConfig) if now[f.name] != then[f.name]]
