"""The resolved architecture of an audio-visual backbone.

`BackboneSpec` is what an export stores and what `load_backbone` rebuilds from: every size is
explicit, nothing depends on a recipe or on the data pipeline at load time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from avssl.limits import MAX_AUDIO_FRAMES, MAX_FRAME_SIZE, MAX_MEL_BINS, MAX_VIDEO_FRAMES
from avssl.schema import each, in_range

MAX_DEPTH = 64  # layers of one stack (published encoders: 12-48)


@dataclass
class BackboneSpec:
    """Architecture of an audio-visual encoder; `build_encoder` picks the class from `kind`.

    Every field added after the first exports has a default that reproduces the encoder those
    exports were written with, so a ``config.yaml`` without the newer keys still loads. Each
    number declares its range (`avssl.schema`): the backbone section of a recipe and the
    ``config.yaml`` of an export are checked against it before anything is built.

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

    embed_dim: int = field(default=768, metadata=in_range(1, 16_384))
    num_heads: int = field(default=12, metadata=in_range(1, 256))
    modality_specific_depth: int = field(default=11, metadata=in_range(0, MAX_DEPTH))
    shared_depth: int = field(default=1, metadata=in_range(0, MAX_DEPTH))
    mlp_ratio: float = field(default=4.0, metadata=in_range(0.0, 64.0, include_low=False))
    qkv_bias: bool = True
    norm_eps: float = field(default=1e-5, metadata=in_range(0.0, 1.0, include_low=False))
    audio_frames: int = field(default=1024, metadata=in_range(1, MAX_AUDIO_FRAMES))
    num_mel_bins: int = field(default=128, metadata=in_range(1, MAX_MEL_BINS))
    audio_patch: list[int] = field(default_factory=lambda: [16, 16], metadata=each(in_range(1, MAX_AUDIO_FRAMES), length=2))
    num_frames: int = field(default=1, metadata=in_range(1, MAX_VIDEO_FRAMES))
    frame_size: int = field(default=224, metadata=in_range(1, MAX_FRAME_SIZE))
    video_patch: list[int] = field(default_factory=lambda: [1, 16, 16], metadata=each(in_range(1, MAX_FRAME_SIZE), length=3))
    kind: str = "cav_mae"
    drop_path: float = field(default=0.0, metadata=in_range(0.0, 1.0, include_high=False))
    layer_scale_init: Optional[float] = field(default=None, metadata=in_range(0.0, 10.0, include_low=False))
    attention: str = "sdpa"
    audio_patch_stride: Optional[list[int]] = field(default=None, metadata=each(in_range(1, MAX_AUDIO_FRAMES), length=2))
    cls_token: bool = False
    pos_embed: str = "sincos"
    num_bottlenecks: int = field(default=4, metadata=in_range(0, 1024))
    video_tower: str = "r2plus1d_18"
    audio_tower: str = "resnet18"
    tower_width: int = field(default=32, metadata=in_range(1, 4096))
    tower_stem_stride: int = field(default=2, metadata=in_range(1, 64))  # 2: the tower of exports written before this field existed
    video_pool: str = "avg"  # avg: the towers of exports written before these fields existed
    audio_pool: str = "avg"
