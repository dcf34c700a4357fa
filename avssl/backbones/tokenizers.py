"""Tokenizers: spectrogram patches for audio, frame patches or tubelets for video.

Both follow CAV-MAE (Gong et al., ICLR 2023, arXiv:2210.07839, `YuanGongND/cav-mae@68fe8c2a
src/models/cav_mae.py`): a strided convolution embeds non-overlapping patches, then fixed 2-D
sin-cos position embeddings are added. The audio fbank ``[B, 1, frames, mels]`` is transposed to
``[B, 1, mels, frames]`` first, so tokens are ordered frequency-major exactly as CAV-MAE orders
them (grid 8 x 64 for 128 mels x 1024 frames). Video patches are tubelets ``(t, h, w)``; ``t = 1``
is CAV-MAE's per-frame patch embedding.

Options beyond CAV-MAE, all off by default (a default tokenizer is CAV-MAE's, parameter for
parameter):

- ``stride`` (audio): overlapping patches as in AST (Gong et al., 2021, arXiv:2104.01778, stride
  10 for 16 x 16 patches); the grid is ``(length - patch) // stride + 1`` per axis.
- ``cls_token``: a learned class token prepended after masking (XKD, Sarkar & Etemad, AAAI 2024,
  arXiv:2211.13929). Its position embedding is folded into the token itself: a learned token
  plus a learned position is one learned vector, and MAE gives the class token the zero
  sin-cos position.
- ``pos_embed="learned"``: position embeddings trained from trunc-normal(0.02) (XKD) instead of
  fixed sin-cos.
- Inputs longer or shorter than the spec's (more audio frames, more video frames) are accepted:
  the position embeddings are interpolated to the input's grid, bicubic over the audio
  (frequency x time) grid and trilinear over the video (time x height x width) grid, as
  AST/AudioMAE and ViT fine-tuning at a new resolution do.

Shape letters: B batch, N tokens, D width, P values per patch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avssl.backbones.positional import sincos_2d, sincos_3d
from avssl.backbones.spec import BackboneSpec

# values (tokens x D) of one modality's position table; CAV-MAE base: 512 x 768, VideoMAE-H 1568 x 1280
MAX_POSITION_TABLE = 2**26

POS_EMBEDS = ("sincos", "learned")


def _grid_size(length: int, patch: int, what: str, stride: Optional[int] = None) -> int:
    stride = patch if stride is None else stride
    if stride == patch:
        if length % patch != 0:
            raise ValueError(
                f"{what}={length} is not divisible by the patch size {patch}; "
                f"choose a {what} that is a multiple of {patch} or change the patch size."
            )
        return length // patch
    if length < patch:
        raise ValueError(f"{what}={length} is shorter than the patch size {patch}; use a longer input or a smaller patch.")
    return (length - patch) // stride + 1


def position_table_problem(spec: BackboneSpec) -> Optional[str]:
    """What makes the position tables of ``spec``'s tokenizers too large (None: nothing), from the
    sizes alone: a table is computed when its tokenizer is built, even on torch's meta device.

    Raises:
        ValueError: a patch that does not tile its input (as building the tokenizer would).
    """
    stride = spec.audio_patch_stride or [None, None]
    audio = (_grid_size(spec.num_mel_bins, spec.audio_patch[0], "num_mel_bins", stride[0])
             * _grid_size(spec.audio_frames, spec.audio_patch[1], "audio_frames", stride[1]))
    video = (_grid_size(spec.num_frames, spec.video_patch[0], "num_frames")
             * _grid_size(spec.frame_size, spec.video_patch[1], "frame_size")
             * _grid_size(spec.frame_size, spec.video_patch[2], "frame_size"))
    for what, tokens in (("audio", audio), ("video", video)):
        if tokens * spec.embed_dim > MAX_POSITION_TABLE:
            return (f"{tokens:_} {what} tokens per clip x embed_dim {spec.embed_dim} make a position table of "
                    f"{tokens * spec.embed_dim:_} values, at most {MAX_POSITION_TABLE:_}")
    return None


def spectrogram_patches(audio: Tensor, patch: Sequence[int], stride: Optional[Sequence[int]] = None) -> Tensor:
    """Patch values in token order: ``[B, 1, F, M] -> [B, N, pf * pt]`` (MAE targets).

    ``stride`` None (or equal to ``patch``) means non-overlapping patches.
    """
    pf, pt = patch
    if stride is not None and tuple(stride) != tuple(patch):
        cols = F.unfold(audio.transpose(2, 3), kernel_size=(pf, pt), stride=tuple(stride))  # (B, pf*pt, N)
        return cols.transpose(1, 2)
    b, _, frames, mels = audio.shape
    x = audio.transpose(2, 3).reshape(b, mels // pf, pf, frames // pt, pt)  # (B, gf, pf, gt, pt)
    return torch.einsum("bfpgq->bfgpq", x).reshape(b, -1, pf * pt)


def tubelet_patches(video: Tensor, patch: tuple[int, int, int]) -> Tensor:
    """Tubelet values in token order: ``[B, 3, T, S, S] -> [B, N, t * h * w * 3]`` (MAE targets)."""
    b, c, t, h, w = video.shape
    pt, ph, pw = patch
    x = video.reshape(b, c, t // pt, pt, h // ph, ph, w // pw, pw)
    return torch.einsum("bctqhpwr->bthwqprc", x).reshape(b, -1, pt * ph * pw * c)


def interpolate_pos_embed(pos: Tensor, old_grid: Sequence[int], new_grid: Sequence[int]) -> Tensor:
    """Resamples grid position embeddings ``[1, prod(old_grid), D] -> [1, prod(new_grid), D]``.

    2-D grids (audio frequency x time) are resampled bicubically, 3-D grids (video time x height
    x width) trilinearly. The same grid returns ``pos`` itself.
    """
    old_grid, new_grid = tuple(old_grid), tuple(new_grid)
    if old_grid == new_grid:
        return pos
    modes = {2: "bicubic", 3: "trilinear"}
    if len(old_grid) not in modes or len(new_grid) != len(old_grid):
        raise ValueError(f"cannot interpolate position embeddings from grid {old_grid} to {new_grid}")
    d = pos.shape[-1]
    x = pos.reshape(1, *old_grid, d).movedim(-1, 1)  # (1, D, *old_grid)
    x = F.interpolate(x.float(), size=new_grid, mode=modes[len(old_grid)], align_corners=False)
    return x.movedim(1, -1).reshape(1, -1, d).to(pos.dtype)  # (1, prod(new_grid), D)


class ClassToken(nn.Module):
    """Prepends one learned token: ``[B, N, D] -> [B, 1 + N, D]`` (init trunc-normal 0.02)."""

    def __init__(self, dim: int):
        super().__init__()
        self.token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.token, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)


class _GridTokenizer(nn.Module):
    """Shared machinery: position embeddings of a token grid, their interpolation and the class token."""

    grid: tuple[int, ...]

    def _init_tokens(self, fixed: Tensor, embed_dim: int, cls_token: bool, pos_embed: str) -> None:
        if pos_embed not in POS_EMBEDS:
            raise ValueError(f"pos_embed={pos_embed!r}: must be one of {list(POS_EMBEDS)}")
        if pos_embed == "sincos":
            self.register_buffer("pos_embed", fixed[None], persistent=False)  # (1, N, D)
        else:
            self.pos_embed = nn.Parameter(torch.zeros(1, fixed.shape[0], embed_dim))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        # Prepended by the encoder after masking, so the class token is never dropped.
        self.cls = ClassToken(embed_dim) if cls_token else nn.Identity()

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens `cls` prepends (1 with a class token, else 0)."""
        return 0 if isinstance(self.cls, nn.Identity) else 1

    @property
    def num_tokens(self) -> int:
        """Patch tokens at the spec's input size (class token not counted)."""
        n = 1
        for g in self.grid:
            n *= g
        return n

    def input_grid(self, x: Tensor) -> tuple[int, ...]:
        """The token grid of input `x` (the spec's `grid` unless the input size differs).

        Raises:
            ValueError: `x` does not fit the tokenizer (the message gives both shapes).
        """
        return self._check(x)

    def pos_embed_for(self, grid: Sequence[int]) -> Tensor:
        """Position embeddings ``[1, prod(grid), D]`` for an input whose token grid is `grid`."""
        return interpolate_pos_embed(self.pos_embed, self.grid, grid)


