"""The objective interface and registry.

An objective is an `nn.Module` that reads the model-output dict (see
`avssl.backbones.protocol`) of named encoder passes and the batch, and returns an `ObjectiveOutput`:
named loss terms, training-health scalars and the chance value of each term. It may
own state (a decoder, a memory bank, an EMA teacher) that is trained and checkpointed with the
module. Adding one is one new file with ``@register_objective("name")``, imported by
``avssl/objectives/__init__.py`` (docs/objectives.md, "Adding an objective"); recipes list
objectives by that name with a weight and keyword arguments::

    objectives:
      av_infonce: {weight: 0.01, temperature: 0.05}

An objective whose ``__init__`` takes a ``backbone`` argument receives the encoder it trains,
already loaded from ``backbone.init_from`` when that is set, so that a teacher copied from it there
starts from the weights training starts from. The encoder passes it reads (the recipe's
``passes``) are the `Objective.pass_names` it sets in ``__init__``: those of the built objective
are checked against the recipe, in one place (`avssl.objectives.contract.build_objectives`),
whatever its arguments are called.
"""

from __future__ import annotations

import abc
import difflib
import inspect
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytorch_lightning as pl
from torch import Tensor, nn

from avssl.errors import ConfigError
from avssl.schema import in_range
from avssl.value_types import as_typed, type_problem

DEFAULT_WEIGHT = 1.0
WEIGHT_RANGE = in_range(0.0, 1000.0, hint="0 turns the objective off")


@dataclass
class ObjectiveOutput:
    """What an objective gives back for one training step.

    Attributes:
        losses: named scalar loss terms; the module adds ``weight * sum(losses)`` to the total.
        health: named scalars that show whether the objective learns (e.g. in-batch retrieval
            accuracy, a collapse monitor); logged as ``health/<objective>/<name>``, never
            differentiated.
        chance: for some or all loss terms, the value the term takes when nothing is learned
            (InfoNCE: ln of the number of candidates); logged as ``health/<objective>/<term>_chance``
            and watched by `avssl.callbacks.ChanceMonitor`.
    """

    losses: dict[str, Tensor]
    health: dict[str, Tensor] = field(default_factory=dict)
    chance: dict[str, float] = field(default_factory=dict)


class Objective(nn.Module, abc.ABC):
    """Base class: ``forward(passes, batch) -> ObjectiveOutput``; the loss terms are summed.

    An objective reads the outputs of one or more named encoder passes (the recipe's ``passes``
    section): its ``__init__`` sets `pass_names`, usually from an argument the recipe can set
    (``pass_name`` for one pass, ``pass_names`` for several, by convention). The built objective's
    `pass_names` are what the config check (`avssl.objectives.contract`) and the module read: the
    module runs every pass some objective reads once per step and hands all of them over by name;
    an objective never runs the backbone itself.

    Attributes:
        requires: the `forward_features` keys it reads from each of its passes
            (`avssl.backbones.protocol`); a backbone kind without one of them is refused at config time.
        requires_masking: its passes must drop tokens of both modalities (masked reconstruction).
        min_views: views of each clip it compares within a batch (``data.views_per_video`` must be at
            least this, checked at config time); it regroups them with `avssl.objectives.views.by_view`.
        pass_names: the passes it reads, in its own order; each must be defined in the recipe's ``passes``.
        stuck_hint: what to check when a loss term stays at its chance value (quoted in the warning
            of `avssl.callbacks.ChanceMonitor`, followed by `stuck_settings` and the optimizer's
            settings to try, with values).
        parameter_ranges: the range of each numeric ``__init__`` parameter (`avssl.schema.in_range`),
            checked at config time like the schema's fields; ``__init__`` still checks how
            parameters relate (heads that divide a width).

    State: parameters and buffers are checkpointed with the module (and left out of exports);
    other state (counters, a clustering round) goes through ``nn.Module.get_extra_state`` /
    ``set_extra_state`` as plain data (numbers, strings, lists, dicts, tensors), since checkpoints
    are read with ``weights_only=True``.
    """

    requires: ClassVar[frozenset[str]] = frozenset()
    requires_masking: ClassVar[bool] = False
    min_views: ClassVar[int] = 1
    pass_names: tuple[str, ...] = ()
    stuck_hint: str = "check the data report and the health/ scalars."
    parameter_ranges: ClassVar[dict[str, dict[str, Any]]] = {}

    @abc.abstractmethod
    def forward(self, passes: dict[str, dict[str, Tensor]], batch: dict[str, Any]) -> ObjectiveOutput:
        """Named loss terms (and health scalars) from the outputs of the passes, by pass name, and the batch."""

    def stuck_settings(self) -> dict[str, tuple[Any, Any]]:
        """This objective's settings to change when a loss term stays at its chance value:
        ``{key under objectives.<name>: (value in this run, value to try)}``, the two always
        different (quoted in the warning of `avssl.callbacks.ChanceMonitor`). None by default."""
        return {}

    def callbacks(self) -> list[pl.Callback]:
        """Lightning callbacks the objective needs in the training loop, e.g. an EMA teacher's update
        (`avssl.objectives.momentum.MomentumUpdate`: once per optimizer step, also under gradient
        accumulation, where ``on_train_batch_end`` runs once per micro-batch; docs/objectives.md,
        "EMA teachers") or a clustering round at an epoch's start; the module hands them to the
        Trainer. None by default."""
        return []

    def frozen_modules(self) -> list[nn.Module]:
        """Parts that are never trained by the optimizer (e.g. an EMA teacher): the module keeps them
        in eval mode and without gradients, whatever Lightning does to its training mode."""
        return []


