"""Export a pretrained backbone as safetensors weights plus a YAML of architecture and preprocessing.

``python -m avssl.export CKPT --out DIR`` reads a pretraining checkpoint (``weights_only=True``),
keeps the encoder (decoders and objective state stay behind) and writes ``DIR/model.safetensors``
and ``DIR/config.yaml``. `avssl.load_backbone(DIR)` rebuilds the encoder from them with torch,
safetensors and avssl only.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from safetensors.torch import save_file
from torch import nn

from avssl.atomic_files import atomic_write
from avssl.backbones.encoder import AudioVisualEncoder
from avssl.backbones.registry import build_encoder
from avssl.config import from_dict
from avssl.loading import CONFIG_FILE, WEIGHTS_FILE
from avssl.schema import first_violation
from avssl.torch_files import check_fits_before_building, first_line, load_torch_file, load_weights
from avssl.value_types import as_typed
from datamodules.preprocessing import Preprocessing

EXPORT_FORMAT = "avssl-backbone/1"
BACKBONE_PREFIX = "backbone."

log = logging.getLogger(__name__)


def export_encoder(encoder: AudioVisualEncoder, preprocessing: Preprocessing, out_dir: str | Path, source: dict[str, Any] | None = None) -> Path:
    """Writes ``model.safetensors`` and ``config.yaml`` for `encoder` into `out_dir`; returns it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    meta = {
        "format": EXPORT_FORMAT,
        "architecture": type(encoder).__name__,
        "backbone": asdict(encoder.spec),
        "preprocessing": asdict(preprocessing),
        "source": source or {},
    }
    # Each file is replaced atomically, weights first: a crash never leaves a half-written file.
    with atomic_write(out / WEIGHTS_FILE) as partial:
        save_file(state, partial, metadata={"format": EXPORT_FORMAT})
    with atomic_write(out / CONFIG_FILE) as partial:
        OmegaConf.save(OmegaConf.create(meta), partial)
    return out


def encoder_from_checkpoint(path: str | Path) -> tuple[AudioVisualEncoder, Preprocessing, dict[str, Any]]:
    """Rebuilds the encoder of a pretraining checkpoint.

    Returns:
        ``(encoder, preprocessing, config_dict)``.

    Raises:
        FileNotFoundError: no such checkpoint.
        ValueError: the file is empty, truncated or corrupt, is not an avssl pretraining checkpoint,
            or its weights do not fit the config in its hyper_parameters (one line naming the file).
    """
    path = Path(path)
    ckpt = load_torch_file(path, "checkpoint", "a .ckpt file such as runs/<run>/checkpoints/last.ckpt")
    try:
        config_dict = ckpt["hyper_parameters"]["config"]
        state = ckpt["state_dict"]
    except (KeyError, TypeError):
        raise ValueError(f"{path} is not an avssl pretraining checkpoint (no hyper_parameters.config / state_dict)") from None
    if not isinstance(config_dict, dict) or not isinstance(state, dict):
        raise ValueError(f"{path} is not an avssl pretraining checkpoint (hyper_parameters.config and state_dict must be dicts)")
    unusable = f"{path}: the config in its hyper_parameters cannot be used"
    try:
        config = from_dict(config_dict)
        found = first_violation(config.backbone, "backbone") or first_violation(config.data.preprocessing, "data.preprocessing")
        spec = None if found else config.backbone.resolve(config.data.preprocessing)
    except Exception as err:  # OmegaConf and the backbone checks raise several types for a bad config
        raise ValueError(f"{unusable} ({first_line(err)}); was it written by another avssl version?") from None
    if found:
        key, value, problem = found
        raise ValueError(f"{unusable}: {key}={as_typed(value)}: {problem}; was the checkpoint edited? Pass the checkpoint of a run")

    def build() -> nn.Module:
        try:
            return build_encoder(spec)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{unusable} ({first_line(err)}); was it written by another avssl version?") from None

    backbone = {k[len(BACKBONE_PREFIX) :]: v for k, v in state.items() if k.startswith(BACKBONE_PREFIX)}
    config_name = "the config in its hyper_parameters"
    fix = "the checkpoint was not written with this config (was it edited?); pass the checkpoint of a run"
    check_fits_before_building(build, backbone, path, config_name, fix)  # its weights, not its config, size the encoder
    encoder = build()
    load_weights(encoder, backbone, path, config_name, fix)
    return encoder, config.data.preprocessing, config_dict


def export_checkpoint(ckpt_path: str | Path, out_dir: str | Path) -> Path:
    """Exports the encoder of a pretraining checkpoint; returns the export directory."""
    encoder, preprocessing, config = encoder_from_checkpoint(ckpt_path)
    return export_encoder(encoder, preprocessing, out_dir, source={"checkpoint": str(ckpt_path), "recipe": config.get("recipe")})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m avssl.export", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="pretraining checkpoint, e.g. runs/<run>/checkpoints/last.ckpt")
    parser.add_argument("--out", required=True, help="directory to write model.safetensors and config.yaml into")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        out = export_checkpoint(args.checkpoint, args.out)
    except (FileNotFoundError, ValueError) as err:
        print(f"avssl.export: error: {err}", file=sys.stderr)
        return 2
    print(f"exported {args.checkpoint} -> {out / WEIGHTS_FILE}, {out / CONFIG_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
