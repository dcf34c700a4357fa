"""The ``backbone`` section of a run's config: a named preset or size, then overrides of its fields.

A backbone field is declared once, in `BackboneSpec` (type, default, meaning). This section holds
what picks the starting architecture (``preset`` or ``size``, and ``init_from``) plus one optional
override per `BackboneSpec` field, generated from the spec: ``None`` keeps the preset's value. The
spec's input sizes (fbank frames and mel bins, video frames and frame size) are not overrides:
they are what ``data.preprocessing`` feeds the backbone, so they are taken from there.

Examples:
    A recipe's section, or the same as overrides (``backbone.preset=xkd_tiny backbone.embed_dim=64``)::

        backbone:
          preset: xkd_tiny
          embed_dim: 64
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field, fields, make_dataclass, replace
from typing import Any, Optional

from avssl.backbones.block import ATTENTION_KERNELS
from avssl.backbones.cnn import AUDIO_TOWERS, TOWER_POOLS, VIDEO_TOWERS
from avssl.backbones.registry import BACKBONE_PRESETS, ENCODER_KINDS, preset_spec
from avssl.backbones.sizes import BACKBONE_SIZES
from avssl.backbones.spec import BackboneSpec
from avssl.backbones.tokenizers import POS_EMBEDS, position_table_problem
from avssl.errors import ConfigError
from avssl.schema import one_of
from datamodules.preprocessing import Preprocessing

# BackboneSpec fields set by data.preprocessing (the same names there), never by the backbone section.
INPUT_FIELDS = ("audio_frames", "num_mel_bins", "num_frames", "frame_size")

# The choices of the string fields, which live in the registries; every number's range is
# declared on its BackboneSpec field.
_CHOICES: dict[str, dict[str, Any]] = {
    "kind": one_of(ENCODER_KINDS),
    "attention": one_of(ATTENTION_KERNELS),
    "pos_embed": one_of(POS_EMBEDS),
    "video_tower": one_of(VIDEO_TOWERS),
    "audio_tower": one_of(AUDIO_TOWERS),
    "video_pool": one_of(TOWER_POOLS),
    "audio_pool": one_of(TOWER_POOLS),
}


@dataclass
class _Choice:
    # a registered preset (--list-presets), e.g. xkd_base, mbt_tiny, strided_conv; None: backbone.size
    preset: Optional[str] = field(default=None, metadata=one_of(BACKBONE_PRESETS))
    # without a preset: the cav_mae layout at this size (None: base); with one, the preset's size or None
    size: Optional[str] = field(default=None, metadata=one_of(BACKBONE_SIZES))
    # an avssl export (e.g. from `python -m avssl.convert`) whose weights start the backbone; its
    # architecture must match this section's (the MAE decoder and heads still start from scratch)
    init_from: Optional[str] = None


def _overrides() -> list[tuple[str, Any, Any]]:
    """One ``Optional[<spec type>] = None`` field per `BackboneSpec` field but the input sizes."""
    types = typing.get_type_hints(BackboneSpec)
    return [(f.name, Optional[types[f.name]], field(default=None, metadata=_CHOICES.get(f.name, f.metadata)))
            for f in fields(BackboneSpec) if f.name not in INPUT_FIELDS]


_OVERRIDE_FIELDS = _overrides()
OVERRIDES = [name for name, _, _ in _OVERRIDE_FIELDS]  # the backbone keys besides preset, size and init_from
_BackboneOverrides = make_dataclass("_BackboneOverrides", _OVERRIDE_FIELDS, bases=(_Choice,))


@dataclass
class BackboneConfig(_BackboneOverrides):  # type: ignore[misc, valid-type]
    """The encoder: a named preset or size, and any of its fields overridden (docs/backbones.md).

    ``preset`` names an entry of `BACKBONE_PRESETS` (``xkd_base``, ``mbt_tiny``, ``strided_conv``,
    ...); without one, ``size`` (default base) of the cav_mae layout. Every other key is a
    `BackboneSpec` field (``embed_dim``, ``kind``, ``video_tower``, ...) that replaces the preset's
    value when set; the input sizes come from ``data.preprocessing``.
    """

    def resolve(self, pre: Preprocessing) -> BackboneSpec:
        """The full architecture for inputs shaped by `pre`.

        Raises:
            ConfigError: a preset and a different size, or patches and heads that do not fit the inputs.
        """
        if self.preset is not None and self.size is not None and not self.preset.endswith(f"_{self.size}"):
            raise ConfigError(f"backbone.preset={self.preset} and backbone.size={self.size}: the preset sets its own "
                              f"size; keep one of them (backbone.size=null, or backbone.preset=null for the cav_mae "
                              f"layout at size {self.size}) or name a preset of size {self.size} (--list-presets).")
        base = preset_spec(self.preset or f"cav_mae_{self.size or 'base'}")
        set_here = {name: getattr(self, name) for name in OVERRIDES if getattr(self, name) is not None}
        overrides = {name: list(v) if isinstance(v, list) else v for name, v in set_here.items()}  # the spec owns its lists
        spec = replace(base, **overrides, **{name: getattr(pre, name) for name in INPUT_FIELDS})
        if spec.kind != "cnn":  # CNN towers pool globally: any input size, no patches or heads
            _check_transformer_sizes(spec)
        return spec


def _check_transformer_sizes(spec: BackboneSpec) -> None:
    """Patches must tile the inputs, heads must divide the width, and the position tables must stay small."""
    if spec.audio_patch_stride is None:  # overlapping patches cover any length >= the patch
        _check_divisible("data.preprocessing.num_mel_bins", spec.num_mel_bins, "backbone.audio_patch[0]", spec.audio_patch[0])
        _check_divisible("data.preprocessing.audio_frames", spec.audio_frames, "backbone.audio_patch[1]", spec.audio_patch[1])
    _check_divisible("data.preprocessing.num_frames", spec.num_frames, "backbone.video_patch[0]", spec.video_patch[0])
    _check_divisible("data.preprocessing.frame_size", spec.frame_size, "backbone.video_patch[1]", spec.video_patch[1])
    _check_divisible("data.preprocessing.frame_size", spec.frame_size, "backbone.video_patch[2]", spec.video_patch[2])
    _check_divisible("backbone.embed_dim", spec.embed_dim, "backbone.num_heads", spec.num_heads)
    too_big = position_table_problem(spec)
    if too_big:
        raise ConfigError(f"backbone: {too_big}; use larger patches (backbone.audio_patch, backbone.video_patch), "
                          "smaller inputs (data.preprocessing) or a lower backbone.embed_dim.")


def _check_divisible(key: str, value: int, by_key: str, by: int) -> None:
    if value % by != 0:
        raise ConfigError(f"{key}={value} is not divisible by {by_key}={by}; change one of them so it is.")
