"""What every encoder kind offers: the `AudioVisualBackbone` protocol and the output keys it declares.

Objectives and probes are written against this protocol, not against one encoder class. Each kind
states, as class attributes, the keys its `forward_features` dict always holds (`OUTPUT_KEYS`) and
whether it can drop tokens before encoding (`MASKABLE`); each objective states the keys it reads
(`avssl.objectives.Objective.requires`). A recipe pairing an objective with a kind that lacks one
of its keys is refused when the config is loaded (`avssl.objectives.contract`).

Output keys (shapes with B batch, Ka / Kv visible audio / video tokens, D width):

- ``audio_embedding``, ``video_embedding``, ``joint_embedding`` ``[B, D]``: every kind.
- ``audio_tokens [B, Ka, D]``, ``video_tokens [B, Kv, D]``, ``joint_tokens [B, Ka + Kv, D]``,
  ``audio_idx_keep`` / ``audio_idx_mask`` and the video equivalents (token indices kept and
  dropped by the pass's masking): transformer kinds.
- ``bottleneck_tokens``: the MBT fusion kind; ``audio_feature_map``, ``video_feature_map``: CNN
  towers. With ``spec.cls_token`` transformer kinds add ``audio_cls_token`` / ``video_cls_token``.
"""

from __future__ import annotations

from typing import ClassVar, Protocol, runtime_checkable

from torch import Tensor

from avssl.backbones.masking import MaskSpec
from avssl.backbones.spec import BackboneSpec

EMBEDDING_KEYS = frozenset({"audio_embedding", "video_embedding", "joint_embedding"})
TOKEN_KEYS = EMBEDDING_KEYS | {
    "audio_tokens", "video_tokens", "joint_tokens",
    "audio_idx_keep", "audio_idx_mask", "video_idx_keep", "video_idx_mask",
}


@runtime_checkable
class AudioVisualBackbone(Protocol):
    """An audio-visual encoder as the rest of avssl uses it (`avssl.backbones.registry.ENCODER_KINDS`)."""

    OUTPUT_KEYS: ClassVar[frozenset[str]]
    MASKABLE: ClassVar[bool]
    spec: BackboneSpec

    @property
    def embed_dim(self) -> int: ...

    def forward_features(self, audio: Tensor, video: Tensor, audio_mask: MaskSpec | None = None,
                         video_mask: MaskSpec | None = None) -> dict[str, Tensor]: ...

    def encode_audio(self, audio: Tensor) -> Tensor: ...

    def encode_video(self, video: Tensor) -> Tensor: ...

    def encode_joint(self, audio: Tensor, video: Tensor) -> Tensor: ...
