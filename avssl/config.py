"""Typed configuration of a pretraining run, and loading it from a recipe plus overrides.

One dataclass per section. Defaults live here only; recipes (``recipes/*.yaml``) override them and
cite where their numbers come from. `load_config` merges the recipe and the ``a.b=c`` overrides
onto the schema once, at the entry point, and checks every value; code below receives these
typed objects, never a raw DictConfig.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib.resources
import os
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Optional

import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from avssl.backbone_config import BackboneConfig
from avssl.backbones.masking import AudioMaskSpec, VideoMaskSpec
from avssl.backbones.registry import build_encoder
from avssl.backbones.spec import BackboneSpec
from avssl.errors import ConfigError  # also importable from here, as before
from avssl.lightning_options import accelerator_problem, precision_problem
from avssl.limits import clip_size_problem
from avssl.objectives import check_objective_config
from avssl.objectives.contract import build_objectives
from avssl.schema import count_or_fraction, each, first_violation, flag_or_count, in_range, one_of, satisfies
from avssl.value_types import as_typed
from datamodules.augmentation import Augmentation
from datamodules.policies import DataPolicies
from datamodules.preprocessing import Preprocessing
from datamodules.sampling import SAMPLING_MODES
from datamodules.sources import SourceConfig
from datamodules.views import MAX_AV_OFFSET_S, offset_range_problem

MAX_EPOCHS = 100_000
MAX_STEPS = 10**12
MAX_BATCH = 65_536  # clips per batch (per device)
MAX_WORKERS = 256
MAX_DEVICES = 1024  # per node


def devices_problem(value: Any) -> Optional[str]:
    """What is wrong with ``trainer.devices`` (None: nothing); Lightning parses its string forms."""
    if isinstance(value, str):
        return None
    counts = f"-1 (all) or a count in [1, {MAX_DEVICES}]"
    if isinstance(value, list):
        ok = value and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < MAX_DEVICES for v in value)
        return None if ok else f"a list must hold device indices in [0, {MAX_DEVICES - 1}] (e.g. [0, 1])"
    if isinstance(value, int) and not isinstance(value, bool) and (value == -1 or 1 <= value <= MAX_DEVICES):
        return None
    return f"must be auto, {counts}, or a list of device indices (e.g. [0, 1])"


@dataclass
class RunConfig:
    """Where the run's files go, its seed, checkpoint frequency and the checkpoint to resume from."""

    dir: Optional[str] = None  # None: runs/<recipe>-<YYYYmmdd-HHMMSS> under the working directory
    seed: int = field(default=0, metadata=in_range(0, 2**32 - 1))  # the range numpy's and Lightning's seeding accept
    # also save checkpoints/last.ckpt every N training steps (0: only at the end of each epoch)
    checkpoint_every_n_steps: int = field(default=0, metadata=in_range(0, MAX_STEPS))
    # a checkpoint to continue from, e.g. runs/<run>/checkpoints/last.ckpt; auto: run.dir's last.ckpt
    # when it exists, else a new run in run.dir (one command for a job's start and its restarts)
    resume: Optional[str] = None