class SpectrogramPatchTokenizer(_GridTokenizer):
    """Embeds a log-mel spectrogram as a sequence of patch tokens.

    Args:
        num_mel_bins: mel bins M of the input.
        audio_frames: fbank frames F of the input.
        patch: (frequency, time) patch size.
        embed_dim: token width D.
        stride: (frequency, time) stride; None means the patch size (no overlap, CAV-MAE).
        cls_token: make a class token available as `cls` (prepended by the encoder).
        pos_embed: "sincos" (fixed, CAV-MAE) or "learned" (XKD).

    Input ``[B, 1, F, M]`` -> tokens ``[B, N, D]`` with ``N = gf * gt``, ``gf = (M - pf) // sf + 1``
    and ``gt = (F - pt) // st + 1`` (``M / pf * F / pt`` without overlap). Other F or M than the
    spec's are accepted; the position embeddings are then interpolated.

    Examples:
        >>> tok = SpectrogramPatchTokenizer(80, 448, (4, 16), 768)  # XKD audio
        >>> tok.grid, tok.num_tokens
        ((20, 28), 560)
    """

    def __init__(
        self,
        num_mel_bins: int,
        audio_frames: int,
        patch: Sequence[int],
        embed_dim: int,
        stride: Optional[Sequence[int]] = None,
        cls_token: bool = False,
        pos_embed: str = "sincos",
    ):
        super().__init__()
        self.patch = tuple(patch)
        self.stride = self.patch if stride is None else tuple(stride)
        self.grid = self._grid(num_mel_bins, audio_frames)
        self.input_shape = (1, audio_frames, num_mel_bins)
        self.proj = nn.Conv2d(1, embed_dim, kernel_size=self.patch, stride=self.stride)
        self._init_tokens(sincos_2d(embed_dim, *self.grid), embed_dim, cls_token, pos_embed)

    def _grid(self, mels: int, frames: int) -> tuple[int, int]:
        return (
            _grid_size(mels, self.patch[0], "num_mel_bins", self.stride[0]),
            _grid_size(frames, self.patch[1], "audio_frames", self.stride[1]),
        )

    @property
    def patch_dim(self) -> int:
        return self.patch[0] * self.patch[1]

    def _check(self, audio: Tensor) -> tuple[int, int]:
        problem = None
        if audio.ndim != 4 or audio.shape[1] != 1:
            problem = "expected one channel"
        else:
            try:
                return self._grid(audio.shape[3], audio.shape[2])
            except ValueError as err:
                problem = str(err)
        raise ValueError(
            f"audio input of shape {tuple(audio.shape)} does not match the model's "
            f"[B, {', '.join(map(str, self.input_shape))}] ([B, 1, frames, mels]): {problem}"
        )

    def forward(self, audio: Tensor) -> Tensor:
        grid = self._check(audio)
        x = self.proj(audio.transpose(2, 3))  # (B, D, gf, gt)
        return x.flatten(2).transpose(1, 2) + self.pos_embed_for(grid)  # (B, N, D)

    def patchify(self, audio: Tensor) -> Tensor:
        """Patch values in token order ``[B, N, pf * pt]``, the targets of masked reconstruction."""
        self._check(audio)
        return spectrogram_patches(audio, self.patch, self.stride)


