"""Audio-visual contrastive InfoNCE (CAV-MAE's contrastive term, via lightly's NTXentLoss).

Gong et al., "Contrastive Audio-Visual Masked Autoencoder", ICLR 2023, arXiv:2210.07839;
reference `YuanGongND/cav-mae@68fe8c2a src/models/cav_mae.py` (`forward_contrastive`). Published
setting: mean-pooled per-modality tokens of the masked clips, L2-normalised, fixed temperature
0.05, loss weight 0.01.

Deviation: this uses lightly's `NTXentLoss` (Chen et al., SimCLR, arXiv:2002.05709), which is
symmetric (audio->video and video->audio) and also counts the other clips of the same modality as
negatives, where CAV-MAE's default is single-direction with cross-modal negatives only. With
``gather_distributed`` the negatives come from all ranks; CAV-MAE computed the loss per GPU
sub-batch under DataParallel (its issue #6), which this does not reproduce.
"""

from __future__ import annotations

from typing import Any

from lightly.loss import NTXentLoss
from torch import Tensor

from avssl.objectives.registry import Objective, register_objective


@register_objective("av_infonce")
class AVInfoNCE(Objective):
    """InfoNCE between the audio and video embeddings of the same clips.

    Args:
        temperature: softmax temperature (CAV-MAE: 0.05; typical 0.05-0.1).
        gather_distributed: gather embeddings from all ranks so every rank sees all negatives.

    Returns from forward: ``{"infonce": loss}`` computed on ``out["audio_embedding"]`` and
    ``out["video_embedding"]`` (``[B, D]`` each).

    Raises:
        ValueError: for a temperature <= 0.
    """

    def __init__(self, temperature: float = 0.05, gather_distributed: bool = True):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature={temperature}: must be > 0 (typical: 0.05-0.1)")
        self.loss = NTXentLoss(temperature=temperature, gather_distributed=gather_distributed)

    def forward(self, out: dict[str, Tensor], batch: dict[str, Any]) -> dict[str, Tensor]:
        return {"infonce": self.loss(out["audio_embedding"], out["video_embedding"])}