@dataclass
class DataConfig:
    """Where the videos are and how clips are cut from them (docs/data.md).

    ``root`` is the shorthand for a folder source: ``data.root=DIR`` means
    ``data.source.kind=folder data.source.path=DIR``. With neither set, the built-in demo clips
    are used.
    """

    root: Optional[str] = None
    source: SourceConfig = field(default_factory=SourceConfig)
    batch_size: int = field(default=32, metadata=in_range(1, MAX_BATCH))
    num_workers: int = field(default=2, metadata=in_range(
        0, MAX_WORKERS, hint=f"DataLoader processes: about one per CPU core, and this machine has {os.cpu_count()}"))
    strict: bool = False  # true: the first unusable file stops the run instead of being skipped
    clips_per_video: int = field(default=1, metadata=in_range(1, 1000))
    # views of each clip, side by side in its batch with the same meta.video_id (docs/data.md,
    # "Views"): a batch holds batch_size x views_per_video rows; 2 for two-view objectives
    views_per_video: int = field(default=1, metadata=in_range(1, 64))
    # [min, max] seconds each view's audio window is shifted from its video window by, drawn
    # uniformly (CrissCross's relaxed synchrony; min < 0: audio may come earlier); [0, 0]: in sync
    av_offset_s: list[float] = field(default_factory=lambda: [0.0, 0.0], metadata=satisfies(offset_range_problem, (-MAX_AV_OFFSET_S, MAX_AV_OFFSET_S)))
    clip_sampling: str = field(default="uniform", metadata=one_of(SAMPLING_MODES))
    # where the fbank is computed: in the DataLoader workers, or on the training device after transfer
    audio_features_on: str = field(default="worker", metadata=one_of(["worker", "device"]))
    policies: DataPolicies = field(default_factory=DataPolicies)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    # training-time augmentation of the pretraining clips, all off by default (docs/data.md,
    # "Augmentation"); labelled data, probes and export are never augmented
    augment: Augmentation = field(default_factory=Augmentation)

    def resolved_source(self) -> Optional[SourceConfig]:
        """The source to pretrain on (None: the demo clips)."""
        if self.root is not None:
            return replace(self.source, kind="folder", path=self.root)
        return self.source if self.source.path is not None else None


@dataclass
class PassConfig:
    """One encoder pass per training step: how each modality's tokens are masked (docs/objectives.md, "Passes").

    Objectives read passes by name (their ``pass_name``); each pass that an objective reads runs
    once per step, every other one not at all.
    """

    audio: AudioMaskSpec = field(default_factory=AudioMaskSpec)
    video: VideoMaskSpec = field(default_factory=VideoMaskSpec)


