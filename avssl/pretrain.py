"""``python -m avssl.pretrain [recipe=NAME|PATH] [key=value ...]``: self-supervised pretraining (``--help``: options).

With no argument it runs the default recipe (audio-visual InfoNCE on small CNN towers) on the built-in demo clips,
which are rendered and cached on first use. A run leaves a directory with the resolved
``config.yaml``, ``checkpoints/last.ckpt``, ``tensorboard/``, ``data_report.json``, ``probe.json``
(when a labeled set is available; a smoke run, ``trainer.fast_dev_run``, probes nothing) and ``export/`` (the backbone, loadable with
`avssl.load_backbone`).
"""

from __future__ import annotations

import logging
import shlex
import signal
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from avssl.atomic_files import remove_partial_files
from avssl.callbacks import (AtomicCheckpointIO, ChanceMonitor, DataReportCallback, KNNMonitor, LastCheckpoint,
                             LinearProbeCallback, StopSignals)
from avssl.callbacks.progress import progress_callbacks
from avssl.callbacks.stop_signals import signal_name
from avssl.config import PretrainConfig, load_config, to_yaml
from avssl.console import configure_logging, quiet_lightning
from avssl.divergence import TrainingDiverged, divergence_advice, non_finite_parameter
from avssl.errors import ConfigError
from avssl.evaluation.linear_probe import FEATURE_SETS
from avssl.export import export_encoder
from avssl.module import AVPretrainModule
from avssl.pretrain_cli import option_output, split_options
from avssl.resume import AUTO, check_resume_checkpoint, resolve_auto_resume
from avssl.run_dir import RunDirectory, choose_run_directory, claim_run_directory
from datamodules.demo import ensure_demo_clips
from datamodules.errors import ClipError, DataPathError, DataSourceError, NoUsableClipsError
from datamodules.labeled import LabeledClipDataModule
from datamodules.pretrain import AVPretrainDataModule
from datamodules.report import DataReport
from datamodules.sources import SourceConfig
from datamodules.stream import StreamSettings

log = logging.getLogger("avssl.pretrain")

USER_ERRORS = (ConfigError, ClipError, DataPathError, DataSourceError, NoUsableClipsError)

# exit codes of the CLI besides 0 (done) and 1 (a bug: a traceback); a stop signal exits with 128 + its
# number, as a shell reports a process it ended: 130 for Ctrl-C (SIGINT), 143 for SIGTERM
EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3


@dataclass
class RunResult:
    """Where a finished run put things, and its probe figures (empty without a labeled set).

    Attributes:
        step: the global step ``checkpoint`` holds.
        launched_rank: True in the processes Lightning started for DDP ranks other than 0 (they
            report nothing; rank 0 does).
    """

    run_dir: Path
    checkpoint: Path
    step: int
    export_dir: Path
    data_report: Path
    probe: dict[str, Any]
    seconds: float
    launched_rank: bool = False


class RunInterrupted(Exception):
    """Ctrl-C or SIGTERM stopped the run (`StopSignals`).

    Attributes:
        checkpoint: the checkpoint to resume from (None: nothing to resume).
        step: the step this run saved in `checkpoint` (None: it saved none; `checkpoint` is then the
            unchanged one it resumed from).
        signum: the signal (SIGINT also for a KeyboardInterrupt without one).
    """

    def __init__(self, checkpoint: Path | None, step: int | None, signum: int) -> None:
        super().__init__(f"stopped by {signal_name(signum)} at step {step}")
        self.checkpoint = checkpoint
        self.step = step
        self.signum = signum


def _sources(config: PretrainConfig) -> tuple[SourceConfig, str | None]:
    """The unlabeled source to pretrain on and the labeled folder to probe with (None: no probe)."""
    source = config.data.resolved_source()
    if source is not None:
        probe_root = config.probe.data
        if probe_root is None and config.probe.enabled:
            log.info("no labeled set for the linear probe; set probe.data=DIR to probe during pretraining")
        return source, probe_root if config.probe.enabled else None
    demo = ensure_demo_clips()
    source = replace(config.data.source, kind="folder", path=str(demo.unlabeled))
    return source, (config.probe.data or str(demo.labeled)) if config.probe.enabled else None


