"""Named backbone sizes, from a CPU demo model to the paper's ViT-B.

``base`` is CAV-MAE's published encoder (ViT-B/16: 768-d, 12 heads, 11 modality-specific + 1
shared layer). ``small`` and ``large`` follow the ViT-S and ViT-L widths with the same 11/23 + 1
split; ``tiny`` is for the built-in demo and the tests.
"""

from __future__ import annotations

BACKBONE_SIZES: dict[str, dict[str, int]] = {
    "tiny": {"embed_dim": 128, "num_heads": 4, "modality_specific_depth": 3, "shared_depth": 1},
    "small": {"embed_dim": 384, "num_heads": 6, "modality_specific_depth": 11, "shared_depth": 1},
    "base": {"embed_dim": 768, "num_heads": 12, "modality_specific_depth": 11, "shared_depth": 1},
    "large": {"embed_dim": 1024, "num_heads": 16, "modality_specific_depth": 23, "shared_depth": 1},
}
