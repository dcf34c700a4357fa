"""Choosing a run's directory: one per run, also under DDP, never silently shared with another run.

- ``run.dir`` set: that directory. It must not hold another run's checkpoint unless the run
  resumes (then it continues there).
- ``run.resume`` without ``run.dir``: the directory of the resumed run (its TensorBoard history,
  data report and checkpoint continue in place).
- Otherwise: ``runs/<recipe>-<YYYYmmdd-HHMMSS>`` under the working directory.

Lightning's DDP launcher starts the other ranks by running the same command again; rank 0 passes
its choice to them through `RUN_DIR_ENV`, so every rank uses one directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from avssl.config import PretrainConfig
from avssl.errors import ConfigError

RUN_DIR_ENV = "AVSSL_RUN_DIR_OF_RANK_0"


@dataclass(frozen=True)
class RunDirectory:
    """Where a run's files go.

    Attributes:
        path: the run directory.
        launched_rank: True in the processes Lightning started for the other DDP ranks (they write
            nothing outside the training loop; rank 0 writes the config, export and summary).
    """

    path: Path
    launched_rank: bool = False

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def export(self) -> Path:
        return self.path / "export"

    @property
    def data_report(self) -> Path:
        return self.path / "data_report.json"

    @contextmanager
    def shared_with_launched_ranks(self) -> Iterator[None]:
        """Around ``trainer.fit``: the ranks Lightning launches inside it use this directory."""
        if self.launched_rank:
            yield
            return
        os.environ[RUN_DIR_ENV] = str(self.path.resolve())
        try:
            yield
        finally:
            del os.environ[RUN_DIR_ENV]


def _run_of_checkpoint(checkpoint: Path) -> Path | None:
    """The run directory a ``<run>/checkpoints/last.ckpt`` belongs to (None: not in a run directory)."""
    run = checkpoint.resolve().parent.parent
    return run if checkpoint.resolve().parent.name == "checkpoints" and (run / "config.yaml").is_file() else None


def _fresh(recipe: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path("runs") / f"{recipe}-{stamp}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = Path("runs") / f"{recipe}-{stamp}-{suffix}"
    return path


def choose_run_directory(config: PretrainConfig) -> RunDirectory:
    """The run's directory (not created yet), following the rules of the module docstring.

    Raises:
        ConfigError: ``run.dir`` holds another run's checkpoint and this run does not resume.
    """
    if RUN_DIR_ENV in os.environ:
        return RunDirectory(Path(os.environ[RUN_DIR_ENV]), launched_rank=True)
    resume = Path(config.run.resume) if config.run.resume else None
    if config.run.dir:
        run = RunDirectory(Path(config.run.dir))
    elif resume is not None and (previous := _run_of_checkpoint(resume)) is not None:
        run = RunDirectory(previous)
    else:
        run = RunDirectory(_fresh(config.recipe))
    if resume is None and run.last_checkpoint.is_file():
        raise ConfigError(f"run.dir={run.path} already holds a run ({run.last_checkpoint}). To continue it, set "
                          f"run.resume={run.last_checkpoint}; to start a new run, choose another run.dir (or leave it "
                          "unset for a fresh runs/<recipe>-<time>).")
    return run
