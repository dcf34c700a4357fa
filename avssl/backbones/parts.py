"""Builders of the parts every encoder kind shares: tokenizers, blocks and prefix handling.

Each encoder (`AudioVisualEncoder`, `SharedEncoder`, `BottleneckFusionEncoder`) builds its
tokenizers and blocks here from a `BackboneSpec`, so an option such as drop-path or a class token
means the same thing in every layout.

Shape letters: B batch, N tokens, K visible tokens, P prefix (class) tokens, D width.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from avssl.backbones.block import Block, drop_path_rates
from avssl.backbones.masking import NO_MASK, MaskSpec
from avssl.backbones.spec import BackboneSpec
from avssl.backbones.tokenizers import SpectrogramPatchTokenizer, TubeletTokenizer


def audio_tokenizer(spec: BackboneSpec) -> SpectrogramPatchTokenizer:
    return SpectrogramPatchTokenizer(
        spec.num_mel_bins,
        spec.audio_frames,
        spec.audio_patch,
        spec.embed_dim,
        stride=spec.audio_patch_stride,
        cls_token=spec.cls_token,
        pos_embed=spec.pos_embed,
    )


def video_tokenizer(spec: BackboneSpec) -> TubeletTokenizer:
    return TubeletTokenizer(
        spec.num_frames, spec.frame_size, spec.video_patch, spec.embed_dim, cls_token=spec.cls_token, pos_embed=spec.pos_embed
    )


def visible_tokens(tokenizer: SpectrogramPatchTokenizer | TubeletTokenizer, modality: Tensor, x: Tensor,
                   mask: MaskSpec | None) -> tuple[Tensor, Tensor, Tensor]:
    """One modality's input as encoder tokens: patches plus the modality embedding, masked as
    `mask` says (None: every token), class token prepended after masking so it is never dropped.

    Returns:
        ``(tokens [B, P + K, D], idx_keep [B, K], idx_mask [B, N - K])``.
    """
    grid = tokenizer.input_grid(x)
    visible, keep, masked = (mask or NO_MASK).apply(tokenizer(x) + modality, grid)  # (B, K, D)
    return tokenizer.cls(visible), keep, masked


def blocks(spec: BackboneSpec, depth: int, streams: Sequence[str] = ("x",), first: int = 0, total: int | None = None) -> nn.ModuleList:
    """``depth`` blocks at positions ``first .. first + depth - 1`` of a ``total``-deep stack.

    The position sets each block's drop-path rate (linear from 0 to ``spec.drop_path``).
    """
    total = depth if total is None else total
    rates = drop_path_rates(spec.drop_path, total)[first : first + depth]
    return nn.ModuleList(
        Block(
            spec.embed_dim,
            spec.num_heads,
            spec.mlp_ratio,
            spec.qkv_bias,
            spec.norm_eps,
            tuple(streams),
            drop_path=rate,
            init_values=spec.layer_scale_init,
            attention=spec.attention,
        )
        for rate in rates
    )


def run(x: Tensor, stack: nn.ModuleList, stream: str = "x") -> Tensor:
    """Runs ``x [B, N, D]`` through every block of ``stack`` on ``stream``."""
    for blk in stack:
        x = blk(x, stream)
    return x


def split_prefix(x: Tensor, num_prefix: int) -> tuple[Tensor, Tensor]:
    """``[B, P + K, D] -> (prefix [B, P, D], tokens [B, K, D])``."""
    return x[:, :num_prefix], x[:, num_prefix:]


def mean_pool(tokens: Tensor) -> Tensor:
    """``[B, K, D] -> [B, D]``."""
    return tokens.mean(dim=1)


def feature_dict(audio: tuple[Tensor, Tensor], video: tuple[Tensor, Tensor], joint: Tensor,
                 keep_mask: tuple[Tensor, Tensor, Tensor, Tensor]) -> dict[str, Tensor]:
    """The `forward_features` output contract shared by every transformer encoder kind.

    Args:
        audio: ``(prefix [B, Pa, D], tokens [B, Ka, D])`` after the final norm, from `split_prefix`.
        video: the same for video.
        joint: the joint stream without class tokens ``[B, Ka + Kv, D]``.
        keep_mask: ``(audio_idx_keep, audio_idx_mask, video_idx_keep, video_idx_mask)``.
    """
    (a_cls, a), (v_cls, v) = audio, video
    a_keep, a_mask, v_keep, v_mask = keep_mask
    out = {
        "audio_tokens": a,
        "video_tokens": v,
        "joint_tokens": joint,
        "audio_embedding": mean_pool(a),
        "video_embedding": mean_pool(v),
        "joint_embedding": mean_pool(joint),
        "audio_idx_keep": a_keep,
        "audio_idx_mask": a_mask,
        "video_idx_keep": v_keep,
        "video_idx_mask": v_mask,
    }
    if a_cls.shape[1]:  # class tokens are on
        out.update(audio_cls_token=a_cls[:, 0], video_cls_token=v_cls[:, 0])
    return out


def init_mae_weights(encoder: nn.Module) -> None:
    """MAE / CAV-MAE initialisation, shared by the transformer encoder kinds: xavier-uniform linears
    and patch projections (the latter viewed as linears), zero biases, N(0, 0.02) modality
    embeddings."""
    nn.init.normal_(encoder.audio_modality, std=0.02)
    nn.init.normal_(encoder.video_modality, std=0.02)
    for proj in (encoder.audio_tokenizer.proj, encoder.video_tokenizer.proj):
        nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
        nn.init.zeros_(proj.bias)
    for m in encoder.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