def _default_passes() -> dict[str, PassConfig]:
    # "masked" is CAV-MAE's (75% random masking of each modality; masked_reconstruction reads it)
    return {"unmasked": PassConfig(), "masked": PassConfig(AudioMaskSpec("random", 0.75), VideoMaskSpec("random", 0.75))}


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule (avssl.optim), stepped per optimizer step."""

    name: str = field(default="adam", metadata=one_of(["adam", "adamw"]))
    lr: float = field(default=5e-5, metadata=in_range(0.0, 1000.0, include_low=False))
    weight_decay: float = field(default=5e-7, metadata=in_range(0.0, 10.0))
    betas: list[float] = field(default_factory=lambda: [0.95, 0.999],
                               metadata=each(in_range(0.0, 1.0, include_high=False), length=2))
    scheduler: str = field(default="constant", metadata=one_of(["constant", "cosine", "multistep"]))
    warmup_epochs: float = field(default=0.0, metadata=in_range(0.0, MAX_EPOCHS))  # linear warm-up, then the schedule
    milestones: list[int] = field(default_factory=list, metadata=each(in_range(0, MAX_EPOCHS)))  # multistep: epochs at which lr is multiplied by gamma
    gamma: float = field(default=0.5, metadata=in_range(0.0, 10.0, include_low=False))
    final_lr_ratio: float = field(default=0.001, metadata=in_range(0.0, 1.0))  # cosine: final lr / lr


@dataclass
class TrainerConfig:
    """Passed to Lightning's Trainer (scale-out is Lightning's: strategy, devices, num_nodes)."""

    max_epochs: int = field(default=25, metadata=in_range(1, MAX_EPOCHS))
    max_steps: int = field(default=-1, metadata=in_range(1, MAX_STEPS, also={-1: "no step limit"}))
    # auto, cpu, gpu (CUDA or MPS), cuda, mps, tpu; must be present on this machine
    accelerator: str = field(default="auto", metadata=satisfies(accelerator_problem))
    # "auto", a count (-1: all), a list of device indices or Lightning's string form ("0,1")
    devices: Any = field(default="auto", metadata=satisfies(devices_problem, (-1, MAX_DEVICES)))
    strategy: str = "auto"
    num_nodes: int = field(default=1, metadata=in_range(1, 4096))
    # any value Lightning accepts, e.g. "bf16-mixed" on GPUs that support it
    precision: str = field(default="32-true", metadata=satisfies(precision_problem))
    gradient_clip_val: Optional[float] = field(default=None, metadata=in_range(0.0, 1e6, include_low=False))
    # sum the gradients of N batches per optimizer step: the effective batch is
    # data.batch_size x N x devices x num_nodes (emulates a paper's batch on fewer devices)
    accumulate_grad_batches: int = field(default=1, metadata=in_range(1, 10_000))
    # batches per epoch: a count (e.g. 100) or a fraction of the epoch (e.g. 0.25); None: all
    # (None rather than 1.0, for which Lightning logs that it will use 100% of the batches)
    limit_train_batches: Any = field(default=None, metadata=count_or_fraction(MAX_STEPS))
    # smoke run (Lightning's fast_dev_run): true (1 batch) or N batches, then the probe and the export
    # as usual; Lightning writes no checkpoint and no TensorBoard events
    fast_dev_run: Any = field(default=False, metadata=flag_or_count(10_000))
    # true: deterministic algorithms only (an op without one raises); "warn": warn instead
    deterministic: Any = field(default=False, metadata=one_of([False, True, "warn"]))
    log_every_n_steps: int = field(default=10, metadata=in_range(1, MAX_STEPS))
    # a progress bar on a terminal, one log line every 30 s and per epoch otherwise; false: neither
    enable_progress_bar: bool = True


@dataclass
class ProbeConfig:
    """Linear probe on a labeled folder, run by a callback during pretraining."""

    enabled: bool = True
    data: Optional[str] = None  # labeled folder; None: the demo's labeled clips when data.root is unset
    every_n_epochs: int = field(default=0, metadata=in_range(0, MAX_EPOCHS))  # 0: only when training ends
    random_init_baseline: bool = True  # also probe a freshly initialised backbone, for comparison
    test_fraction: float = field(default=0.3, metadata=in_range(0.0, 1.0, include_low=False, include_high=False))
    batch_size: int = field(default=64, metadata=in_range(1, MAX_BATCH))


@dataclass
class HealthConfig:
    """Training-health checks during pretraining (docs/objectives.md, "Training health")."""

    # warn once when a loss term is still at its chance value after this many steps (0: never)
    chance_patience_steps: int = field(default=200, metadata=in_range(0, MAX_STEPS))
    # "at chance": the mean of the last 20 steps is above (1 - tolerance) x the chance value
    chance_tolerance: float = field(default=0.02, metadata=in_range(0.0, 1.0, include_high=False))
    # kNN top-1 on the probe set's frozen features after every n-th epoch (0: off); needs the probe set
    knn_every_n_epochs: int = field(default=5, metadata=in_range(0, MAX_EPOCHS))
    # neighbours that vote: solo-learn's 20, not Wu et al.'s 200, as probe sets hold a few hundred clips
    knn_k: int = field(default=20, metadata=in_range(1, 10_000))
    # a neighbour's vote is exp(cosine similarity / temperature) (Wu et al. 2018)
    knn_temperature: float = field(default=0.07, metadata=in_range(0.0, 100.0, include_low=False))


@dataclass
class PretrainConfig:
    """A whole run; each section's docstring (or ``doc`` metadata) is its line in ``--help``."""

    recipe: str = field(default="default", metadata={"doc": "A shipped recipe's name (--list-recipes) or a path to a YAML file."})
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    passes: dict[str, PassConfig] = field(default_factory=_default_passes, metadata={
        "doc": "Encoder passes by name, each with its masking: passes.NAME.audio/video.strategy and .ratio; "
               "objectives read them by name: objectives.NAME.pass_name (docs/objectives.md)."})
    # registry name -> {"weight": float, **the objective's keyword arguments}
    objectives: dict[str, Any] = field(default_factory=dict, metadata={
        "doc": "The weighted losses: objectives.NAME.weight and the objective's arguments (docs/objectives.md)."})
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    health: HealthConfig = field(default_factory=HealthConfig)


