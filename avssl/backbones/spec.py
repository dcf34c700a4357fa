"""The resolved architecture of an audio-visual backbone.

`BackboneSpec` is what an export stores and what `load_backbone` rebuilds from: every size is
explicit, nothing depends on a recipe or on the data pipeline at load time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class BackboneSpec:
    """Architecture of an audio-visual encoder; `build_encoder` picks the class from `kind`.

    Every field added after the first exports has a default that reproduces the encoder those
    exports were written with, so a ``config.yaml`` without the newer keys still loads.

    Attributes:
        embed_dim: token width D.
        num_heads: attention heads per layer.
        modality_specific_depth: layers per modality before the shared layers (CAV-MAE: 11).
        shared_depth: layers shared by audio, video and the joint stream (CAV-MAE: 1).
        mlp_ratio: MLP hidden width as a multiple of D.
        qkv_bias: bias in the qkv projection (CAV-MAE/MAViL: True, XKD: False).
        norm_eps: LayerNorm epsilon (CAV-MAE uses torch's default 1e-5).
        audio_frames: fbank frames of one clip (time axis).
        num_mel_bins: fbank mel bins (frequency axis).
        audio_patch: (frequency, time) patch size of the spectrogram tokenizer.
        num_frames: video frames of one clip.
        frame_size: square frame side in pixels.
        video_patch: (time, height, width) tubelet size; time 1 means per-frame patches.
        kind: encoder layout: "cav_mae" (modality-specific then shared layers,
            `AudioVisualEncoder`), "shared" (one transformer for both modalities, `SharedEncoder`;
            depth = modality_specific_depth + shared_depth) or "bottleneck" (MBT,
            `BottleneckFusionEncoder`; modality_specific_depth layers before fusion,
            shared_depth fusion layers).
        drop_path: stochastic-depth rate of the last layer, growing linearly from 0 (0: off).
        layer_scale_init: LayerScale initial value (None: no LayerScale).
        attention: attention kernel, "sdpa" (fused) or "math" (matmul + softmax, benchmarks).
        audio_patch_stride: (frequency, time) stride of the audio patches; None means the patch
            size (no overlap).
        cls_token: prepend a learned class token per modality (XKD); it is not masked and not
            part of the ``*_tokens`` outputs.
        pos_embed: "sincos" (fixed, CAV-MAE) or "learned" (trunc-normal 0.02, XKD).
        num_bottlenecks: fusion bottleneck tokens of the "bottleneck" kind (MBT: 4).
        video_tower: CNN video tower of the "cnn" kind (`avssl.backbones.cnn.VIDEO_TOWERS`).
        audio_tower: CNN audio tower of the "cnn" kind (`avssl.backbones.cnn.AUDIO_TOWERS`).
        tower_width: channels of the first stage of the ``strided_conv`` towers (then 2x, 4x, 8x).
        tower_stem_stride: spatial stride of the ``strided_conv`` video tower's first layer; 1
            keeps the first layer at full resolution, which small objects in small frames need
            (docs/objectives.md, "Learning what transfers").
        video_pool: global pooling of the ``strided_conv`` video tower's last feature map, "avg"
            or "max"; max keeps an object that fills part of the frame from being averaged
            away by its background (docs/objectives.md, "Learning what transfers").
        audio_pool: the same for the ``strided_conv`` audio tower.
    """

    embed_dim: int = 768
    num_heads: int = 12
    modality_specific_depth: int = 11
    shared_depth: int = 1
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    norm_eps: float = 1e-5
    audio_frames: int = 1024
    num_mel_bins: int = 128
    audio_patch: list[int] = field(default_factory=lambda: [16, 16])
    num_frames: int = 1
    frame_size: int = 224
    video_patch: list[int] = field(default_factory=lambda: [1, 16, 16])
    kind: str = "cav_mae"
    drop_path: float = 0.0
    layer_scale_init: Optional[float] = None
    attention: str = "sdpa"
    audio_patch_stride: Optional[list[int]] = None
    cls_token: bool = False
    pos_embed: str = "sincos"
    num_bottlenecks: int = 4
    video_tower: str = "r2plus1d_18"
    audio_tower: str = "resnet18"
    tower_width: int = 32
    tower_stem_stride: int = 2  # 2: the tower of exports written before this field existed
    video_pool: str = "avg"  # avg: the towers of exports written before these fields existed
    audio_pool: str = "avg"
