"""Encoder kinds and named backbone presets.

`build_encoder(spec)` turns a `BackboneSpec` into the encoder class its ``kind`` names; export,
loading and the LightningModule all go through it. `create_backbone("<family>_<size>")` builds a
published layout at one of the sizes of `BACKBONE_SIZES` (tiny, small, base, large):

- ``cav_mae``: CAV-MAE (arXiv:2210.07839): 11 modality-specific + 1 shared layer at base, 1024 x
  128 fbank, one 224 px frame, sin-cos positions, no class token.
- ``shared`` (alias ``vatt_shared``): VATT's modality-agnostic UniT (arXiv:2104.11178): one stack
  of the size's full depth for both modalities, CAV-MAE inputs.
- ``mbt``: MBT (arXiv:2107.00135, scenic `configs/audioset/balanced_audioset_base.py`): fusion
  from layer 8 of 12 (two thirds of the depth at other sizes), 4 bottlenecks, 8 s of 100 fps x
  128-mel spectrogram, 32 frames with 2 x 16 x 16 tubelets.
- CNN towers (kind ``cnn``, `avssl.backbones.cnn`), one size each: ``r2plus1d18_resnet18``
  (R(2+1)D-18 video + 1-channel ResNet-18 audio: XDC, CrissCross) and ``r2plus1d18_l3vgg`` (the
  L3/AVC VGG-style audio network); ``strided_conv``: avssl's small strided-conv pair that the
  default recipe trains on 2 CPU cores (its video tower global max pool, audio average).
- ``xkd``: XKD's encoders (arXiv:2211.13929, `pritamqu/XKD@806c75d0` `codes/train/models/xkd.py`
  and its configs): separate audio and video ViTs (no shared layer), qkv without bias, 80 mels x
  448 frames in 4 x 16 patches (20 x 28 = 560 tokens), 32 frames of 112 px in 4 x 16 x 16
  tubelets (392 tokens), class tokens and learned positions.

Examples:
    >>> import avssl
    >>> model = avssl.create_backbone("xkd_tiny")
    >>> model = avssl.create_backbone("mbt_base", num_bottlenecks=8)
"""

from __future__ import annotations

import fnmatch
from dataclasses import fields
from typing import Any, Callable

import torch
from torch import nn

from avssl.backbones.cnn import CNNAudioVisualEncoder
from avssl.backbones.encoder import AudioVisualEncoder
from avssl.backbones.fusion import BottleneckFusionEncoder
from avssl.backbones.shared import SharedEncoder
from avssl.backbones.sizes import BACKBONE_SIZES
from avssl.backbones.spec import BackboneSpec

ENCODER_KINDS: dict[str, type[nn.Module]] = {
    "cav_mae": AudioVisualEncoder,
    "shared": SharedEncoder,
    "bottleneck": BottleneckFusionEncoder,
    "cnn": CNNAudioVisualEncoder,
}


def build_encoder(spec: BackboneSpec) -> nn.Module:
    """The encoder of ``spec.kind`` built from ``spec``.

    Raises:
        ValueError: unknown ``spec.kind``.
    """
    if spec.kind not in ENCODER_KINDS:
        raise ValueError(f"backbone kind={spec.kind!r} is unknown; valid kinds: {sorted(ENCODER_KINDS)}")
    return ENCODER_KINDS[spec.kind](spec)


