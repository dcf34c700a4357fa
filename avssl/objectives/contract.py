"""Does each objective of a recipe fit its backbone, passes and views? Checked when the config is loaded.

An objective states the `forward_features` keys it reads (`Objective.requires`) and reads named
passes (its ``pass_name`` / ``pass_names``); a backbone kind states the keys it gives
(`AudioVisualBackbone.OUTPUT_KEYS`) and whether it can drop tokens (``MASKABLE``). A recipe that
pairs them wrongly stops before any work, with the objective, the key or pass, and what would fit.
An objective that compares several views of each clip (`Objective.min_views`) needs
``data.views_per_video`` at least that high.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from avssl.backbones.registry import ENCODER_KINDS
from avssl.errors import ConfigError
from avssl.objectives.registry import OBJECTIVES, objective_weight, passes_read

if TYPE_CHECKING:
    from avssl.backbones.spec import BackboneSpec
    from avssl.config import PassConfig, PretrainConfig


def _masks(spec: PassConfig) -> str:
    return f"audio.ratio={spec.audio.ratio}, video.ratio={spec.video.ratio}"


def check_objectives_fit(config: PretrainConfig, spec: BackboneSpec) -> None:
    """Raises `ConfigError` for the first objective (with weight > 0) that does not fit `spec`
    (the resolved backbone) and the recipe's passes.

    Raises:
        ConfigError: the backbone kind lacks a key the objective reads; the objective reads a pass
            the recipe does not define; a pass drops tokens on a kind that cannot; a masked
            objective reads a pass that masks nothing; the objective compares more views of each clip
            (`Objective.min_views`) than ``data.views_per_video`` gives.
    """
    kind_name = spec.kind
    kind = ENCODER_KINDS[kind_name]
    for name, params in config.objectives.items():
        if not objective_weight(name, params):
            continue  # turned off: not built
        cls = OBJECTIVES[name]
        missing = sorted(cls.requires - kind.OUTPUT_KEYS)
        if missing:
            fitting = sorted(k for k, c in ENCODER_KINDS.items() if cls.requires <= c.OUTPUT_KEYS)
            raise ConfigError(f"objectives.{name} reads '{missing[0]}' from the backbone, which backbone.kind={kind_name} "
                              f"does not give; kinds that give it: {', '.join(fitting)}. Choose one of them, or remove "
                              f"objectives.{name} (or set its weight to 0).")
        views = config.data.views_per_video
        if cls.min_views > views:
            raise ConfigError(f"objectives.{name} compares {cls.min_views} views of each clip, but data.views_per_video="
                              f"{views}; set data.views_per_video={cls.min_views} (a batch then holds data.batch_size x "
                              f"{cls.min_views} rows), or remove objectives.{name} (or set its weight to 0).")
        for pass_name in passes_read(name, params):
            if pass_name not in config.passes:
                raise ConfigError(f"objectives.{name} reads the pass '{pass_name}', which the recipe does not define "
                                  f"(passes: {', '.join(config.passes)}); set objectives.{name}.pass_name to one of them "
                                  f"or define passes.{pass_name}.audio / .video.")
            spec = config.passes[pass_name]
            if (spec.audio.ratio or spec.video.ratio) and not kind.MASKABLE:
                raise ConfigError(f"objectives.{name} reads the pass '{pass_name}', which drops tokens ({_masks(spec)}), "
                                  f"but backbone.kind={kind_name} sees whole inputs; read an unmasked pass "
                                  f"(objectives.{name}.pass_name=unmasked) or use a transformer backbone.")
            if cls.requires_masking and not (spec.audio.ratio and spec.video.ratio):
                raise ConfigError(f"objectives.{name} reconstructs masked tokens, but its pass '{pass_name}' masks "
                                  f"{_masks(spec)}; set both ratios of passes.{pass_name} > 0 (CAV-MAE: 0.75).")
