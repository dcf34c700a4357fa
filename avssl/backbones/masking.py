"""Random token masking that drops masked tokens before the encoder (MAE, CAV-MAE).

The per-sample argsort of uniform noise is lightly's `random_token_mask`, which draws
``torch.rand(B, N)`` exactly as MAE and CAV-MAE do; ``int(N * (1 - ratio))`` tokens are kept.
"""

from __future__ import annotations

import torch
from lightly.models.utils import get_at_index, random_token_mask
from torch import Tensor


def drop_tokens(tokens: Tensor, mask_ratio: float) -> tuple[Tensor, Tensor, Tensor]:
    """Keeps a random subset of tokens per sample.

    Args:
        tokens: ``[B, N, D]``.
        mask_ratio: fraction of tokens to drop, in [0, 1).

    Returns:
        ``(visible [B, K, D], idx_keep [B, K], idx_mask [B, N - K])``; with ``mask_ratio == 0``
        all tokens are kept in their original order.
    """
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio={mask_ratio}: must be in [0, 1)")
    b, n, _ = tokens.shape
    if mask_ratio == 0.0:
        idx_keep = torch.arange(n, device=tokens.device).expand(b, n)
        return tokens, idx_keep, idx_keep[:, :0]
    # No class token in these sequences, so every position may be masked.
    idx_keep, idx_mask = random_token_mask((b, n), mask_ratio, mask_class_token=True, device=tokens.device)
    return get_at_index(tokens, idx_keep), idx_keep, idx_mask