def _trainer(config: PretrainConfig, run_dir: RunDirectory, callbacks: list[pl.Callback]) -> pl.Trainer:
    """Lightning's Trainer for the ``trainer`` section; a setting Lightning refuses is a `ConfigError`."""
    t = config.trainer
    try:
        return pl.Trainer(
            default_root_dir=run_dir.path,
            logger=TensorBoardLogger(save_dir=run_dir.path, name="tensorboard", version=""),
            callbacks=callbacks + progress_callbacks(t.enable_progress_bar),
            plugins=[AtomicCheckpointIO()],
            max_epochs=t.max_epochs,
            max_steps=t.max_steps,
            accelerator=t.accelerator,
            devices=t.devices,
            strategy=t.strategy,
            num_nodes=t.num_nodes,
            precision=t.precision,
            gradient_clip_val=t.gradient_clip_val,
            accumulate_grad_batches=t.accumulate_grad_batches,
            limit_train_batches=t.limit_train_batches,
            fast_dev_run=t.fast_dev_run,
            deterministic=t.deterministic,
            log_every_n_steps=t.log_every_n_steps,
            enable_progress_bar=t.enable_progress_bar,
            enable_model_summary=False,
        )
    except (MisconfigurationException, ValueError, RuntimeError) as err:  # e.g. an unknown trainer.strategy
        raise _refused_by_lightning(err) from None


def _refused_by_lightning(err: Exception) -> ConfigError:
    reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return ConfigError(f"trainer: Lightning refused these settings: {reason} Fix the trainer.* key it names.")


def run(config: PretrainConfig) -> RunResult:
    """Pretrains as `config` says and exports the backbone.

from avssl.resume import AUTO, check_resume_checkpoint, resolve_auto_resume
from avssl.run_dir import RunDirectory, choose_run_directory, claim_run_directory

    Raises:
        ConfigError, DataPathError, NoUsableClipsError, ClipError: user-fixable problems, raised
            before training starts (a ClipError only with ``data.strict=true``).
        RunInterrupted: Ctrl-C or SIGTERM, after ``last.ckpt`` was saved (during training).
        TrainingDiverged: a loss term or parameter became NaN or infinite; nothing was saved from
            that step on, and nothing exported.
    """
    started = time.perf_counter()
    config = resolve_auto_resume(config)
    stop_signals = StopSignals()
    with stop_signals.installed():
        try:
            with ExitStack() as claim:  # the run directory's claim, released when the run ends, however it ends
                return _run(config, stop_signals, claim, started)
        except KeyboardInterrupt:  # before training: this run saved nothing
            raise _interrupted(config, None, stop_signals) from None


def _interrupted(config: PretrainConfig, checkpoint: LastCheckpoint | None,
                 stop_signals: StopSignals) -> RunInterrupted:
    """What a stop signal leaves: the checkpoint this run saved, else the one it resumed from."""
    signum = stop_signals.received or signal.SIGINT  # a KeyboardInterrupt not from a signal counts as Ctrl-C
    if checkpoint is not None and checkpoint.saved_step is not None:
        return RunInterrupted(checkpoint.path, checkpoint.saved_step, signum)
    return RunInterrupted(Path(config.run.resume) if config.run.resume else None, None, signum)


