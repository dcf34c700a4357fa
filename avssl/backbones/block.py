"""Pre-norm transformer block on `torch.nn.functional.scaled_dot_product_attention`.

ViT block (Dosovitskiy et al., 2020, arXiv:2010.11929) as used by CAV-MAE and MAViL. SDPA picks
flash or memory-efficient kernels on GPU and the math kernel on CPU.

A block may serve several token *streams* that share its attention and MLP weights but keep
their own LayerNorms: CAV-MAE's shared layer runs on the joint sequence ("av"), on audio alone
("a") and on video alone ("v") with three norm sets (`YuanGongND/cav-mae@68fe8c2a
src/models/cav_mae.py`, class `Block`). A plain block has the single stream "x".

Shape letters: B batch, N tokens, D width, H heads.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn


class Attention(nn.Module):
    """Multi-head self-attention ``[B, N, D] -> [B, N, D]``."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"embed_dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, N, D/H)
        x = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, D/H)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """Two-layer GELU MLP ``[B, N, D] -> [B, N, D]``."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block with one LayerNorm pair per stream.

    Args:
        dim: token width D.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width as a multiple of D.
        qkv_bias: bias in the qkv projection.
        norm_eps: LayerNorm epsilon.
        streams: names of the token streams this block serves.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_eps: float = 1e-5,
        streams: Sequence[str] = ("x",),
    ):
        super().__init__()
        self.norm1 = nn.ModuleDict({s: nn.LayerNorm(dim, eps=norm_eps) for s in streams})
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.ModuleDict({s: nn.LayerNorm(dim, eps=norm_eps) for s in streams})
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, stream: str = "x") -> Tensor:
        x = x + self.attn(self.norm1[stream](x))
        return x + self.mlp(self.norm2[stream](x))
