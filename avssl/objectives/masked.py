"""Masked audio-visual reconstruction (CAV-MAE's MAE objective).

Gong et al., "Contrastive Audio-Visual Masked Autoencoder", ICLR 2023, arXiv:2210.07839;
reference `YuanGongND/cav-mae@68fe8c2a src/models/cav_mae.py` (`forward_decoder`,
`forward_mae_loss`). Published setting: 75% of the tokens of each modality dropped before the
encoder (the ``masked`` pass of the recipe's ``passes``), a shared 512-d 8-layer 16-head decoder, MSE on the
masked patches only, targets normalised per patch (``norm_pix_loss=True``), loss
``L_audio + L_video`` with weight 1.

The decoder is owned by this objective: it is trained with the module and left out of exports.
"""

from __future__ import annotations

from typing import Any

from lightly.models.utils import get_at_index
from torch import Tensor

from avssl.backbones.decoder import MAEDecoder
from avssl.backbones.protocol import AudioVisualBackbone
from avssl.backbones.spec import MAX_DEPTH
from avssl.backbones.tokenizers import spectrogram_patches, tubelet_patches
from avssl.objectives.registry import Objective, ObjectiveOutput, register_objective
from avssl.schema import in_range


def masked_patch_mse(pred: Tensor, target: Tensor, idx_mask: Tensor, normalize_target: bool) -> Tensor:
    """MSE between predicted and true patch values at the masked positions.

    Args:
        pred: predictions for every patch ``[B, N, P]``.
        target: true patch values ``[B, N, P]``.
        idx_mask: masked positions ``[B, M]``, M >= 1.
        normalize_target: normalise each target patch to zero mean and unit variance (MAE's
            ``norm_pix_loss``; variance with Bessel's correction and eps 1e-6, as MAE).
    """
    if normalize_target:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    pred_masked = get_at_index(pred, idx_mask)  # (B, M, P)
    target_masked = get_at_index(target, idx_mask)  # (B, M, P)
    return ((pred_masked.float() - target_masked.float()) ** 2).mean()


@register_objective("masked_reconstruction")
class MaskedReconstruction(Objective):
    """Reconstructs the dropped audio and video patches from the visible joint tokens.

    Args:
        backbone: the encoder being trained (token grids and width).
        decoder_dim: decoder width (CAV-MAE: 512).
        decoder_depth: decoder layers (CAV-MAE: 8).
        decoder_heads: decoder attention heads (CAV-MAE: 16).
        norm_pix_loss: per-patch normalised targets (CAV-MAE: True).
        audio_weight: weight of the audio term.
        video_weight: weight of the video term.
        pass_name: the encoder pass it reconstructs (its masking drops the tokens to predict).

    Returns from forward: losses ``{"audio": L_a * audio_weight, "video": L_v * video_weight}``;
    with ``norm_pix_loss`` their chance values, the loss of predicting every target patch's mean
    (about the term's weight, since normalised patches have unit variance).

    Raises:
        ValueError: for a non-positive size or a negative weight; at the first step if a modality
            has no masked token (set ``passes.<pass_name>.audio.ratio`` / ``video.ratio`` > 0).
    """

    def __init__(
        self,
        backbone: AudioVisualBackbone,
        decoder_dim: int = 512,
        decoder_depth: int = 8,
        decoder_heads: int = 16,
        norm_pix_loss: bool = True,
        audio_weight: float = 1.0,
        video_weight: float = 1.0,
        pass_name: str = "masked",
    ):
        super().__init__()
        self.pass_names = (pass_name,)
        for name, value in (("decoder_dim", decoder_dim), ("decoder_depth", decoder_depth), ("decoder_heads", decoder_heads)):
            if value <= 0:
                raise ValueError(f"{name}={value}: must be > 0")
        if decoder_dim % decoder_heads != 0:
            raise ValueError(f"decoder_dim={decoder_dim} must be divisible by decoder_heads={decoder_heads}")
        for name, value in (("audio_weight", audio_weight), ("video_weight", video_weight)):
            if value < 0:
                raise ValueError(f"{name}={value}: must be >= 0")
        self.decoder = MAEDecoder(
            backbone.embed_dim,
            backbone.audio_tokenizer,
            backbone.video_tokenizer,
            decoder_dim,
            decoder_depth,
            decoder_heads,
            backbone.spec.norm_eps,
        )
        self.audio_patch = backbone.audio_tokenizer.patch
        self.audio_stride = backbone.audio_tokenizer.stride
        self.video_patch = backbone.video_tokenizer.patch
        self.norm_pix_loss = norm_pix_loss
        self.audio_weight = audio_weight
        self.video_weight = video_weight

    requires = frozenset({"joint_tokens", "audio_idx_keep", "audio_idx_mask", "video_idx_keep", "video_idx_mask"})
    requires_masking = True
    stuck_hint = (
        "the decoder predicts no better than each patch's mean. Check that its pass masks both modalities "
        "(passes.masked.audio.ratio and video.ratio > 0)."
    )
    parameter_ranges = {
        "decoder_dim": in_range(1, 16_384),
        "decoder_depth": in_range(1, MAX_DEPTH),
        "decoder_heads": in_range(1, 256),
        "audio_weight": in_range(0.0, 1000.0),
        "video_weight": in_range(0.0, 1000.0),
    }

    def forward(self, passes: dict[str, dict[str, Tensor]], batch: dict[str, Any]) -> ObjectiveOutput:
        out = passes[self.pass_names[0]]
        for modality in ("audio", "video"):
            if out[f"{modality}_idx_mask"].shape[1] == 0:
                raise ValueError(
                    f"masked_reconstruction has no masked {modality} token to reconstruct; "
                    f"set passes.{self.pass_names[0]}.{modality}.ratio > 0 (CAV-MAE: 0.75)."
                )
        audio_pred, video_pred = self.decoder(out["joint_tokens"], out["audio_idx_keep"], out["video_idx_keep"])
        audio_loss = masked_patch_mse(
            audio_pred, spectrogram_patches(batch["audio"], self.audio_patch, self.audio_stride), out["audio_idx_mask"], self.norm_pix_loss
        )
        video_loss = masked_patch_mse(
            video_pred, tubelet_patches(batch["video"], self.video_patch), out["video_idx_mask"], self.norm_pix_loss
        )
        losses = {"audio": audio_loss * self.audio_weight, "video": video_loss * self.video_weight}
        if not self.norm_pix_loss:
            return ObjectiveOutput(losses)
        # A patch of P values normalised with the Bessel-corrected std has mean 0 and mean square
        # (P - 1) / P: the cost of predicting 0 (its mean) everywhere, times the weight.
        chance = {
            "audio": self.audio_weight * _bessel_chance(audio_pred.shape[-1]),
            "video": self.video_weight * _bessel_chance(video_pred.shape[-1]),
        }
        return ObjectiveOutput(losses, chance=chance)


def _bessel_chance(patch_values: int) -> float:
    """Mean squared value of a patch normalised with the Bessel-corrected variance: ``(P-1)/P``."""
    return (patch_values - 1) / patch_values
