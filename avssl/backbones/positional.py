"""Fixed sine-cosine position embeddings for token grids.

MAE-style 2-D sin-cos (He et al., "Masked Autoencoders Are Scalable Vision Learners", 2021,
arXiv:2111.06377), computed with lightly's helpers, for rectangular grids: CAV-MAE's audio grid is
8 x 64 (frequency x time), not square. Video grids with several time steps add a 1-D sin-cos over
time to the spatial embedding of every frame.
"""

from __future__ import annotations

import numpy as np
import torch
from lightly.models.utils import (
    get_1d_sine_cosine_positional_embedding_from_positions,
    get_2d_sine_cosine_positional_embedding_from_grid,
)
from torch import Tensor


def sincos_2d(embed_dim: int, height: int, width: int) -> Tensor:
    """Position embeddings of a (height x width) grid, row-major: ``[height * width, embed_dim]``."""
    grid_w, grid_h = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    # MAE convention: the first half of the channels encodes the column, the second the row.
    grid = np.stack([grid_w, grid_h], axis=0)  # (2, height, width)
    return torch.from_numpy(get_2d_sine_cosine_positional_embedding_from_grid(embed_dim, grid)).float()


def sincos_3d(embed_dim: int, time: int, height: int, width: int) -> Tensor:
    """Position embeddings of a (time x height x width) grid: ``[time * height * width, embed_dim]``.

    The spatial 2-D embedding is shared by all time steps; a 1-D embedding of the time index is
    added. A single time step gets the spatial embedding alone, as CAV-MAE's single frames do.
    """
    spatial = sincos_2d(embed_dim, height, width)  # (H*W, D)
    if time == 1:
        return spatial
    temporal = torch.from_numpy(
        get_1d_sine_cosine_positional_embedding_from_positions(embed_dim, np.arange(time, dtype=np.float32))
    ).float()  # (T, D)
    return (temporal[:, None, :] + spatial[None, :, :]).reshape(time * height * width, embed_dim)
