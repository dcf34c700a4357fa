"""Training-health measures of embedding objectives: is the objective learning, has it collapsed?

Pure functions on a batch of embeddings, used by the objectives to fill
`ObjectiveOutput.health`:

- `retrieval_top1`: in-batch cross-modal retrieval accuracy, the fraction of clips whose own
  partner is the nearest of the batch (chance 1/B). It rises long before a loss curve makes the
  same point, and reads the same for every temperature and loss form.
- `embedding_std`: the collapse monitor solo-learn logs as ``z_std`` (`vturrisi/solo-learn`,
  `solo/methods/base.py`): the per-dimension standard deviation of the L2-normalised embeddings,
  averaged over dimensions. It is 0 when every clip gets the same embedding and about
  ``1/sqrt(D)`` when the embeddings spread evenly over the sphere.

Shape letters: B batch, D embedding width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def retrieval_top1(query: Tensor, keys: Tensor) -> Tensor:
    """Fraction of queries whose most cosine-similar key is their own (row ``i`` of ``keys``).

    Args:
        query: ``[B, D]`` embeddings of one modality.
        keys: ``[B, D]`` embeddings of the other modality, paired row by row with ``query``.

    Returns:
        A scalar in [0, 1]; about ``1/B`` for unrelated embeddings, 1.0 for identical ones.

    Raises:
        ValueError: if the shapes differ.
    """
    if query.shape != keys.shape:
        raise ValueError(f"query {tuple(query.shape)} and keys {tuple(keys.shape)} must have the same [B, D] shape")
    sims = F.normalize(query.float(), dim=1) @ F.normalize(keys.float(), dim=1).T  # (B, B)
    return (sims.argmax(dim=1) == torch.arange(len(sims), device=sims.device)).float().mean()


@torch.no_grad()
def embedding_std(z: Tensor) -> Tensor:
    """Mean over dimensions of the per-dimension std of the L2-normalised ``z`` ``[B, D]`` (0: collapsed)."""
    return F.normalize(z.float(), dim=1).std(dim=0).mean()
