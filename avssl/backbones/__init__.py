"""Backbone parts: tokenizers, transformer block, masking, encoders, decoder and sizes."""

from avssl.backbones.decoder import MAEDecoder
from avssl.backbones.encoder import AudioVisualEncoder
from avssl.backbones.sizes import BACKBONE_SIZES
from avssl.backbones.spec import BackboneSpec

__all__ = ["AudioVisualEncoder", "BackboneSpec", "BACKBONE_SIZES", "MAEDecoder"]
