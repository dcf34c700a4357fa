"""Pre-norm transformer block on `torch.nn.functional.scaled_dot_product_attention`.

ViT block (Dosovitskiy et al., 2020, arXiv:2010.11929) as used by CAV-MAE and MAViL. SDPA picks
flash or memory-efficient kernels on GPU and the math kernel on CPU.

Optional parts, all off by default so that a default block is exactly CAV-MAE's: stochastic depth
(Huang et al., 2016, arXiv:1603.09382; torchvision's `StochasticDepth` in "row" mode, one draw per
sample), LayerScale (Touvron et al., "Going deeper with Image Transformers", 2021,
arXiv:2103.17239) and a plain matmul-softmax attention kernel (``attention="math"``) to compare
against SDPA in benchmarks. A disabled part is `nn.Identity` and owns no parameter, so a default
block has the same parameter names as before these parts existed.

A block may serve several token *streams* that share its attention and MLP weights but keep
their own LayerNorms: CAV-MAE's shared layer runs on the joint sequence ("av"), on audio alone
("a") and on video alone ("v") with three norm sets (`YuanGongND/cav-mae@68fe8c2a
src/models/cav_mae.py`, class `Block`). A plain block has the single stream "x".

Shape letters: B batch, N tokens, D width, H heads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import StochasticDepth


def sdpa_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """``softmax(q k^T / sqrt(d)) v`` with PyTorch's fused kernels; each ``[B, H, N, D/H]``."""
    return F.scaled_dot_product_attention(q, k, v)


def math_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """The same attention written as matmul + softmax (no fused kernel); each ``[B, H, N, D/H]``."""
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B, H, N, N)
    return scores.softmax(dim=-1) @ v  # (B, H, N, D/H)


ATTENTION_KERNELS: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "sdpa": sdpa_attention,
    "math": math_attention,
}


class Attention(nn.Module):
    """Multi-head self-attention ``[B, N, D] -> [B, N, D]``.

    Args:
        dim: token width D.
        num_heads: attention heads H.
        qkv_bias: bias in the qkv projection.
        attention: kernel name in `ATTENTION_KERNELS` ("sdpa" or "math"); both give the same
            outputs, "math" exists to measure what the fused kernels save.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attention: str = "sdpa"):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"embed_dim={dim} must be divisible by num_heads={num_heads}")
        if attention not in ATTENTION_KERNELS:
            raise ValueError(f"attention={attention!r}: must be one of {sorted(ATTENTION_KERNELS)}")
        self.num_heads = num_heads
        self.attend = ATTENTION_KERNELS[attention]
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, N, D/H)
        x = self.attend(q, k, v)  # (B, H, N, D/H)
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


class LayerScale(nn.Module):
    """Per-channel learned scale of a residual branch, initialised to `init_values` (CaiT)."""

    def __init__(self, dim: int, init_values: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


def layer_scale(dim: int, init_values: Optional[float]) -> nn.Module:
    """`LayerScale`, or `nn.Identity` when ``init_values`` is None."""
    return nn.Identity() if init_values is None else LayerScale(dim, init_values)


def stochastic_depth(p: float) -> nn.Module:
    """Stochastic depth with drop probability ``p`` per sample, or `nn.Identity` when ``p == 0``."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"drop_path={p}: must be in [0, 1) (typical: 0.1 for ViT-B)")
    return nn.Identity() if p == 0.0 else StochasticDepth(p, "row")


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """Rates growing linearly from 0 at the first block to ``rate`` at the last (timm, DeiT)."""
    if depth <= 1:
        return [rate] * depth
    return [rate * i / (depth - 1) for i in range(depth)]


class Block(nn.Module):
    """Pre-norm transformer block with one LayerNorm pair per stream.

    Args:
        dim: token width D.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width as a multiple of D.
        qkv_bias: bias in the qkv projection.
        norm_eps: LayerNorm epsilon.
        streams: names of the token streams this block serves.
        drop_path: stochastic-depth probability of both residual branches (0: off).
        init_values: LayerScale initial value (None: off; CaiT uses 1e-5 to 1e-1 by depth).
        attention: attention kernel, "sdpa" or "math".
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_eps: float = 1e-5,
        streams: Sequence[str] = ("x",),
        drop_path: float = 0.0,
        init_values: Optional[float] = None,
        attention: str = "sdpa",
    ):
        super().__init__()
        self.norm1 = nn.ModuleDict({s: nn.LayerNorm(dim, eps=norm_eps) for s in streams})
        self.attn = Attention(dim, num_heads, qkv_bias, attention)
        self.ls1 = layer_scale(dim, init_values)
        self.drop_path1 = stochastic_depth(drop_path)
        self.norm2 = nn.ModuleDict({s: nn.LayerNorm(dim, eps=norm_eps) for s in streams})
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = layer_scale(dim, init_values)
        self.drop_path2 = stochastic_depth(drop_path)

    def forward(self, x: Tensor, stream: str = "x") -> Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1[stream](x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2[stream](x))))