class TubeletTokenizer(_GridTokenizer):
    """Embeds a video clip as a sequence of tubelet tokens.

    Args:
        num_frames: frames T of the input.
        frame_size: square side S of the input frames.
        patch: (t, h, w) tubelet size.
        embed_dim: token width D.
        cls_token: make a class token available as `cls` (prepended by the encoder).
        pos_embed: "sincos" (fixed, CAV-MAE) or "learned" (XKD).

    Input ``[B, 3, T, S, S]`` -> tokens ``[B, N, D]`` with ``N = (T / t) * (S / h) * (S / w)``,
    ordered time-major then row-major. Other T, H, W (multiples of the tubelet) are accepted; the
    position embeddings are then interpolated.
    """

    def __init__(
        self,
        num_frames: int,
        frame_size: int,
        patch: Sequence[int],
        embed_dim: int,
        cls_token: bool = False,
        pos_embed: str = "sincos",
    ):
        super().__init__()
        self.patch = tuple(patch)
        self.grid = self._grid(num_frames, frame_size, frame_size)
        self.input_shape = (3, num_frames, frame_size, frame_size)
        self.proj = nn.Conv3d(3, embed_dim, kernel_size=self.patch, stride=self.patch)
        self._init_tokens(sincos_3d(embed_dim, *self.grid), embed_dim, cls_token, pos_embed)

    def _grid(self, t: int, h: int, w: int) -> tuple[int, int, int]:
        return (
            _grid_size(t, self.patch[0], "num_frames"),
            _grid_size(h, self.patch[1], "frame_size"),
            _grid_size(w, self.patch[2], "frame_size"),
        )

    @property
    def patch_dim(self) -> int:
        return 3 * self.patch[0] * self.patch[1] * self.patch[2]

    def _check(self, video: Tensor) -> tuple[int, int, int]:
        problem = None
        if video.ndim != 5 or video.shape[1] != 3:
            problem = "expected 3 channels"
        else:
            try:
                return self._grid(*video.shape[2:])
            except ValueError as err:
                problem = str(err)
        raise ValueError(
            f"video input of shape {tuple(video.shape)} does not match the model's "
            f"[B, {', '.join(map(str, self.input_shape))}] ([B, 3, frames, height, width]): {problem}"
        )

    def forward(self, video: Tensor) -> Tensor:
        grid = self._check(video)
        x = self.proj(video)  # (B, D, T/t, H/h, W/w)
        return x.flatten(2).transpose(1, 2) + self.pos_embed_for(grid)  # (B, N, D)

    def patchify(self, video: Tensor) -> Tensor:
        """Tubelet values in token order ``[B, N, t * h * w * 3]``, the targets of masked reconstruction."""
        self._check(video)
        return tubelet_patches(video, self.patch)
