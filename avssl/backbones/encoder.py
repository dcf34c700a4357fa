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

from avssl.backbones.block import Block
from avssl.backbones.masking import drop_tokens
from avssl.backbones.spec import BackboneSpec
from avssl.backbones.tokenizers import SpectrogramPatchTokenizer, TubeletTokenizer

JOINT, AUDIO, VIDEO = "av", "a", "v"


class AudioVisualEncoder(nn.Module):
    """CAV-MAE-style encoder built from a `BackboneSpec`.

    Outputs of `forward_features` (a dict; later stages may add keys, never rename them):
        ``audio_tokens [B, Ka, D]``, ``video_tokens [B, Kv, D]``: per-modality streams after the
        shared layers; ``joint_tokens [B, Ka + Kv, D]``: joint stream (audio first);
        ``audio_embedding``, ``video_embedding``, ``joint_embedding [B, D]``: mean-pooled tokens;
        ``audio_idx_keep [B, Ka]``, ``audio_idx_mask [B, Na - Ka]`` and the video equivalents.
    """

    def __init__(self, spec: BackboneSpec):
        super().__init__()
        self.spec = spec
        d = spec.embed_dim
        self.audio_tokenizer = SpectrogramPatchTokenizer(spec.num_mel_bins, spec.audio_frames, spec.audio_patch, d)
        self.video_tokenizer = TubeletTokenizer(spec.num_frames, spec.frame_size, spec.video_patch, d)
        self.audio_modality = nn.Parameter(torch.zeros(1, 1, d))
        self.video_modality = nn.Parameter(torch.zeros(1, 1, d))

        def blocks(depth: int, streams: tuple[str, ...]) -> nn.ModuleList:
            return nn.ModuleList(
                Block(d, spec.num_heads, spec.mlp_ratio, spec.qkv_bias, spec.norm_eps, streams) for _ in range(depth)
            )

        self.audio_blocks = blocks(spec.modality_specific_depth, ("x",))
        self.video_blocks = blocks(spec.modality_specific_depth, ("x",))
        self.shared_blocks = blocks(spec.shared_depth, (JOINT, AUDIO, VIDEO))
        self.norm = nn.ModuleDict({s: nn.LayerNorm(d, eps=spec.norm_eps) for s in (JOINT, AUDIO, VIDEO)})
        self._init_weights()

    def _init_weights(self) -> None:
        # Initialisation policy of MAE / CAV-MAE: xavier-uniform linears and patch projections
        # (the latter viewed as linears), zero biases, N(0, 0.02) modality embeddings.
        nn.init.normal_(self.audio_modality, std=0.02)
        nn.init.normal_(self.video_modality, std=0.02)
        for proj in (self.audio_tokenizer.proj, self.video_tokenizer.proj):
            nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
            nn.init.zeros_(proj.bias)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def embed_dim(self) -> int:
        return self.spec.embed_dim

    def _run(self, x: Tensor, blocks: nn.ModuleList, stream: str) -> Tensor:
        for blk in blocks:
            x = blk(x, stream)
        return x

    def _specific(self, audio: Tensor, video: Tensor, mask_ratio_audio: float, mask_ratio_video: float):
        a = self.audio_tokenizer(audio) + self.audio_modality  # (B, Na, D)
        v = self.video_tokenizer(video) + self.video_modality  # (B, Nv, D)
        a, a_keep, a_mask = drop_tokens(a, mask_ratio_audio)  # (B, Ka, D)
        v, v_keep, v_mask = drop_tokens(v, mask_ratio_video)  # (B, Kv, D)
        a = self._run(a, self.audio_blocks, "x")
        v = self._run(v, self.video_blocks, "x")
        return a, v, (a_keep, a_mask, v_keep, v_mask)

    def forward_features(
        self, audio: Tensor, video: Tensor, mask_ratio_audio: float = 0.0, mask_ratio_video: float = 0.0
    ) -> dict[str, Tensor]:
        """Encodes a batch of clips.

        Args:
            audio: normalised fbank ``[B, 1, frames, mels]``.
            video: normalised frames ``[B, 3, T, S, S]``.
            mask_ratio_audio: fraction of audio tokens dropped before the encoder.
            mask_ratio_video: fraction of video tokens dropped before the encoder.
        """
        a, v, (a_keep, a_mask, v_keep, v_mask) = self._specific(audio, video, mask_ratio_audio, mask_ratio_video)
        joint = self.norm[JOINT](self._run(torch.cat([a, v], dim=1), self.shared_blocks, JOINT))
        a = self.norm[AUDIO](self._run(a, self.shared_blocks, AUDIO))
        v = self.norm[VIDEO](self._run(v, self.shared_blocks, VIDEO))
        return {
            "audio_tokens": a,
            "video_tokens": v,
            "joint_tokens": joint,
            "audio_embedding": a.mean(dim=1),
            "video_embedding": v.mean(dim=1),
            "joint_embedding": joint.mean(dim=1),
            "audio_idx_keep": a_keep,
            "audio_idx_mask": a_mask,
            "video_idx_keep": v_keep,
            "video_idx_mask": v_mask,
        }

    def encode_audio(self, audio: Tensor) -> Tensor:
        """Clip embedding from audio alone: ``[B, 1, frames, mels] -> [B, D]``."""
        a = self.audio_tokenizer(audio) + self.audio_modality
        a = self._run(self._run(a, self.audio_blocks, "x"), self.shared_blocks, AUDIO)
        return self.norm[AUDIO](a).mean(dim=1)

    def encode_video(self, video: Tensor) -> Tensor:
        """Clip embedding from video alone: ``[B, 3, T, S, S] -> [B, D]``."""
        v = self.video_tokenizer(video) + self.video_modality
        v = self._run(self._run(v, self.video_blocks, "x"), self.shared_blocks, VIDEO)
        return self.norm[VIDEO](v).mean(dim=1)

    def encode_joint(self, audio: Tensor, video: Tensor) -> Tensor:
        """Joint clip embedding (mean of the joint stream): ``-> [B, D]``."""
        a, v, _ = self._specific(audio, video, 0.0, 0.0)
        joint = self._run(torch.cat([a, v], dim=1), self.shared_blocks, JOINT)
        return self.norm[JOINT](joint).mean(dim=1)
