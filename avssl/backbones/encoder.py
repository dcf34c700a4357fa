"""Audio-visual encoder: modality-specific layers followed by shared layers (CAV-MAE layout).

Gong et al., "Contrastive Audio-Visual Masked Autoencoder", ICLR 2023, arXiv:2210.07839;
reference `YuanGongND/cav-mae@68fe8c2a src/models/cav_mae.py` (`CAVMAE.forward_encoder`,
`forward_feat`). Published setting: ViT-B (768-d, 12 heads), 11 modality-specific layers per
modality + 1 shared layer, learned modality-type embeddings, fixed sin-cos positions, no CLS token.

The shared layers run three times, with per-stream LayerNorms: on the joint sequence (input to the
MAE decoder and the joint embedding), and on each modality alone (the per-modality embeddings used
by the contrastive loss and by probes). Masked tokens are dropped before the first layer.

Shape letters: B batch, Na / Nv audio / video tokens, Ka / Kv visible tokens, D width.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from avssl.backbones import parts
from avssl.backbones.masking import MaskSpec
from avssl.backbones.protocol import TOKEN_KEYS
from avssl.backbones.spec import BackboneSpec

JOINT, AUDIO, VIDEO = "av", "a", "v"


class AudioVisualEncoder(nn.Module):
    """CAV-MAE-style encoder built from a `BackboneSpec`.

    Outputs of `forward_features` (a dict; later stages may add keys, never rename them):
        ``audio_tokens [B, Ka, D]``, ``video_tokens [B, Kv, D]``: per-modality streams after the
        shared layers; ``joint_tokens [B, Ka + Kv, D]``: joint stream (audio first);
        ``audio_embedding``, ``video_embedding``, ``joint_embedding [B, D]``: mean-pooled tokens;
        ``audio_idx_keep [B, Ka]``, ``audio_idx_mask [B, Na - Ka]`` and the video equivalents.
        With ``spec.cls_token`` the class tokens are left out of all of these and returned as
        ``audio_cls_token``, ``video_cls_token [B, D]`` (per-modality streams).
    """

    OUTPUT_KEYS = TOKEN_KEYS
    MASKABLE = True

    def __init__(self, spec: BackboneSpec):
        super().__init__()
        self.spec = spec
        d = spec.embed_dim
        self.audio_tokenizer = parts.audio_tokenizer(spec)
        self.video_tokenizer = parts.video_tokenizer(spec)
        self.audio_modality = nn.Parameter(torch.zeros(1, 1, d))
        self.video_modality = nn.Parameter(torch.zeros(1, 1, d))
        total = spec.modality_specific_depth + spec.shared_depth
        self.audio_blocks = parts.blocks(spec, spec.modality_specific_depth, ("x",), 0, total)
        self.video_blocks = parts.blocks(spec, spec.modality_specific_depth, ("x",), 0, total)
        self.shared_blocks = parts.blocks(spec, spec.shared_depth, (JOINT, AUDIO, VIDEO), spec.modality_specific_depth, total)
        self.norm = nn.ModuleDict({s: nn.LayerNorm(d, eps=spec.norm_eps) for s in (JOINT, AUDIO, VIDEO)})
        parts.init_mae_weights(self)

    @property
    def embed_dim(self) -> int:
        return self.spec.embed_dim

    def _specific(self, audio: Tensor, video: Tensor, audio_mask: MaskSpec | None, video_mask: MaskSpec | None):
        a, a_keep, a_mask = parts.visible_tokens(self.audio_tokenizer, self.audio_modality, audio, audio_mask)  # (B, Pa + Ka, D)
        v, v_keep, v_mask = parts.visible_tokens(self.video_tokenizer, self.video_modality, video, video_mask)  # (B, Pv + Kv, D)
        return parts.run(a, self.audio_blocks), parts.run(v, self.video_blocks), (a_keep, a_mask, v_keep, v_mask)

    def _joint(self, a: Tensor, v: Tensor) -> Tensor:
        """Joint stream of both modalities without class tokens: ``[B, Ka + Kv, D]``."""
        joint = self.norm[JOINT](parts.run(torch.cat([a, v], dim=1), self.shared_blocks, JOINT))
        pa, pv = self.audio_tokenizer.num_prefix_tokens, self.video_tokenizer.num_prefix_tokens
        ka = a.shape[1] - pa
        return torch.cat([joint[:, pa : pa + ka], joint[:, pa + ka + pv :]], dim=1)

    def forward_features(
        self, audio: Tensor, video: Tensor, audio_mask: MaskSpec | None = None, video_mask: MaskSpec | None = None
    ) -> dict[str, Tensor]:
        """Encodes a batch of clips.

        Args:
            audio: normalised fbank ``[B, 1, frames, mels]``.
            video: normalised frames ``[B, 3, T, S, S]``.
            audio_mask: which audio tokens are dropped before the encoder (None: none).
            video_mask: which video tokens are dropped before the encoder (None: none).
        """
        a, v, keep_mask = self._specific(audio, video, audio_mask, video_mask)
        joint = self._joint(a, v)
        audio_out = parts.split_prefix(self.norm[AUDIO](parts.run(a, self.shared_blocks, AUDIO)), self.audio_tokenizer.num_prefix_tokens)
        video_out = parts.split_prefix(self.norm[VIDEO](parts.run(v, self.shared_blocks, VIDEO)), self.video_tokenizer.num_prefix_tokens)
        return parts.feature_dict(audio_out, video_out, joint, keep_mask)

    def encode_audio(self, audio: Tensor) -> Tensor:
        """Clip embedding from audio alone: ``[B, 1, frames, mels] -> [B, D]``."""
        a = self.audio_tokenizer.cls(self.audio_tokenizer(audio) + self.audio_modality)
        a = parts.run(parts.run(a, self.audio_blocks), self.shared_blocks, AUDIO)
        return parts.mean_pool(parts.split_prefix(self.norm[AUDIO](a), self.audio_tokenizer.num_prefix_tokens)[1])

    def encode_video(self, video: Tensor) -> Tensor:
        """Clip embedding from video alone: ``[B, 3, T, S, S] -> [B, D]``."""
        v = self.video_tokenizer.cls(self.video_tokenizer(video) + self.video_modality)
        v = parts.run(parts.run(v, self.video_blocks), self.shared_blocks, VIDEO)
        return parts.mean_pool(parts.split_prefix(self.norm[VIDEO](v), self.video_tokenizer.num_prefix_tokens)[1])

    def encode_joint(self, audio: Tensor, video: Tensor) -> Tensor:
        """Joint clip embedding (mean of the joint stream): ``-> [B, D]``."""
        a, v, _ = self._specific(audio, video, None, None)
        return parts.mean_pool(self._joint(a, v))
