"""MAE decoder shared by audio and video (CAV-MAE).

CAV-MAE (arXiv:2210.07839, `YuanGongND/cav-mae@68fe8c2a src/models/cav_mae.py`,
`forward_decoder`): the joint encoder tokens are projected to the decoder width, mask tokens are
put back at the masked positions, decoder position and modality embeddings are added, one
transformer stack runs over the full audio + video sequence, and separate linear heads predict
audio and video patch values. Published setting: 512-d, 8 layers, 16 heads.

Shape letters: B batch, Na / Nv audio / video tokens, Ka / Kv visible tokens, E decoder width,
Pa / Pv values per audio / video patch.
"""

from __future__ import annotations

import torch
from lightly.models.utils import set_at_index
from torch import Tensor, nn

from avssl.backbones.block import Block
from avssl.backbones.positional import sincos_2d, sincos_3d
from avssl.backbones.tokenizers import SpectrogramPatchTokenizer, TubeletTokenizer


class MAEDecoder(nn.Module):
    """Reconstructs all audio and video patches from the visible joint tokens.

    Args:
        encoder_dim: width D of the encoder's joint tokens.
        audio_tokenizer: the encoder's audio tokenizer (token grid and patch size).
        video_tokenizer: the encoder's video tokenizer.
        decoder_dim: decoder width E.
        depth: decoder layers.
        num_heads: decoder attention heads.
        norm_eps: LayerNorm epsilon.
    """

    def __init__(
        self,
        encoder_dim: int,
        audio_tokenizer: SpectrogramPatchTokenizer,
        video_tokenizer: TubeletTokenizer,
        decoder_dim: int = 512,
        depth: int = 8,
        num_heads: int = 16,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        self.num_audio = audio_tokenizer.num_tokens
        self.num_video = video_tokenizer.num_tokens
        self.embed = nn.Linear(encoder_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.audio_modality = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.video_modality = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer("audio_pos", sincos_2d(decoder_dim, *audio_tokenizer.grid)[None], persistent=False)
        self.register_buffer("video_pos", sincos_3d(decoder_dim, *video_tokenizer.grid)[None], persistent=False)
        self.blocks = nn.ModuleList(Block(decoder_dim, num_heads, 4.0, True, norm_eps) for _ in range(depth))
        self.norm = nn.LayerNorm(decoder_dim, eps=norm_eps)
        self.audio_head = nn.Linear(decoder_dim, audio_tokenizer.patch_dim)
        self.video_head = nn.Linear(decoder_dim, video_tokenizer.patch_dim)
        for p in (self.mask_token, self.audio_modality, self.video_modality):
            nn.init.normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def _unshuffle(self, visible: Tensor, idx_keep: Tensor, num_tokens: int) -> Tensor:
        b, _, e = visible.shape
        full = self.mask_token.expand(b, num_tokens, e).to(visible.dtype)  # (B, N, E)
        return set_at_index(full, idx_keep, visible)

    def forward(self, joint_tokens: Tensor, audio_idx_keep: Tensor, video_idx_keep: Tensor) -> tuple[Tensor, Tensor]:
        """Predicts every patch.

        Args:
            joint_tokens: encoder joint stream ``[B, Ka + Kv, D]``, audio first.
            audio_idx_keep: positions of the visible audio tokens ``[B, Ka]``.
            video_idx_keep: positions of the visible video tokens ``[B, Kv]``.

        Returns:
            ``(audio_pred [B, Na, Pa], video_pred [B, Nv, Pv])``.
        """
        x = self.embed(joint_tokens)  # (B, Ka + Kv, E)
        ka = audio_idx_keep.shape[1]
        a = self._unshuffle(x[:, :ka], audio_idx_keep, self.num_audio) + self.audio_pos + self.audio_modality
        v = self._unshuffle(x[:, ka:], video_idx_keep, self.num_video) + self.video_pos + self.video_modality
        x = torch.cat([a, v], dim=1)  # (B, Na + Nv, E)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        return self.audio_head(x[:, : self.num_audio]), self.video_head(x[:, self.num_audio :])
