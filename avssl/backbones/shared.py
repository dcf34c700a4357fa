"""Modality-agnostic encoder: one transformer shared by audio and video (VATT's "UniT").

Akbari et al., "VATT: Transformers for Multimodal Self-Supervised Learning from Raw Video, Audio
and Text", NeurIPS 2021, arXiv:2104.11178 (`google-research/google-research:vatt`,
`configs/unified.py::UniTBase`): a single ViT-B stack encodes every modality; only the tokenizers
(and here the modality-type embeddings and final norms) are modality-specific.

Deviations: VATT tokenizes raw waveforms (and text); we keep this project's spectrogram and
tubelet tokenizers. The joint stream (the same stack run on audio + video tokens together) is ours,
so the output contract matches `AudioVisualEncoder`. Depth is ``modality_specific_depth +
shared_depth`` of the spec, so the named sizes keep their layer count.

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


class SharedEncoder(nn.Module):
    """One transformer for both modalities, built from a `BackboneSpec` with ``kind="shared"``.

    Outputs of `forward_features`: the same keys as `AudioVisualEncoder.forward_features`;
    ``joint_tokens [B, Ka + Kv, D]`` comes from running the shared stack on the concatenated
    audio and video tokens.
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
        self.blocks = parts.blocks(spec, spec.modality_specific_depth + spec.shared_depth)
        self.norm = nn.ModuleDict({s: nn.LayerNorm(d, eps=spec.norm_eps) for s in (JOINT, AUDIO, VIDEO)})
        parts.init_mae_weights(self)

    @property
    def embed_dim(self) -> int:
        return self.spec.embed_dim

    def _tokens(self, audio: Tensor, video: Tensor, audio_mask: MaskSpec | None, video_mask: MaskSpec | None):
        a, a_keep, a_mask = parts.visible_tokens(self.audio_tokenizer, self.audio_modality, audio, audio_mask)  # (B, Pa + Ka, D)
        v, v_keep, v_mask = parts.visible_tokens(self.video_tokenizer, self.video_modality, video, video_mask)  # (B, Pv + Kv, D)
        return a, v, (a_keep, a_mask, v_keep, v_mask)

    def _joint(self, a: Tensor, v: Tensor) -> Tensor:
        joint = self.norm[JOINT](parts.run(torch.cat([a, v], dim=1), self.blocks))  # (B, Pa + Ka + Pv + Kv, D)
        pa, pv = self.audio_tokenizer.num_prefix_tokens, self.video_tokenizer.num_prefix_tokens
        ka = a.shape[1] - pa
        return torch.cat([joint[:, pa : pa + ka], joint[:, pa + ka + pv :]], dim=1)  # (B, Ka + Kv, D)

    def forward_features(
        self, audio: Tensor, video: Tensor, audio_mask: MaskSpec | None = None, video_mask: MaskSpec | None = None
    ) -> dict[str, Tensor]:
        """Encodes a batch of clips (arguments as in `AudioVisualEncoder.forward_features`)."""
        a, v, keep_mask = self._tokens(audio, video, audio_mask, video_mask)
        joint = self._joint(a, v)
        audio_out = parts.split_prefix(self.norm[AUDIO](parts.run(a, self.blocks)), self.audio_tokenizer.num_prefix_tokens)
        video_out = parts.split_prefix(self.norm[VIDEO](parts.run(v, self.blocks)), self.video_tokenizer.num_prefix_tokens)
        return parts.feature_dict(audio_out, video_out, joint, keep_mask)

    def encode_audio(self, audio: Tensor) -> Tensor:
        """Clip embedding from audio alone: ``[B, 1, frames, mels] -> [B, D]``."""
        a = self.audio_tokenizer.cls(self.audio_tokenizer(audio) + self.audio_modality)
        a = self.norm[AUDIO](parts.run(a, self.blocks))
        return parts.mean_pool(parts.split_prefix(a, self.audio_tokenizer.num_prefix_tokens)[1])

    def encode_video(self, video: Tensor) -> Tensor:
        """Clip embedding from video alone: ``[B, 3, T, S, S] -> [B, D]``."""
        v = self.video_tokenizer.cls(self.video_tokenizer(video) + self.video_modality)
        v = self.norm[VIDEO](parts.run(v, self.blocks))
        return parts.mean_pool(parts.split_prefix(v, self.video_tokenizer.num_prefix_tokens)[1])

    def encode_joint(self, audio: Tensor, video: Tensor) -> Tensor:
        """Joint clip embedding (mean of the joint stream): ``-> [B, D]``."""
        a, v, _ = self._tokens(audio, video, None, None)
        return parts.mean_pool(self._joint(a, v))
