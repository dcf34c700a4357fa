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
from safetensors.torch import load_file
from torch import Tensor, nn

from avssl.backbones.encoder import AudioVisualEncoder
from avssl.backbones.registry import build_encoder
from avssl.backbones.spec import BackboneSpec
from datamodules.preprocessing import Preprocessing

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"


def _dataclass_from(cls: type, data: dict[str, Any], what: str, path: Path) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"{path}: unknown {what} keys {sorted(unknown)}; was it written by a newer avssl?")
    return cls(**data)


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

    Raises:
        FileNotFoundError: the directory or one of its two files is missing.
        ValueError: the files are not an avssl export.
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
    meta = OmegaConf.to_container(OmegaConf.load(path / CONFIG_FILE))
    if not isinstance(meta, dict) or "backbone" not in meta or "preprocessing" not in meta:
        raise ValueError(f"{path / CONFIG_FILE} is not an avssl export config (needs 'backbone' and 'preprocessing')")
    spec = _dataclass_from(BackboneSpec, meta["backbone"], "backbone", path)
    preprocessing = _dataclass_from(Preprocessing, meta["preprocessing"], "preprocessing", path)
    encoder = build_encoder(spec)
    encoder.load_state_dict(load_file(path / WEIGHTS_FILE, device="cpu"))
    model = PretrainedBackbone(encoder, preprocessing).to(device)
    return model.eval()