OBJECTIVES: dict[str, type[Objective]] = {}


def register_objective(name: str):
    """Class decorator adding an objective to the registry under `name` (lower_snake, unique)."""

    def add(cls: type[Objective]) -> type[Objective]:
        if name in OBJECTIVES:
            raise ValueError(f"objective name '{name}' is already registered by {OBJECTIVES[name].__qualname__}")
        OBJECTIVES[name] = cls
        return cls

    return add


def _user_parameters(cls: type[Objective]) -> dict[str, inspect.Parameter]:
    params = inspect.signature(cls.__init__).parameters
    return {k: p for k, p in params.items() if k not in ("self", "backbone")}


def _check_types(name: str, params: Mapping[str, Any]) -> None:
    """Each given argument fits the annotation of its ``__init__`` parameter (`avssl.value_types`)."""
    cls = OBJECTIVES[name]
    annotations = typing.get_type_hints(cls.__init__)
    for key, parameter in _user_parameters(cls).items():
        if key not in params or key not in annotations:
            continue
        example = None if parameter.default is inspect.Parameter.empty else parameter.default
        problem = type_problem(params[key], annotations[key], example)
        if problem:
            raise ConfigError(f"objectives.{name}.{key}={as_typed(params[key])}: {problem}; set it in the recipe or override "
                              f"it (objectives.{name}.{key}=...).")


def _check_ranges(name: str, params: Mapping[str, Any]) -> None:
    """Each given numeric argument lies in the range its objective declares (``parameter_ranges``)."""
    for key, constraint in OBJECTIVES[name].parameter_ranges.items():
        problem = constraint["check"](params[key]) if key in params else None
        if problem:
            raise ConfigError(f"objectives.{name}.{key}={as_typed(params[key])}: {problem}; set it in the recipe or override "
                              f"it (objectives.{name}.{key}=...).")


def objective_weight(name: str, params: Mapping[str, Any]) -> float:
    """The weight of the ``objectives.<name>`` entry `params` (1.0 when it sets none); 0 turns it off.

    Every reader of an objective's weight goes through here, so the default and the check live once.

    Raises:
        ConfigError: the weight is not a finite number in `WEIGHT_RANGE`.
    """
    weight = params.get("weight", DEFAULT_WEIGHT)
    problem = WEIGHT_RANGE["check"](weight)
    if problem:
        raise ConfigError(f"objectives.{name}.weight={as_typed(weight)}: {problem}; set it in the recipe or override it "
                          f"(objectives.{name}.weight=...).")
    return float(weight)


def check_objective_config(name: str, params: Any) -> None:
    """Checks an ``objectives.<name>`` entry without building it.

    Raises:
        ConfigError: unknown objective or parameter, a weight that is not a number >= 0, or an argument
            whose type does not fit the ``__init__`` annotation (e.g. ``temperature=abc``).
    """
    if name not in OBJECTIVES:
        match = difflib.get_close_matches(name, list(OBJECTIVES), n=1, cutoff=0.5)
        hint = f" Did you mean '{match[0]}'?" if match else ""
        raise ConfigError(f"objectives.{name}: unknown objective.{hint} Registered objectives: {', '.join(sorted(OBJECTIVES))}.")
    if not isinstance(params, dict):
        raise ConfigError(f"objectives.{name}: expected a mapping like {{weight: 1.0, ...}}, got {params!r}.")
    objective_weight(name, params)
    allowed = _user_parameters(OBJECTIVES[name])
    for key in params:
        if key != "weight" and key not in allowed:
            options = ["weight", *allowed]
            match = difflib.get_close_matches(key, options, n=1, cutoff=0.5)
            hint = f" Did you mean '{match[0]}'?" if match else ""
            raise ConfigError(f"objectives.{name}.{key}: unknown parameter.{hint} Allowed: {', '.join(options)}.")
    _check_types(name, params)
    _check_ranges(name, params)


def build_objective(name: str, params: dict[str, Any], backbone: nn.Module) -> tuple[Objective, float]:
    """Builds a registered objective and returns it with its weight.

    Raises:
        ConfigError: as `check_objective_config`, or a value the objective rejects.
    """
    check_objective_config(name, params)
    cls = OBJECTIVES[name]
    kwargs = {k: v for k, v in params.items() if k != "weight"}
    if "backbone" in inspect.signature(cls.__init__).parameters:
        kwargs["backbone"] = backbone
    try:
        objective = cls(**kwargs)
    except ValueError as err:
        raise ConfigError(f"objectives.{name}: {err}") from None
    return objective, objective_weight(name, params)
