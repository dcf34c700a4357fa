"""Build a recipe's objectives and check that each fits its backbone and the recipe's passes.

An objective states the `forward_features` keys it reads (`Objective.requires`) and, once built,
the passes it reads (`Objective.pass_names`); a backbone kind states the keys it gives
(`AudioVisualBackbone.OUTPUT_KEYS`) and whether it can drop tokens (``MASKABLE``).
`build_objectives` is the one place that pairs them: `avssl.config.load_config` runs it on torch's
meta device, before any work, and `avssl.module.AVPretrainModule` runs it on the real backbone. A
recipe that pairs them wrongly stops with the objective, the key or pass, and what would fit.
An objective that compares several views of each clip (`Objective.min_views`) needs
``data.views_per_video`` at least that high.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from torch import nn

from avssl.backbones.registry import ENCODER_KINDS
from avssl.errors import ConfigError
from avssl.objectives.registry import OBJECTIVES, Objective, build_objective, check_objective_config, objective_weight

if TYPE_CHECKING:
    from avssl.config import PassConfig, PretrainConfig


def build_objectives(config: PretrainConfig, backbone: nn.Module) -> tuple[dict[str, Objective], dict[str, float]]:
    """The recipe's objectives with a weight > 0, built on `backbone`, and their weights.

    An objective turned off (weight 0) is not built at all: it may need parts this backbone lacks.

    Raises:
        ConfigError: as `build_objective`; or the backbone kind lacks a key an objective reads; an
            objective reads a pass the recipe does not define; a pass drops tokens on a kind that
            cannot; a masked objective reads a pass that does not mask both modalities; an objective
            compares more views of each clip (`Objective.min_views`) than ``data.views_per_video`` gives.
    """
    objectives: dict[str, Objective] = {}
    weights: dict[str, float] = {}
    for name, params in config.objectives.items():
        if not objective_weight(name, params):
            continue
        check_objective_config(name, params)
        _check_keys(name, backbone)  # before building: its __init__ may use parts the kind lacks
        _check_views(name, config.data.views_per_video)
        objective, weights[name] = build_objective(name, dict(params), backbone)
        _check_passes(name, objective, config.passes, backbone)
        objectives[name] = objective
    return objectives, weights


def _check_keys(name: str, backbone: nn.Module) -> None:
    """The backbone's kind gives every `forward_features` key the objective ``name`` reads."""
    reads, kind = OBJECTIVES[name].requires, backbone.spec.kind
    missing = sorted(reads - type(backbone).OUTPUT_KEYS)
    if missing:
        fitting = sorted(k for k, c in ENCODER_KINDS.items() if reads <= c.OUTPUT_KEYS)
        raise ConfigError(f"objectives.{name} reads '{missing[0]}' from the backbone, which backbone.kind={kind} "
                          f"does not give; kinds that give it: {', '.join(fitting)}. Choose one of them, or remove "
                          f"objectives.{name} (or set its weight to 0).")


def _check_views(name: str, views: int) -> None:
    """``data.views_per_video`` gives the objective ``name`` the views of each clip it compares."""
    needed = OBJECTIVES[name].min_views
    if needed > views:
        raise ConfigError(f"objectives.{name} compares {needed} views of each clip, but data.views_per_video={views}; "
                          f"set data.views_per_video={needed} (a batch then holds data.batch_size x {needed} rows), or "
                          f"remove objectives.{name} (or set its weight to 0).")


def _masks(spec: PassConfig) -> str:
    return f"audio.ratio={spec.audio.ratio}, video.ratio={spec.video.ratio}"


def _check_passes(name: str, objective: Objective, passes: Mapping[str, PassConfig], backbone: nn.Module) -> None:
    """Each pass the built `objective` reads (its `pass_names`) is defined, and masks as it and the kind need."""
    kind = backbone.spec.kind
    for pass_name in objective.pass_names:
        if pass_name not in passes:
            raise ConfigError(f"objectives.{name} reads the pass '{pass_name}', which the recipe does not define "
                              f"(passes: {', '.join(passes)}); point objectives.{name}'s pass argument (pass_name or "
                              f"pass_names, docs/objectives.md) at defined passes, or define passes.{pass_name}.audio "
                              "/ .video.")
        spec = passes[pass_name]
        if (spec.audio.ratio or spec.video.ratio) and not type(backbone).MASKABLE:
            raise ConfigError(f"objectives.{name} reads the pass '{pass_name}', which drops tokens ({_masks(spec)}), "
                              f"but backbone.kind={kind} sees whole inputs; make objectives.{name} read passes that "
                              "drop nothing (such as unmasked), or use a transformer backbone.")
        if objective.requires_masking and not (spec.audio.ratio and spec.video.ratio):
            raise ConfigError(f"objectives.{name} reconstructs masked tokens, but its pass '{pass_name}' masks "
                              f"{_masks(spec)}; set both ratios of passes.{pass_name} > 0 (CAV-MAE: 0.75).")
