"""Audio-visual contrastive InfoNCE (CAV-MAE's contrastive term, via lightly's NTXentLoss).

Gong et al., "Contrastive Audio-Visual Masked Autoencoder", ICLR 2023, arXiv:2210.07839;
reference `YuanGongND/cav-mae@68fe8c2a src/models/cav_mae.py` (`forward_contrastive`). Published
setting: mean-pooled per-modality tokens of the masked clips, L2-normalised, fixed temperature
0.05, loss weight 0.01.

Deviations:

- This uses lightly's `NTXentLoss` (Chen et al., SimCLR, arXiv:2002.05709), which is symmetric
  (audio->video and video->audio) and also counts the other clips of the same modality as
  negatives, where CAV-MAE's default is single-direction with cross-modal negatives only. With
  ``gather_distributed`` the negatives come from all ranks; CAV-MAE computed the loss per GPU
  sub-batch under DataParallel (its issue #6), which this does not reproduce.
- By default each modality's embedding goes through its own projection head, lightly's
  `SimCLRProjectionHead` (Linear-BN-ReLU-Linear-BN), before the loss; CAV-MAE has none
  (``projection_dim=0`` reproduces that). Measured on the demo clips (docs/objectives.md, "Why the
  contrastive term was stuck"): mean-pooled transformer tokens of different clips start with
  cosine similarities close to 1 (a component shared by every clip: positions, LayerNorm biases),
  audio and video sit apart, so a clip's own partner is *less* similar than the same-modality
  negatives; the fastest way down is to map every clip to one point, where the loss sits at
  ln(2B-1) with no gradient. The batch normalisation in the head removes the shared component and
  the loss leaves its chance value within tens of steps. The probes read the backbone's
  embeddings, before the head, as SimCLR and AVID do.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch.distributed as dist
from lightly.loss import NTXentLoss
from lightly.models.modules.heads import SimCLRProjectionHead
from torch import Tensor, nn

from avssl.objectives.health import embedding_std, retrieval_top1
from avssl.objectives.registry import Objective, ObjectiveOutput, register_objective


@register_objective("av_infonce")
class AVInfoNCE(Objective):
    """InfoNCE between the audio and video embeddings of the same clips.

    Args:
        backbone: the encoder being trained (its ``embed_dim`` sizes the heads); only needed
            with projection heads.
        temperature: softmax temperature (CAV-MAE: 0.05; typical 0.05-0.1).
        gather_distributed: gather embeddings from all ranks so every rank sees all negatives.
        projection_dim: output width of the per-modality projection heads; 0: no heads, the
            backbone's embeddings are contrasted directly (CAV-MAE).
        projection_hidden_dim: hidden width of the heads.
        pass_name: the encoder pass whose embeddings are contrasted (CAV-MAE: its masked pass,
            ``masked``; the default ``unmasked`` sees whole clips, see docs/objectives.md).

    Returns from forward: loss ``{"infonce"}`` on the pass's ``audio_embedding`` and
    ``video_embedding`` (``[B, D]`` each), its chance value ln(2N - 1) for N clips over
    all ranks, and health scalars: ``retrieval_a2v`` / ``retrieval_v2a`` (in-batch top-1, chance
    ``retrieval_chance`` = 1/B), ``audio_z_std`` / ``video_z_std`` (collapse monitor of the
    contrasted embeddings, about 1/sqrt(D) when healthy, 0 when collapsed).

    Raises:
        ValueError: for a temperature <= 0, a negative width, or heads without a backbone.

    Examples:
        >>> loss = AVInfoNCE(temperature=0.1, gather_distributed=False, projection_dim=0)
        >>> out = {"audio_embedding": torch.randn(8, 32), "video_embedding": torch.randn(8, 32)}
        >>> result = loss({"unmasked": out}, {})
        >>> sorted(result.losses), result.chance["infonce"] == math.log(15)
        (['infonce'], True)
    """

    requires = frozenset({"audio_embedding", "video_embedding"})
    stuck_hint = (
        "the audio and video embeddings of a clip are no closer than those of other clips. Check "
        "health/av_infonce/audio_z_std and video_z_std (near 0: collapsed), keep the projection heads "
        "(objectives.av_infonce.projection_dim > 0), try a temperature of 0.1 and a lower optim.lr, "
        "and check in data_report.json that the clips have audio."
    )

    def __init__(
        self,
        backbone: Optional[nn.Module] = None,
        temperature: float = 0.05,
        gather_distributed: bool = True,
        projection_dim: int = 128,
        projection_hidden_dim: int = 512,
        pass_name: str = "unmasked",
    ):
        super().__init__()
        self.pass_names = (pass_name,)
        if temperature <= 0:
            raise ValueError(f"temperature={temperature}: must be > 0 (typical: 0.05-0.1)")
        for name, value in (("projection_dim", projection_dim), ("projection_hidden_dim", projection_hidden_dim)):
            if value < 0:
                raise ValueError(f"{name}={value}: must be >= 0 (projection_dim=0: no projection heads)")
        if projection_dim and backbone is None:
            raise ValueError("projection heads need the backbone's embed_dim; pass backbone= or set projection_dim=0")
        self.audio_head, self.video_head = (
            (SimCLRProjectionHead(backbone.embed_dim, projection_hidden_dim, projection_dim),
             SimCLRProjectionHead(backbone.embed_dim, projection_hidden_dim, projection_dim))
            if projection_dim else (nn.Identity(), nn.Identity())
        )
        self.gather_distributed = gather_distributed
        self.loss = NTXentLoss(temperature=temperature, gather_distributed=gather_distributed)

    def forward(self, passes: dict[str, dict[str, Tensor]], batch: dict[str, Any]) -> ObjectiveOutput:
        out = passes[self.pass_names[0]]
        za = self.audio_head(out["audio_embedding"])  # (B, P)
        zv = self.video_head(out["video_embedding"])  # (B, P)
        clips = len(za) * (dist.get_world_size() if self.gather_distributed and dist.is_initialized() else 1)
        return ObjectiveOutput(
            losses={"infonce": self.loss(za, zv)},
            chance={"infonce": math.log(2 * clips - 1)},
            health={
                "retrieval_a2v": retrieval_top1(za, zv),
                "retrieval_v2a": retrieval_top1(zv, za),
                "retrieval_chance": za.new_tensor(1.0 / len(za)),
                "audio_z_std": embedding_std(za),
                "video_z_std": embedding_std(zv),
            },
        )
