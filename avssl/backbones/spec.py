"""The resolved architecture of an audio-visual backbone.

`BackboneSpec` is what an export stores and what `load_backbone` rebuilds from: every size is
explicit, nothing depends on a recipe or on the data pipeline at load time.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class BackboneSpec:
    """Architecture of `AudioVisualEncoder` (CAV-MAE layout: modality-specific then shared layers).

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