def available_recipes(pattern: str = "*") -> list[str]:
    """Names of the recipes shipped with avssl (``recipe=NAME``), those matching a shell-style `pattern`.

    Examples:
        >>> avssl.list_recipes("cav_mae*")
        ['cav_mae', 'cav_mae_demo']
    """
    root = importlib.resources.files("avssl.recipes")
    names = (p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))
    return sorted(name for name in names if fnmatch.fnmatchcase(name, pattern))


def _closest(word: str, options: list[str]) -> str:
    match = difflib.get_close_matches(word, options, n=1, cutoff=0.5)
    return f" Did you mean '{match[0]}'?" if match else ""


def recipe_text(recipe: str) -> str:
    """The YAML of a recipe given by name (shipped) or by path."""
    if recipe.endswith((".yaml", ".yml")) or "/" in recipe:
        path = Path(recipe)
        if not path.is_file():
            raise ConfigError(f"recipe={recipe}: no such file. Give a recipe name ({', '.join(available_recipes())}) or a path to a YAML file.")
        return path.read_text()
    names = available_recipes()
    if recipe not in names:
        raise ConfigError(f"recipe={recipe}: unknown recipe.{_closest(recipe, names)} Available: {', '.join(names)}; or give a path to a YAML file.")
    return importlib.resources.files("avssl.recipes").joinpath(f"{recipe}.yaml").read_text()


def _schema_at(path: list[str]) -> Any:
    """The config section found by following `path` from the defaults (None past a free-form dict)."""
    node: Any = PretrainConfig()
    for part in path:
        node = getattr(node, part, None) if is_dataclass(node) else None
    return node if is_dataclass(node) else None


def _explain_omegaconf_error(err: OmegaConfBaseException, source: str) -> ConfigError:
    key = str(getattr(err, "full_key", "") or "")
    if isinstance(err, ConfigKeyError) and key:
        *parent, leaf = key.split(".")
        schema = _schema_at(parent)
        allowed = [f.name for f in fields(schema)] if schema else []
        where = ".".join(parent) or "the top level"
        return ConfigError(
            f"{key}: unknown key (from {source}).{_closest(leaf, allowed)} Keys allowed in {where}: {', '.join(allowed)}."
        )
    message = str(err).splitlines()[0]
    return ConfigError(f"{key or 'config'}: {message} (from {source}).")


def _check_constraints(config: PretrainConfig) -> None:
    found = first_violation(config)
    if found:
        key, value, problem = found
        raise ConfigError(f"{key}={as_typed(value)}: {problem}; set it in the recipe or override it ({key}=...).")


def _check_data(data: DataConfig) -> None:
    pre = data.preprocessing
    too_big = clip_size_problem(pre.audio_frames, pre.num_mel_bins, pre.num_frames, pre.frame_size)
    if too_big:
        raise ConfigError(f"data.preprocessing: {too_big}; lower audio_frames, num_frames or frame_size.")
    if pre.fps is not None and pre.num_frames / pre.fps > pre.clip_seconds:
        raise ConfigError(f"data.preprocessing: {pre.num_frames} frames at fps={pre.fps} span "
                          f"{pre.num_frames / pre.fps:g} s, longer than clip_seconds={pre.clip_seconds}; "
                          "lower num_frames, raise fps or lengthen the clip.")
    audio = data.augment.audio
    for key, width, size, size_key in (("time_mask_frames", audio.time_mask_frames, pre.audio_frames, "audio_frames"),
                                       ("freq_mask_bins", audio.freq_mask_bins, pre.num_mel_bins, "num_mel_bins")):
        if width > size:
            raise ConfigError(f"data.augment.audio.{key}={width}: wider than the fbank's {size} "
                              f"(data.preprocessing.{size_key}); a mask may cover at most all of it, e.g. "
                              f"data.augment.audio.{key}={size // 5}.")
    if data.root is not None and data.source.path is not None:
        raise ConfigError(f"data.root={data.root} and data.source.path={data.source.path}: give one of them "
                          "(data.root=DIR is the shorthand for a folder source).")


