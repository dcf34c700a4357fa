"""Convert released checkpoints of other projects into avssl exports.

``python -m avssl.convert KIND SRC --out DIR`` (XKD: ``python -m avssl.convert xkd --audio AUD --video VID
--out DIR``) writes ``DIR/model.safetensors`` and
``DIR/config.yaml`` in the format of `avssl.export.export_encoder`, so `avssl.load_backbone(DIR)`,
``python -m avssl.probe DIR`` and everything else that reads an export can use the weights.

    >>> from avssl.convert import convert
    >>> convert("cav_mae", "cav-mae-scale++.pth", "exports/cav-mae-scale++")  # doctest: +SKIP

Each converter lives in its own file and is registered in `CONVERTERS` under the name the CLI uses.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from avssl.convert.cav_mae import convert_cav_mae
from avssl.convert.xkd import convert_xkd

# KIND -> function(src, out, **options) -> export directory.
CONVERTERS: dict[str, Callable[..., Path]] = {
    "cav_mae": convert_cav_mae,  # YuanGongND/cav-mae CAVMAE / CAVMAEFT .pth
    "xkd": convert_xkd,  # pritamqu/XKD aud_/vid_ student / teacher .pth.tar pair
}


def convert(kind: str, src: str | Path | None, out: str | Path, **options: Any) -> Path:
    """Converts checkpoint `src` of family `kind` into an avssl export at `out`; returns `out`.

    Args:
        kind: a key of `CONVERTERS`, e.g. ``"cav_mae"``.
        src: the released checkpoint file (``xkd``: a directory of backbone files, or None with
            ``audio=`` and ``video=``).
        out: export directory to write.
        **options: converter-specific options (``cav_mae``: ``num_heads``; ``xkd``: ``audio``,
            ``video``, ``which``, ``num_heads``).

    Raises:
        ValueError: unknown `kind`, or `src` cannot be converted (the message says why).
        FileNotFoundError: `src` does not exist.
    """
    if kind not in CONVERTERS:
        raise ValueError(f"unknown checkpoint kind {kind!r}; available: {', '.join(sorted(CONVERTERS))}")
    converter = CONVERTERS[kind]
    params = inspect.signature(converter).parameters
    unknown = sorted(set(options) - set(params))
    if unknown:
        accepted = [p for p in params if p not in ("src", "out")]
        raise ValueError(f"{kind} does not take {', '.join(unknown)}; its options are: {', '.join(accepted) or 'none'}")
    if src is None and "None" not in str(params["src"].annotation):
        raise ValueError(f"{kind} needs SRC, the released checkpoint file")
    return Path(converter(src, out, **options))


__all__ = ["CONVERTERS", "convert"]
