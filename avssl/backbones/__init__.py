"""Backbone parts: tokenizers, transformer block, masking, encoders, decoder, sizes and presets."""

from avssl.backbones.decoder import MAEDecoder
from avssl.backbones.encoder import AudioVisualEncoder
from avssl.backbones.fusion import BottleneckFusionEncoder
from avssl.backbones.registry import BACKBONE_PRESETS, ENCODER_KINDS, build_encoder, create_backbone, list_backbones
from avssl.backbones.shared import SharedEncoder
from avssl.backbones.sizes import BACKBONE_SIZES
from avssl.backbones.spec import BackboneSpec

__all__ = [
    "AudioVisualEncoder",
    "BACKBONE_PRESETS",
    "BACKBONE_SIZES",
    "BackboneSpec",
    "BottleneckFusionEncoder",
    "ENCODER_KINDS",
    "MAEDecoder",
    "SharedEncoder",
    "build_encoder",
    "create_backbone",
    "list_backbones",
]
