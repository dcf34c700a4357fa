"""Choosing a run's directory: one per run, also under DDP, never silently shared with another run.

- ``run.dir`` set: that directory. It must not hold another run's checkpoint unless the run
  resumes (then it continues there).
- ``run.resume`` without ``run.dir``: the directory of the resumed run (its TensorBoard history,
  data report and checkpoint continue in place).
- Otherwise: ``runs/<recipe>-<YYYYmmdd-HHMMSS>`` under the working directory.

Lightning's DDP launcher starts the other ranks by running the same command again; rank 0 passes
its choice to them through `RUN_DIR_ENV`, so every rank uses one directory.

Rank 0 claims the directory (`claim_run_directory`) before writing to it: a fresh directory is
created exclusively (two runs started in the same second get two), and every run holds an
exclusive lock on its ``.run.lock`` for as long as it runs, so a second run on the same ``run.dir``
stops at once. The lock is the kernel's (``flock``): it goes away with the process, however it
ends, so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from pytorch_lightning.utilities import rank_zero_only

from avssl.config import PretrainConfig
from avssl.errors import ConfigError

RUN_DIR_ENV = "AVSSL_RUN_DIR_OF_RANK_0"
LOCK_FILE = ".run.lock"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunDirectory:
    """Where a run's files go.

    Attributes:
        path: the run directory.
        launched_rank: True in the processes of the other DDP ranks, started by Lightning (or by
            torchrun or SLURM): they write nothing outside the training loop; rank 0 writes the
            config, export and summary.
        fresh: a ``runs/<recipe>-<time>`` directory: if another run claims that name first, this
            run takes the next free suffix.
    """

    path: Path
    launched_rank: bool = False
    fresh: bool = False

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
    return Path("runs") / f"{recipe}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


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
        run = RunDirectory(_fresh(config.recipe), fresh=True)
    if resume is None and run.last_checkpoint.is_file():
        raise ConfigError(f"run.dir={run.path} already holds a run ({run.last_checkpoint}). To continue it, set "
                          f"run.resume={run.last_checkpoint}; to start a new run, choose another run.dir (or leave it "
                          "unset for a fresh runs/<recipe>-<time>).")
    return run


@contextmanager
def claim_run_directory(run: RunDirectory) -> Iterator[RunDirectory]:
    """Creates `run`'s directory if needed and locks it for the run, which happens inside the block.

    Yields the claimed directory (for a fresh one, the name it got). If the block fails and left
    nothing worth keeping (no checkpoint, no export, and no data report that the error points
    to), a directory this run created is removed again: failed runs leave no empty folders.
    Processes of DDP ranks other than 0 (launched by Lightning, or by torchrun or SLURM, as
    Lightning's ``rank_zero_only.rank`` tells) use the directory rank 0 holds, unclaimed, as
    launched ranks.

    Raises:
        ConfigError: the directory cannot be created or written, or another run holds it.
    """
    if run.launched_rank or rank_zero_only.rank != 0:
        yield replace(run, launched_rank=True)
        return
    new_parents = [parent for parent in run.path.parents if not parent.exists()]  # e.g. runs/ on a first run
    path, created = _create(run)
    lock = _lock(path, _key(run, path))
    try:
        yield replace(run, path=path)
    except BaseException as err:
        if created and not _worth_keeping(replace(run, path=path), err):
            shutil.rmtree(path, ignore_errors=True)  # the lock is still held: no other run can have started in it
            for parent in new_parents:
                with suppress(OSError):  # not empty: another run uses it now
                    parent.rmdir()
        raise
    finally:
        os.close(lock)  # releases the lock


def _key(run: RunDirectory, path: Path) -> str:
    return f"the run directory {path}" if run.fresh else f"run.dir={path}"


def _create(run: RunDirectory) -> tuple[Path, bool]:
    """The directory, created now (True) or already there (False); a fresh one always new."""
    path, suffix = run.path, 1
    while True:
        try:
            path.mkdir(parents=True)
            return path, True
        except FileExistsError:
            if run.fresh:  # another run took this name: the next suffix
                suffix += 1
                path = run.path.with_name(f"{run.path.name}-{suffix}")
                continue
            if path.is_dir():
                return path, False
            raise ConfigError(f"{_key(run, path)}: exists and is not a folder; set run.dir to a folder "
                              "(new or a run's).") from None
        except OSError as err:
            raise ConfigError(f"{_key(run, path)}: cannot create it ({err.strerror or err}); set run.dir to a "
                              "folder you can write to.") from None


def _lock(path: Path, key: str) -> int:
    """An open descriptor holding the exclusive lock on ``path/LOCK_FILE`` (which records our pid)."""
    try:
        fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise ConfigError(f"{key}: cannot write to it ({err.strerror or err}); set run.dir to a folder you "
                          "can write to.") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ConfigError(f"{key} is in use by another run (pid {holder}); wait for it to end, or choose "
                          "another run.dir.") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _worth_keeping(run: RunDirectory, err: BaseException) -> bool:
    """A checkpoint or export to continue from, or a data report that the error message names or
    that lists skipped files (which files, and why: what the user fixes next)."""
    return (run.last_checkpoint.is_file() or run.export.exists()
            or (run.data_report.is_file() and (str(run.data_report) in str(err) or _lists_skipped_files(run.data_report))))


def _lists_skipped_files(report: Path) -> bool:
    try:
        return bool(json.loads(report.read_text()).get("counts_by_reason"))
    except (OSError, ValueError, AttributeError):
        return False
