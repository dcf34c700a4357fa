"""Load an exported backbone: torch, safetensors and avssl only (no Lightning).

    >>> import avssl
    >>> model = avssl.load_backbone("runs/default-.../export")
    >>> model.encode_video(clip)           # [B, 3, T, S, S] -> [B, D]
    >>> model.embed_file("some_video.mp4") # {"audio": [D], "video": [D], "joint": [D]}
"""

from __future__ import annotations

import os
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor, nn

from avssl.backbones.encoder import AudioVisualEncoder
from avssl.backbones.registry import build_encoder
from avssl.backbones.spec import BackboneSpec
from avssl.backbones.tokenizers import position_table_problem
from avssl.schema import first_violation
from avssl.torch_files import check_fits_before_building, first_line, load_weights
from avssl.value_types import as_typed
from datamodules.preprocessing import Preprocessing

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
REEXPORT = "re-export it with python -m avssl.export (or python -m avssl.convert for a converted checkpoint)"


def _dataclass_from(cls: type, data: dict[str, Any], what: str, path: Path) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"{path}: unknown {what} keys {sorted(unknown)}; was it written by a newer avssl?")
    try:
        return cls(**data)
    except (TypeError, ValueError) as err:  # a required field is missing, or a value is refused
        raise ValueError(f"{path}: bad {what} section ({err}); {REEXPORT}") from None


def _check_sizes(spec: BackboneSpec, preprocessing: Preprocessing, path: Path) -> None:
    """Every number of the config within its schema range, and position tables of a bounded size."""
    for node, section in ((spec, "backbone"), (preprocessing, "preprocessing")):
        found = first_violation(node, section)
        if found:
            key, value, problem = found
            raise ValueError(f"{path}: {key}={as_typed(value)}: {problem}; the file was edited or written for "
                             f"another model: restore it, or {REEXPORT}")
    if spec.kind == "cnn":  # CNN towers have no position tables
        return
    try:
        too_big = position_table_problem(spec)
    except ValueError as err:
        raise ValueError(f"{path}: its backbone cannot be built ({err}); {REEXPORT}") from None
    if too_big:
        raise ValueError(f"{path}: {too_big}; the file was edited or written for another model: restore it, or {REEXPORT}")


def _read_shapes(path: Path) -> dict[str, Tensor]:
    """Each tensor of a safetensors file as a meta tensor of its shape: only the header is read."""
    try:
        with safe_open(path, framework="pt") as weights:
            return {name: torch.empty(weights.get_slice(name).get_shape(), device="meta") for name in weights.keys()}
    except Exception as err:  # safetensors raises its own error type (and OSError) for a bad file
        raise ValueError(f"{path} is truncated or not a safetensors file ({first_line(err)}); {REEXPORT}") from None


