"""Attention bottleneck fusion (MBT).

Nagrani et al., "Attention Bottlenecks for Multimodal Fusion", NeurIPS 2021, arXiv:2107.00135
(`google-research/scenic:scenic/projects/mbt`). Audio and video keep separate transformer weights
throughout. The first ``modality_specific_depth`` layers see one modality only; in each of the
following ``shared_depth`` fusion layers, each modality attends over its own tokens plus ``B``
shared bottleneck tokens, and the bottleneck tokens the two modalities produce are averaged.
Cross-modal information therefore flows only through the bottlenecks. Published setting
(`configs/audioset/balanced_audioset_base.py`): ViT-B, fusion from layer 8 of 12, 4 bottlenecks.

Deviations: MBT is supervised and averages per-modality logits. Here ``joint_tokens`` are the
audio and video outputs concatenated (each with its final norm), so MAE decoders and joint
embeddings work as they do for the other encoders. Single-modality encoding (`encode_audio`)
runs the fusion layers with the bottlenecks updated by audio alone.

Shape letters: B batch, Na / Nv audio / video tokens, Ka / Kv visible tokens, Z bottleneck tokens,
D width.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from avssl.backbones import parts
from avssl.backbones.masking import MaskSpec
from avssl.backbones.protocol import TOKEN_KEYS
from avssl.backbones.spec import BackboneSpec

AUDIO, VIDEO = "a", "v"


class BottleneckFusionEncoder(nn.Module):
    """MBT encoder built from a `BackboneSpec` with ``kind="bottleneck"``.

    Outputs of `forward_features`: the keys of `AudioVisualEncoder.forward_features`, plus
    ``bottleneck_tokens [B, Z, D]`` (after the last fusion layer).

    Raises:
        ValueError: ``num_bottlenecks`` is negative.
    """

    OUTPUT_KEYS = TOKEN_KEYS | {"bottleneck_tokens"}
    MASKABLE = True

    def __init__(self, spec: BackboneSpec):
        super().__init__()
        if spec.num_bottlenecks < 0:
            raise ValueError(f"num_bottlenecks={spec.num_bottlenecks}: must be >= 0 (MBT: 4)")
        self.spec = spec
        d = spec.embed_dim
        total = spec.modality_specific_depth + spec.shared_depth
        self.audio_tokenizer = parts.audio_tokenizer(spec)
        self.video_tokenizer = parts.video_tokenizer(spec)
        self.audio_modality = nn.Parameter(torch.zeros(1, 1, d))
        self.video_modality = nn.Parameter(torch.zeros(1, 1, d))
        self.audio_blocks = parts.blocks(spec, total)
        self.video_blocks = parts.blocks(spec, total)
        self.bottleneck = nn.Parameter(torch.zeros(1, spec.num_bottlenecks, d))  # (1, Z, D)
        self.norm = nn.ModuleDict({s: nn.LayerNorm(d, eps=spec.norm_eps) for s in (AUDIO, VIDEO)})
        parts.init_mae_weights(self)
        nn.init.normal_(self.bottleneck, std=0.02)  # MBT initialises the bottlenecks N(0, 0.02)

    @property
    def embed_dim(self) -> int:
        return self.spec.embed_dim

    def _encode(self, a: Optional[Tensor], v: Optional[Tensor]) -> tuple[Optional[Tensor], Optional[Tensor], Tensor]:
        """Runs the layers on either or both streams ``[B, P + K, D]``; returns them and the bottlenecks."""
        fusion_start = self.spec.modality_specific_depth
        z = self.bottleneck.expand((a if a is not None else v).shape[0], -1, -1)  # (B, Z, D)
        nz = z.shape[1]
        for i, (blk_a, blk_v) in enumerate(zip(self.audio_blocks, self.video_blocks)):
            if i < fusion_start:
                a = blk_a(a) if a is not None else None
                v = blk_v(v) if v is not None else None
                continue
            updates = []
            if a is not None:
                a, za = blk_a(torch.cat([a, z], dim=1)).split([a.shape[1], nz], dim=1)
                updates.append(za)
            if v is not None:
                v, zv = blk_v(torch.cat([v, z], dim=1)).split([v.shape[1], nz], dim=1)
                updates.append(zv)
            z = torch.stack(updates).mean(dim=0)  # (B, Z, D): the modalities share one bottleneck
        return a, v, z

    def _tokens(self, audio: Tensor, video: Tensor, audio_mask: MaskSpec | None, video_mask: MaskSpec | None):
        a, a_keep, a_mask = parts.visible_tokens(self.audio_tokenizer, self.audio_modality, audio, audio_mask)  # (B, Pa + Ka, D)
        v, v_keep, v_mask = parts.visible_tokens(self.video_tokenizer, self.video_modality, video, video_mask)  # (B, Pv + Kv, D)
        return a, v, (a_keep, a_mask, v_keep, v_mask)

    def forward_features(
        self, audio: Tensor, video: Tensor, audio_mask: MaskSpec | None = None, video_mask: MaskSpec | None = None
    ) -> dict[str, Tensor]:
        """Encodes a batch of clips (arguments as in `AudioVisualEncoder.forward_features`)."""
        a, v, keep_mask = self._tokens(audio, video, audio_mask, video_mask)
        a, v, z = self._encode(a, v)
        audio_out = parts.split_prefix(self.norm[AUDIO](a), self.audio_tokenizer.num_prefix_tokens)
        video_out = parts.split_prefix(self.norm[VIDEO](v), self.video_tokenizer.num_prefix_tokens)
        joint = torch.cat([audio_out[1], video_out[1]], dim=1)  # (B, Ka + Kv, D)
        return {**parts.feature_dict(audio_out, video_out, joint, keep_mask), "bottleneck_tokens": z}

    def encode_audio(self, audio: Tensor) -> Tensor:
        """Clip embedding from audio alone: ``[B, 1, frames, mels] -> [B, D]``."""
        a = self.audio_tokenizer.cls(self.audio_tokenizer(audio) + self.audio_modality)
        a = self.norm[AUDIO](self._encode(a, None)[0])
        return parts.mean_pool(parts.split_prefix(a, self.audio_tokenizer.num_prefix_tokens)[1])

    def encode_video(self, video: Tensor) -> Tensor:
        """Clip embedding from video alone: ``[B, 3, T, S, S] -> [B, D]``."""
        v = self.video_tokenizer.cls(self.video_tokenizer(video) + self.video_modality)
        v = self.norm[VIDEO](self._encode(None, v)[1])
        return parts.mean_pool(parts.split_prefix(v, self.video_tokenizer.num_prefix_tokens)[1])

    def encode_joint(self, audio: Tensor, video: Tensor) -> Tensor:
        """Joint clip embedding (mean of both streams after fusion): ``-> [B, D]``."""
        return self.forward_features(audio, video)["joint_embedding"]