def build_seeded_encoder(spec: BackboneSpec, seed: int) -> nn.Module:
    """`build_encoder` with its initialisation drawn from ``torch.manual_seed(seed)``.

    The global CPU random state is forked, so building it leaves the run's own random stream (data
    order, masking, dropout) where it was. This is the random-init baseline of the evaluation
    callbacks: the same architecture as the trained backbone, before any training.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_encoder(spec)


def _cav_mae(size: dict[str, int]) -> dict[str, Any]:
    return {"kind": "cav_mae", **size}


def _shared(size: dict[str, int]) -> dict[str, Any]:
    return {"kind": "shared", **size}


def _mbt(size: dict[str, int]) -> dict[str, Any]:
    depth = size["modality_specific_depth"] + size["shared_depth"]
    before = round(depth * 8 / 12)  # MBT-B fuses from layer 8 of 12
    return {
        **size,
        "kind": "bottleneck",
        "modality_specific_depth": before,
        "shared_depth": depth - before,
        "num_bottlenecks": 4,
        "audio_frames": 800,  # (100, 128) per second x 8 s
        "num_frames": 32,
        "video_patch": [2, 16, 16],
    }


def _xkd(size: dict[str, int]) -> dict[str, Any]:
    return {
        **size,
        "kind": "cav_mae",
        "modality_specific_depth": size["modality_specific_depth"] + size["shared_depth"],
        "shared_depth": 0,  # XKD has no shared layer: two independent ViTs
        "qkv_bias": False,
        "num_mel_bins": 80,
        "audio_frames": 448,
        "audio_patch": [4, 16],
        "num_frames": 32,
        "frame_size": 112,
        "video_patch": [4, 16, 16],
        "cls_token": True,
        "pos_embed": "learned",
    }


BACKBONE_FAMILIES: dict[str, Callable[[dict[str, int]], dict[str, Any]]] = {
    "cav_mae": _cav_mae,
    "shared": _shared,
    "vatt_shared": _shared,
    "mbt": _mbt,
    "xkd": _xkd,
}

# CNN towers come in one size each: the 512-d pooled features of the published networks.
CNN_PRESETS: dict[str, dict[str, Any]] = {
    "r2plus1d18_resnet18": {"kind": "cnn", "embed_dim": 512, "video_tower": "r2plus1d_18", "audio_tower": "resnet18"},
    "r2plus1d18_l3vgg": {"kind": "cnn", "embed_dim": 512, "video_tower": "r2plus1d_18", "audio_tower": "l3_vgg"},
    # avssl's CPU-sized pair (the default recipe): 32, 64, 128, 256 channels; the video tower max-pools
    # its last map, so a small object is not averaged into its background (docs/objectives.md)
    "strided_conv": {"kind": "cnn", "embed_dim": 256, "video_tower": "strided_conv", "audio_tower": "strided_conv", "tower_width": 32,
                     "video_pool": "max"},
}

BACKBONE_PRESETS: list[str] = [f"{family}_{size}" for family in BACKBONE_FAMILIES for size in BACKBONE_SIZES] + list(CNN_PRESETS)


def list_backbones(pattern: str = "*") -> list[str]:
    """Names of the presets `create_backbone` builds, those matching a shell-style `pattern`.

    Examples:
        >>> avssl.list_backbones("xkd_*")
        ['xkd_tiny', 'xkd_small', 'xkd_base', 'xkd_large']
    """
    return [name for name in BACKBONE_PRESETS if fnmatch.fnmatchcase(name, pattern)]


def preset_spec(name: str, **overrides: Any) -> BackboneSpec:
    """The `BackboneSpec` of a preset such as ``"mbt_base"``, with fields replaced by ``overrides``.

    Raises:
        ValueError: unknown preset name or override key (the message lists the valid ones).
    """
    family, _, size = name.rpartition("_")
    if name in CNN_PRESETS:
        preset = dict(CNN_PRESETS[name])
    elif family in BACKBONE_FAMILIES and size in BACKBONE_SIZES:
        preset = BACKBONE_FAMILIES[family](dict(BACKBONE_SIZES[size]))
    else:
        raise ValueError(f"unknown backbone {name!r}; valid names: {BACKBONE_PRESETS}")
    known = {f.name for f in fields(BackboneSpec)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown backbone override(s) {unknown} for {name!r}; valid keys: {sorted(known)}")
    return BackboneSpec(**{**preset, **overrides})


def create_backbone(name: str, **overrides: Any) -> nn.Module:
    """A randomly initialised encoder of a named preset (see the module docstring).

    Args:
        name: ``"<family>_<size>"``, e.g. ``"cav_mae_base"``, ``"xkd_small"``, ``"mbt_tiny"``, or
            a CNN preset, ``"r2plus1d18_resnet18"`` (XDC, CrissCross) or ``"r2plus1d18_l3vgg"``.
        **overrides: `BackboneSpec` fields to change, e.g. ``drop_path=0.1``.

    Raises:
        ValueError: unknown name or override key.
    """
    return build_encoder(preset_spec(name, **overrides))