def _check_objectives(config: PretrainConfig, spec: BackboneSpec) -> None:
    """Each entry's name, keys and value types (also of those turned off); then the module's build
    of the objectives (`avssl.objectives.contract.build_objectives`): the checks of each
    ``__init__``, and whether each built objective fits the backbone kind and the passes it reads.

    The objectives are built on torch's meta device: parameters without storage, so a value the
    objective rejects (``temperature=-1``, a decoder width its heads do not divide) or a pass it
    reads that the recipe lacks stops the run here, before any work, at the cost of constructing
    the modules but not of allocating them.
    """
    if not config.objectives:
        raise ConfigError("objectives: the recipe lists no objective; add at least one (e.g. objectives.av_infonce.weight=1.0).")
    for name, params in config.objectives.items():
        check_objective_config(name, params)
    with torch.device("meta"):
        build_objectives(config, build_encoder(spec))


def _yaml_problem(err: yaml.YAMLError) -> str:
    """``line L, column C: what the parser found`` (1-based, as editors count)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


def _parse_recipe(recipe: str) -> DictConfig:
    text = recipe_text(recipe)
    try:
        node = OmegaConf.create(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe={recipe}: not valid YAML ({_yaml_problem(err)}); fix the file.") from None
    if not isinstance(node, DictConfig):
        raise ConfigError(f"recipe={recipe}: a recipe is a mapping of sections (backbone:, objectives:, ...), "
                          "not a list; fix the file.")
    return node


def _parse_overrides(overrides: list[str]) -> DictConfig:
    try:
        return OmegaConf.from_dotlist(overrides)
    except yaml.YAMLError:
        for override in overrides:  # name the one that does not parse
            try:
                OmegaConf.from_dotlist([override])
            except yaml.YAMLError as err:
                raise ConfigError(f"'{override}': the value is not valid YAML ({_yaml_problem(err)}); "
                                  "fix it, or quote it to pass it as a string.") from None
        raise


def load_config(args: list[str]) -> PretrainConfig:
    """Builds the run's configuration from ``recipe=NAME|PATH`` and ``a.b=c`` overrides.

    Raises:
        ConfigError: for an unknown recipe or key, a wrong type or an impossible value.
    """
    recipe = "default"
    overrides = []
    for arg in args:
        if "=" not in arg:
            raise ConfigError(f"'{arg}': expected key=value (e.g. recipe=cav_mae or data.root=/videos).")
        if arg.startswith("recipe="):
            recipe = arg.split("=", 1)[1]
        else:
            overrides.append(arg)
    cfg = OmegaConf.structured(PretrainConfig)
    try:
        cfg = OmegaConf.merge(cfg, _parse_recipe(recipe))
    except OmegaConfBaseException as err:
        raise _explain_omegaconf_error(err, f"recipe {recipe}") from None
    try:
        cfg = OmegaConf.merge(cfg, _parse_overrides(overrides))
    except OmegaConfBaseException as err:
        raise _explain_omegaconf_error(err, "the command line") from None
    cfg.recipe = Path(recipe).stem
    try:
        config: PretrainConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    except OmegaConfBaseException as err:
        raise _explain_omegaconf_error(err, "the merged config") from None
    _check_constraints(config)
    _check_data(config.data)
    spec = config.backbone.resolve(config.data.preprocessing)
    _check_objectives(config, spec)
    return config


def to_yaml(config: Any) -> str:
    """YAML of a config dataclass (the run's resolved `config.yaml`)."""
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def _from_single_pass(data: dict[str, Any]) -> dict[str, Any]:
    """A config stored before named passes: its ``masking`` ratios were those of the one pass every
    objective read, which becomes the ``masked`` pass those objectives read."""
    data = dict(data)
    masking = data.pop("masking")
    data["passes"] = {"masked": {m: {"strategy": "random", "ratio": masking.get(f"{m}_ratio", 0.75)} for m in ("audio", "video")}}
    data["objectives"] = {name: {"pass_name": "masked", **params} for name, params in data.get("objectives", {}).items()}
    return data


def from_dict(data: dict[str, Any]) -> PretrainConfig:
    """Rebuilds a `PretrainConfig` from its plain-dict form (as stored in checkpoints, also by older avssl)."""
    if "masking" in data:
        data = _from_single_pass(data)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(PretrainConfig), data))  # type: ignore[return-value]
