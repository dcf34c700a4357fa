"""avssl: self-supervised audio-visual pretraining.

Importing avssl is light: `load_backbone` needs torch, safetensors and avssl only, and is imported
on first use, as is `create_backbone` (a randomly initialised named preset, e.g. "xkd_base"). The training side (Lightning) is imported by `avssl.pretrain`, `avssl.probe` and
`avssl.module`. `list_backbones` and `list_recipes` name what `create_backbone` and
``python -m avssl.pretrain recipe=NAME`` accept.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PretrainedBackbone", "create_backbone", "list_backbones", "list_recipes", "load_backbone"]


def __getattr__(name: str) -> Any:
    # Lazy so that `datamodules` can import `avssl.schema` without a circular import.
    if name in ("create_backbone", "list_backbones"):
        from avssl.backbones import registry

        return getattr(registry, name)
    if name == "list_recipes":
        from avssl.config import available_recipes

        return available_recipes
    if name in __all__:
        from avssl import loading

        return getattr(loading, name)
    raise AttributeError(f"module 'avssl' has no attribute {name!r}")
