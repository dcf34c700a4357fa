"""Tokenizers: spectrogram patches for audio, frame patches or tubelets for video.

Both follow CAV-MAE (Gong et al., ICLR 2023, arXiv:2210.07839, `YuanGongND/cav-mae@68fe8c2a
src/models/cav_mae.py`): a strided convolution embeds non-overlapping patches, then fixed 2-D
sin-cos position embeddings are added. The audio fbank ``[B, 1, frames, mels]`` is transposed to
``[B, 1, mels, frames]`` first, so tokens are ordered frequency-major exactly as CAV-MAE orders
them (grid 8 x 64 for 128 mels x 1024 frames). Video patches are tubelets ``(t, h, w)``; ``t = 1``
is CAV-MAE's per-frame patch embedding.

Shape letters: B batch, N tokens, D width, P values per patch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from avssl.backbones.positional import sincos_2d, sincos_3d


def _grid_size(length: int, patch: int, what: str) -> int:
    if length % patch != 0:
        raise ValueError(
            f"{what}={length} is not divisible by the patch size {patch}; "
            f"choose a {what} that is a multiple of {patch} or change the patch size."
        )
    return length // patch


def spectrogram_patches(audio: Tensor, patch: tuple[int, int]) -> Tensor:
    """Patch values in token order: ``[B, 1, F, M] -> [B, N, pf * pt]`` (MAE targets)."""
    b, _, frames, mels = audio.shape
    pf, pt = patch
    x = audio.transpose(2, 3).reshape(b, mels // pf, pf, frames // pt, pt)  # (B, gf, pf, gt, pt)
    return torch.einsum("bfpgq->bfgpq", x).reshape(b, -1, pf * pt)


def tubelet_patches(video: Tensor, patch: tuple[int, int, int]) -> Tensor:
    """Tubelet values in token order: ``[B, 3, T, S, S] -> [B, N, t * h * w * 3]`` (MAE targets)."""
    b, c, t, h, w = video.shape
    pt, ph, pw = patch
    x = video.reshape(b, c, t // pt, pt, h // ph, ph, w // pw, pw)
    return torch.einsum("bctqhpwr->bthwqprc", x).reshape(b, -1, pt * ph * pw * c)


class SpectrogramPatchTokenizer(nn.Module):
    """Embeds a log-mel spectrogram as a sequence of patch tokens.

    Args:
        num_mel_bins: mel bins M of the input.
        audio_frames: fbank frames F of the input.
        patch: (frequency, time) patch size.
        embed_dim: token width D.

    Input ``[B, 1, F, M]`` -> tokens ``[B, N, D]`` with ``N = (M / pf) * (F / pt)``.
    """

    def __init__(self, num_mel_bins: int, audio_frames: int, patch: tuple[int, int], embed_dim: int):
        super().__init__()
        self.patch = tuple(patch)
        self.grid = (_grid_size(num_mel_bins, patch[0], "num_mel_bins"), _grid_size(audio_frames, patch[1], "audio_frames"))
        self.input_shape = (1, audio_frames, num_mel_bins)
        self.proj = nn.Conv2d(1, embed_dim, kernel_size=self.patch, stride=self.patch)
        self.register_buffer("pos_embed", sincos_2d(embed_dim, *self.grid)[None], persistent=False)

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def patch_dim(self) -> int:
        return self.patch[0] * self.patch[1]

    def _check(self, audio: Tensor) -> None:
        if tuple(audio.shape[1:]) != self.input_shape:
            raise ValueError(
                f"audio input of shape {tuple(audio.shape)} does not match the model's "
                f"[B, {', '.join(map(str, self.input_shape))}] ([B, 1, frames, mels])"
            )

    def forward(self, audio: Tensor) -> Tensor:
        self._check(audio)
        x = self.proj(audio.transpose(2, 3))  # (B, D, M/pf, F/pt)
        return x.flatten(2).transpose(1, 2) + self.pos_embed  # (B, N, D)

    def patchify(self, audio: Tensor) -> Tensor:
        """Patch values in token order ``[B, N, pf * pt]``, the targets of masked reconstruction."""
        self._check(audio)
        return spectrogram_patches(audio, self.patch)


class TubeletTokenizer(nn.Module):
    """Embeds a video clip as a sequence of tubelet tokens.

    Args:
        num_frames: frames T of the input.
        frame_size: square side S of the input frames.
        patch: (t, h, w) tubelet size.
        embed_dim: token width D.

    Input ``[B, 3, T, S, S]`` -> tokens ``[B, N, D]`` with ``N = (T / t) * (S / h) * (S / w)``,
    ordered time-major then row-major.
    """

    def __init__(self, num_frames: int, frame_size: int, patch: tuple[int, int, int], embed_dim: int):
        super().__init__()
        self.patch = tuple(patch)
        self.grid = (
            _grid_size(num_frames, patch[0], "num_frames"),
            _grid_size(frame_size, patch[1], "frame_size"),
            _grid_size(frame_size, patch[2], "frame_size"),
        )
        self.input_shape = (3, num_frames, frame_size, frame_size)
        self.proj = nn.Conv3d(3, embed_dim, kernel_size=self.patch, stride=self.patch)
        self.register_buffer("pos_embed", sincos_3d(embed_dim, *self.grid)[None], persistent=False)

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]

    @property
    def patch_dim(self) -> int:
        return 3 * self.patch[0] * self.patch[1] * self.patch[2]

    def _check(self, video: Tensor) -> None:
        if tuple(video.shape[1:]) != self.input_shape:
            raise ValueError(
                f"video input of shape {tuple(video.shape)} does not match the model's "
                f"[B, {', '.join(map(str, self.input_shape))}] ([B, 3, frames, height, width])"
            )

    def forward(self, video: Tensor) -> Tensor:
        self._check(video)
        x = self.proj(video)  # (B, D, T/t, S/h, S/w)
        return x.flatten(2).transpose(1, 2) + self.pos_embed  # (B, N, D)

    def patchify(self, video: Tensor) -> Tensor:
        """Tubelet values in token order ``[B, N, t * h * w * 3]``, the targets of masked reconstruction."""
        self._check(video)
        return tubelet_patches(video, self.patch)