class PretrainedBackbone(nn.Module):
    """An exported encoder with the preprocessing it was pretrained with.

    Attributes:
        encoder: the `AudioVisualEncoder`.
        preprocessing: the clip decoding and feature settings of pretraining.
    """

    def __init__(self, encoder: AudioVisualEncoder, preprocessing: Preprocessing):
        super().__init__()
        self.encoder = encoder
        self.preprocessing = preprocessing

    @property
    def embed_dim(self) -> int:
        return self.encoder.embed_dim

    def encode_audio(self, audio: Tensor) -> Tensor:
        """``[B, 1, frames, mels]`` normalised fbank -> ``[B, D]``."""
        return self.encoder.encode_audio(audio)

    def encode_video(self, video: Tensor) -> Tensor:
        """``[B, 3, T, S, S]`` normalised frames -> ``[B, D]``."""
        return self.encoder.encode_video(video)

    def encode_joint(self, audio: Tensor, video: Tensor) -> Tensor:
        """Joint embedding of both modalities -> ``[B, D]``."""
        return self.encoder.encode_joint(audio, video)

    @torch.no_grad()
    def embed_file(self, path: str | bytes | os.PathLike) -> dict[str, Tensor]:
        """Embeds the clips of one video file exactly as in pretraining, averaged over its clips.

        Args:
            path: the video; a name that is not valid UTF-8 may be given as bytes or as the
                str Python's file functions return for it (`os.fsdecode`).

        Returns:
            ``{"audio": [D], "video": [D], "joint": [D]}``.

        Raises:
            datamodules.errors.ClipError: the file cannot be used (the reason says why).
        """
        from datamodules.clips import load_clip
        from datamodules.scan import file_clip_starts

        path = os.fsdecode(path)
        pre = replace(self.preprocessing, crop="center")  # evaluation: no random crops
        starts = file_clip_starts(path, pre)
        clips = [load_clip(path, start, pre) for start in starts]
        device = next(self.encoder.parameters()).device
        audio = torch.stack([c["audio"] for c in clips]).to(device)
        video = torch.stack([c["video"] for c in clips]).to(device)
        was_training = self.encoder.training
        self.encoder.eval()
        out = self.encoder.forward_features(audio, video)
        self.encoder.train(was_training)
        return {name: out[f"{name}_embedding"].mean(dim=0) for name in ("audio", "video", "joint")}


def load_backbone(path: str | Path, device: torch.device | str = "cpu") -> PretrainedBackbone:
    """Rebuilds an exported backbone from a directory with ``model.safetensors`` + ``config.yaml``.

    Args:
        path: an export directory, or a run directory (its ``export/`` is used).
        device: where to put the weights.

    The config is checked before anything is built: each number within its schema range, then
    the weights file's header (names and shapes) against the architecture built on torch's meta
    device; only a match is built for real. An edited config cannot make this allocate more than
    the weights file holds.

    Raises:
        FileNotFoundError: the directory or one of its two files is missing.
        ValueError: the files are not an avssl export, a number in the config is out of range, the
            weights file is truncated or corrupt, or the weights do not fit the architecture in the
            config (one line naming the file).
    """
    path = Path(path)
    if (path / "export" / CONFIG_FILE).is_file():
        path = path / "export"
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise FileNotFoundError(
                f"{path / name} not found; pass a directory written by `python -m avssl.export` "
                "or a run directory that has export/"
            )
    config_path, weights_path = path / CONFIG_FILE, path / WEIGHTS_FILE
    try:
        meta = OmegaConf.to_container(OmegaConf.load(config_path))
    except Exception as err:  # yaml and OmegaConf raise several types for a file that is not YAML
        raise ValueError(f"{config_path} cannot be read as YAML ({first_line(err)}); {REEXPORT}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("backbone"), dict) or not isinstance(meta.get("preprocessing"), dict):
        raise ValueError(f"{config_path} is not an avssl export config (needs 'backbone' and 'preprocessing'); {REEXPORT}")
    spec = _dataclass_from(BackboneSpec, meta["backbone"], "backbone", config_path)
    preprocessing = _dataclass_from(Preprocessing, meta["preprocessing"], "preprocessing", config_path)
    _check_sizes(spec, preprocessing, config_path)

    def build() -> nn.Module:
        try:
            return build_encoder(spec)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{config_path}: its backbone cannot be built ({first_line(err)}); {REEXPORT}") from None

    mismatch_fix = f"was {CONFIG_FILE} edited, or does it belong to another model? Restore it, or {REEXPORT}"
    check_fits_before_building(build, _read_shapes(weights_path), weights_path, CONFIG_FILE, mismatch_fix)
    encoder = build()
    try:
        state = load_file(weights_path, device="cpu")
    except Exception as err:  # safetensors raises its own error type (and OSError) for a bad file
        raise ValueError(f"{weights_path} is truncated or not a safetensors file ({first_line(err)}); {REEXPORT}") from None
    load_weights(encoder, state, weights_path, CONFIG_FILE, mismatch_fix)
    model = PretrainedBackbone(encoder, preprocessing).to(device)
    return model.eval()