@contextmanager
def _stops_reported(config: PretrainConfig, checkpoint: LastCheckpoint, stop_signals: StopSignals) -> Iterator[None]:
    """Around training and export: a stop signal becomes `RunInterrupted`, and a divergence says
    which checkpoint keeps the last finite state and what to change."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit) as stop:
        if isinstance(stop, SystemExit) and not checkpoint.interrupted:
            raise  # Lightning ends with sys.exit(1) after handling a KeyboardInterrupt; other exits are not ours
        raise _interrupted(config, checkpoint, stop_signals) from None
    except TrainingDiverged as diverged:
        diverged.advice = divergence_advice(config)
        if checkpoint.saved_step is not None:
            diverged.kept = (checkpoint.path, checkpoint.saved_step)
        raise


def _run(config: PretrainConfig, stop_signals: StopSignals, claim: ExitStack, started: float) -> RunResult:
    pl.seed_everything(config.run.seed, workers=True, verbose=False)
    module = AVPretrainModule(config)  # loads backbone.init_from, builds every objective, before any data work
    run_dir = claim.enter_context(claim_run_directory(choose_run_directory(config)))
    source, probe_root = _sources(config)
    pre = config.data.preprocessing
    data = config.data
    datamodule = AVPretrainDataModule(source, StreamSettings(
        preprocessing=pre, policies=data.policies, batch_size=data.batch_size,
        clips_per_video=data.clips_per_video, views_per_video=data.views_per_video,
        av_offset_s=tuple(data.av_offset_s), sampling=data.clip_sampling, seed=config.run.seed,
        num_workers=data.num_workers, audio_features_on=data.audio_features_on, augment=data.augment),
        strict=data.strict,
        path_key="data.root" if data.root is not None else "data.source.path")
    checkpoint = LastCheckpoint(run_dir.checkpoints, stop_signals, config.run.checkpoint_every_n_steps)
    callbacks: list[pl.Callback] = [
        stop_signals,  # first: its on_train_end runs before the final probe's
        checkpoint,
        DataReportCallback(datamodule.report, run_dir.data_report, source.path, datamodule.path_key),
        LearningRateMonitor(logging_interval="step"),
        ChanceMonitor(config.health.chance_patience_steps, config.health.chance_tolerance, optim=config.optim),
    ]
    labeled, probe_callback = None, None
    if probe_root is not None:
        labeled = LabeledClipDataModule(
            root=probe_root,
            preprocessing=pre,
            batch_size=config.probe.batch_size,
            num_workers=config.data.num_workers,
            test_fraction=config.probe.test_fraction,
            seed=config.run.seed,
            extensions=data.source.extensions,
            key="probe.data",
            policies=data.policies,
            report=DataReport(location=f"{run_dir.data_report} (its 'probe' section)"),
        )
        datamodule.report.sections["probe"] = labeled.report
        if config.trainer.fast_dev_run:  # a smoke run takes seconds; the labeled data is still checked
            log.info("smoke run (trainer.fast_dev_run=%s): the linear probes and the kNN monitor are skipped",
                     config.trainer.fast_dev_run)
        else:
            probe_callback = LinearProbeCallback(
                labeled, run_dir.path / "probe.json", config.probe.every_n_epochs, config.probe.random_init_baseline, config.run.seed
            )
            callbacks.append(probe_callback)
            if config.health.knn_every_n_epochs:
                callbacks.append(KNNMonitor(labeled, config.health.knn_k, config.health.knn_temperature,
                                            config.health.knn_every_n_epochs, config.run.seed))

    trainer = _trainer(config, run_dir, callbacks)
    if config.run.resume is not None:
        check_resume_checkpoint(config.run.resume, module, datamodule, trainer.world_size)
    if not run_dir.launched_rank:
        (run_dir.path / "config.yaml").write_text(to_yaml(config))
        for leftover in remove_partial_files(run_dir.checkpoints) + remove_partial_files(run_dir.export):
            log.info("removed %s, left by a run killed while saving", leftover)
    try:  # refuses a source without videos, and degenerate probe data, before any training
        datamodule.setup("fit")
        if labeled is not None:
            labeled.setup("fit")
    finally:  # also when refused: the report the messages name exists and lists the skipped files
        if not run_dir.launched_rank:
            datamodule.report.write_json(run_dir.data_report)
    with run_dir.shared_with_launched_ranks(), warnings.catch_warnings():
        # ClipStream's length is exact for any number of workers (datamodules/epoch_plan.py).
        warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")
        # The data position is resumed by the data module (its state_dict), not the loader.
        warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")
        with _stops_reported(config, checkpoint, stop_signals):
            try:
                trainer.fit(module, datamodule=datamodule, ckpt_path=config.run.resume)
            except MisconfigurationException as err:  # what only the data tells, e.g. a limit_train_batches fraction of no batch
                raise _refused_by_lightning(err) from None
    with _stops_reported(config, checkpoint, stop_signals):
        if trainer.is_global_zero:
            bad = non_finite_parameter(module.backbone)  # checked at every save, but a smoke run saves none
            if bad is not None:
                raise TrainingDiverged(f"the parameter backbone.{bad} holds NaN or infinite values", trainer.global_step)
            export_encoder(module.backbone, pre, run_dir.export,
                           source={"run": str(run_dir.path), "recipe": config.recipe})
    return RunResult(
        run_dir=run_dir.path,
        checkpoint=checkpoint.path,
        step=trainer.global_step,
        export_dir=run_dir.export,
        data_report=run_dir.data_report,
        probe=probe_callback.results if probe_callback else {},
        seconds=time.perf_counter() - started,
        launched_rank=not trainer.is_global_zero,
    )


def format_summary(result: RunResult, fast_dev_run: bool | int = False) -> str:
    """What a user reads at the end of a run: where everything is, and the probe figures.

    Args:
        fast_dev_run: ``trainer.fast_dev_run``: a smoke run writes no checkpoint and no TensorBoard events,
            and runs no probe.
    """
    smoke = f"none (smoke run, trainer.fast_dev_run={fast_dev_run})"
    tensorboard = f"tensorboard --logdir {result.run_dir / 'tensorboard'}"
    lines = [
        f"run directory   {result.run_dir}",
        f"checkpoint      {smoke if fast_dev_run else f'{result.checkpoint}  (step {result.step})'}",
        f"export          {result.export_dir}  (avssl.load_backbone('{result.export_dir}'))",
        f"tensorboard     {smoke if fast_dev_run else tensorboard}",
        f"data report     {result.data_report}",
        f"wall time       {result.seconds / 60:.1f} min",
    ]
    if fast_dev_run:
        lines.insert(0, f"smoke run       trainer.fast_dev_run={fast_dev_run}: the export is of a barely trained backbone")
        lines.insert(-1, f"linear probe    none (smoke run, trainer.fast_dev_run={fast_dev_run}: the probes and the kNN "
                         "monitor are skipped)")
    if result.probe:
        any_result = next(iter(result.probe.values()))
        lines += ["", f"linear probe top-1 ({any_result['train_clips']} train / {any_result['test_clips']} test clips):"]
        lines.append(f"  {'backbone':<14}" + "".join(f"{k:>9}" for k in FEATURE_SETS))
        for name, res in result.probe.items():
            lines.append(f"  {name:<14}" + "".join(f"{res[k]['top1']:>9.1%}" for k in FEATURE_SETS))
    return "\n".join(lines)


def resume_command(argv: list[str], checkpoint: Path) -> str:
    """The command that continues an interrupted run: the same arguments, resuming `checkpoint`
    (or the same command, when it has ``run.resume=auto``)."""
    if f"run.resume={AUTO}" in argv:
        return shlex.join(["python", "-m", "avssl.pretrain", *argv])
    kept = [arg for arg in argv if not arg.startswith("run.resume=")]
    return shlex.join(["python", "-m", "avssl.pretrain", *kept, f"run.resume={checkpoint}"])


def stop_message(stop: RunInterrupted, argv: list[str]) -> str:
    """What the CLI prints when a stop signal ended the run: what is kept, and how to continue."""
    how = f"interrupted ({signal_name(stop.signum)})"
    if stop.checkpoint is None:
        return f"avssl.pretrain: {how} before the first training step; nothing was saved."
    if stop.step is None:
        kept = f"{how} before training resumed; {stop.checkpoint} is unchanged"
    else:
        kept = f"{how}; {stop.checkpoint} holds step {stop.step}"
    return f"avssl.pretrain: {kept}. Resume with:\n  {resume_command(argv, stop.checkpoint)}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    configure_logging()
    try:
        option, args = split_options(argv)
        if option is not None:  # --help, a listing or --print-config: print, create nothing
            print(option_output(option, args))
            return 0
        config = load_config(args)
        with quiet_lightning():
            result = run(config)
    except USER_ERRORS as err:
        print(f"avssl.pretrain: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except TrainingDiverged as err:
        print(f"avssl.pretrain: error: {err}", file=sys.stderr)
        return EXIT_DIVERGED
    except RunInterrupted as stop:
        if rank_zero_only.rank == 0:  # under DDP every rank stops; rank 0 says what is kept
            print(stop_message(stop, args), file=sys.stderr)
        return 128 + stop.signum
    except KeyboardInterrupt:
        print("avssl.pretrain: interrupted before training started; nothing was saved.", file=sys.stderr)
        return 128 + signal.SIGINT
    if not result.launched_rank:
        print("\n" + format_summary(result, config.trainer.fast_dev_run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
