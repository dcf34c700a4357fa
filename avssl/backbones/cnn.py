"""CNN towers of the contrastive and clustering audio-visual papers (L3/AVC, XDC, CrissCross).

Papers and published settings:

- L3 / AVC: Arandjelović & Zisserman, "Look, Listen and Learn", ICCV 2017, arXiv:1705.08168.
  Audio subnetwork: four conv blocks (64, 128, 256, 512 channels), each two 3x3 conv-BN-ReLU
  layers, 2x2 max pooling after the first three, max pooling over the whole remaining map at the
  end -> 512-d (Keras re-implementation `marl/l3embedding@4c38e8db
  l3embedding/audio_model.py::construct_cnn_L3_orig_audio_model`). AVC classifies whether the
  concatenated audio and visual embeddings correspond; that concatenation belongs to the
  objective, not to this encoder.
- XDC: Alwassel et al., "Self-Supervised Learning by Cross-Modal Audio-Video Clustering",
  NeurIPS 2020, arXiv:1911.12667. Video tower: R(2+1)D-18 as in torchvision
  (`HumamAlwassel/XDC@0961d8be model/r2plus1d_18.py`).
- CrissCross: Sarkar & Etemad, "Self-Supervised Audio-Visual Representation Learning with Relaxed
  Cross-Modal Synchronicity", AAAI 2023, arXiv:2111.05329. R(2+1)D-18 video (8 frames at 112 px)
  and a ResNet-18 on the 1-channel log-mel spectrogram (`pritamqu/CrissCross@1fe8953a
  crisscross/train/models/crisscross.py`).

Deviations:

- ``strided_conv`` (video and audio) is avssl's own CPU-sized pair, not a published network: four
  stride-2 3x3(x3) conv-BN-ReLU stages of w, 2w, 4w, 8w channels (``tower_width`` w) and a global
  average or max pool (``video_pool``, ``audio_pool``), the shape of the small conv towers the contrastive papers' ablations use. It
  exists so that the default recipe learns on 2 CPU cores in minutes (docs/objectives.md): a
  32-wide pair trains at about 2 steps/s on a batch of 32 demo clips, R(2+1)D-18 at about 0.1.
- All towers use PyTorch's BatchNorm defaults (eps 1e-5, momentum 0.1). XDC's released model sets
  eps 1e-3 / momentum 0.9 to match Caffe2; only loading those checkpoints would need that.
- The audio towers take avssl's fbank layout ``[B, 1, frames, mels]`` (time first); L3 used a
  257-bin linear dB spectrogram ``(freq, time)``. Both towers pool globally, so any size works.
- The L3 tower's convolutions keep their bias as in the Keras model although BN follows; L3's
  L2 weight decay of 1e-5 is an optimiser setting, not part of the module.

Shape letters: B batch, T frames, H/W frame size, F fbank frames, M mel bins, D embedding width.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import resnet18
from torchvision.models.video import r2plus1d_18

from avssl.backbones.masking import MaskSpec
from avssl.backbones.protocol import EMBEDDING_KEYS
from avssl.backbones.spec import BackboneSpec

FEATURE_DIM = 512  # channels of the last stage of every tower below


def _check_input(x: Tensor, name: str, ndim: int, channels: int, layout: str) -> None:
    if x.ndim != ndim or x.shape[1] != channels:
        raise ValueError(f"{name} input of shape {tuple(x.shape)} does not match {layout}")


class R2Plus1DVideoTower(nn.Module):
    """R(2+1)D-18 (Tran et al., CVPR 2018, arXiv:1711.11248) from torchvision, without its fc.

    ``forward_features``: ``[B, 3, T, H, W] -> [B, 512, t, h, w]`` with ``t = ceil(T / 8)`` and
    ``h = ceil(H / 16)`` (the stem halves H and W; stages 2-4 halve T, H and W).
    ``forward``: the same map average-pooled over time and space -> ``[B, 512]``.
    """

    out_dim = FEATURE_DIM

    def __init__(self):
        super().__init__()
        net = r2plus1d_18(weights=None)
        self.stem, self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.stem, net.layer1, net.layer2, net.layer3, net.layer4
        )
        self.pool = net.avgpool  # AdaptiveAvgPool3d(1)

    def forward_features(self, video: Tensor) -> Tensor:
        _check_input(video, "video", 5, 3, "[B, 3, T, H, W] (normalised frames)")
        x = self.stem(video)  # (B, 64, T, H/2, W/2)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
        return x  # (B, 512, t, h, w)

    def forward(self, video: Tensor) -> Tensor:
        return self.pool(self.forward_features(video)).flatten(1)  # (B, 512)


class ResNet18AudioTower(nn.Module):
    """ResNet-18 (He et al., CVPR 2016, arXiv:1512.03385) on a 1-channel spectrogram (CrissCross).

    torchvision's ``resnet18`` with its first convolution taking one channel and without its fc.
    ``forward_features``: ``[B, 1, F, M] -> [B, 512, F/32, M/32]`` (rounded up);
    ``forward``: global average pool -> ``[B, 512]``.
    """

    out_dim = FEATURE_DIM

    def __init__(self):
        super().__init__()
        net = resnet18(weights=None)
        # One input channel instead of RGB; same kernel, stride and padding as torchvision's stem.
        net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # torchvision's policy
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.pool = net.avgpool  # AdaptiveAvgPool2d(1)

    def forward_features(self, audio: Tensor) -> Tensor:
        _check_input(audio, "audio", 4, 1, "[B, 1, frames, mels] (log-mel fbank)")
        x = self.stem(audio)  # (B, 64, F/4, M/4)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
        return x  # (B, 512, F/32, M/32)

    def forward(self, audio: Tensor) -> Tensor:
        return self.pool(self.forward_features(audio)).flatten(1)  # (B, 512)


def _conv_bn_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class L3AudioTower(nn.Module):
    """VGG-style audio subnetwork of L3 / AVC (see the module docstring for the source).

    Four blocks of two 3x3 conv-BN-ReLU layers (64, 128, 256, 512 channels); 2x2 max pooling
    after blocks 1-3 and a global max pool at the end (L3's final 32x24 pool covers its whole map).
    ``forward_features``: ``[B, 1, F, M] -> [B, 512, F/8, M/8]`` (rounded down);
    ``forward``: ``[B, 512]``.
    """

    out_dim = FEATURE_DIM
    widths = (64, 128, 256, 512)

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 1
        for i, width in enumerate(self.widths):
            layers += [_conv_bn_relu(in_ch, width), _conv_bn_relu(width, width)]
            if i < len(self.widths) - 1:
                layers.append(nn.MaxPool2d(2, stride=2))
            in_ch = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveMaxPool2d(1)

    def forward_features(self, audio: Tensor) -> Tensor:
        _check_input(audio, "audio", 4, 1, "[B, 1, frames, mels] (log-mel fbank)")
        if min(audio.shape[2:]) < 8:
            raise ValueError(
                f"audio input of shape {tuple(audio.shape)} is too small for l3_vgg's three 2x2 "
                "poolings; it needs at least 8 frames and 8 mel bins"
            )
        return self.features(audio)  # (B, 512, F/8, M/8)

    def forward(self, audio: Tensor) -> Tensor:
        return self.pool(self.forward_features(audio)).flatten(1)  # (B, 512)


# Global pooling of the strided_conv towers' last map (`BackboneSpec.video_pool`, `audio_pool`), by input rank.
TOWER_POOLS: dict[str, dict[int, type[nn.Module]]] = {
    "avg": {2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d},
    "max": {2: nn.AdaptiveMaxPool2d, 3: nn.AdaptiveMaxPool3d},
}


def _strided_stages(conv: type[nn.Module], norm: type[nn.Module], in_ch: int, width: int,
                    strides: tuple[int | tuple[int, ...], ...]) -> nn.Sequential:
    """Conv-BN-ReLU stages of width, 2 x width, ... channels, one per stride, 3 (x 3) kernels."""
    layers: list[nn.Module] = []
    for i, stride in enumerate(strides):
        out_ch = width * 2**i
        layers += [conv(in_ch, out_ch, 3, stride=stride, padding=1, bias=False), norm(out_ch), nn.ReLU(inplace=True)]
        in_ch = out_ch
    return nn.Sequential(*layers)


class StridedConvVideoTower(nn.Module):
    """Four 3x3x3 conv-BN-ReLU stages (w, 2w, 4w, 8w channels) and a global pool (``pool``: avg or max).

    Space is halved by every stage but the first, which strides by ``stem_stride`` (2: halved
    too; 1: full resolution), time only by the third, so 4 input frames still give 2 steps of
    motion features. ``forward_features``: ``[B, 3, T, H, W] -> [B, 8w, T/2, H/(8 s), W/(8 s)]``
    (rounded up, s the stem stride); ``forward``: ``[B, 8w]``.
    """

    def __init__(self, width: int = 32, stem_stride: int = 2, pool: str = "avg"):
        super().__init__()
        self.out_dim = 8 * width
        strides = ((1, stem_stride, stem_stride), (1, 2, 2), (2, 2, 2), (1, 2, 2))
        self.features = _strided_stages(nn.Conv3d, nn.BatchNorm3d, 3, width, strides)
        self.pool = TOWER_POOLS[pool][3](1)

    def forward_features(self, video: Tensor) -> Tensor:
        _check_input(video, "video", 5, 3, "[B, 3, T, H, W] (normalised frames)")
        return self.features(video)  # (B, 8w, t, h, w)

    def forward(self, video: Tensor) -> Tensor:
        return self.pool(self.forward_features(video)).flatten(1)  # (B, 8w)


class StridedConvAudioTower(nn.Module):
    """Four stride-2 3x3 conv-BN-ReLU stages (w, 2w, 4w, 8w channels) and a global pool (avg or max).

    ``forward_features``: ``[B, 1, F, M] -> [B, 8w, F/16, M/16]`` (rounded up); ``forward``: ``[B, 8w]``.
    """

    def __init__(self, width: int = 32, pool: str = "avg"):
        super().__init__()
        self.out_dim = 8 * width
        self.features = _strided_stages(nn.Conv2d, nn.BatchNorm2d, 1, width, (2, 2, 2, 2))
        self.pool = TOWER_POOLS[pool][2](1)

    def forward_features(self, audio: Tensor) -> Tensor:
        _check_input(audio, "audio", 4, 1, "[B, 1, frames, mels] (log-mel fbank)")
        return self.features(audio)  # (B, 8w, f, m)

    def forward(self, audio: Tensor) -> Tensor:
        return self.pool(self.forward_features(audio)).flatten(1)  # (B, 8w)


# Tower names of `BackboneSpec.video_tower` and `audio_tower` (kind "cnn"); each maps to a
# constructor taking the spec (only the strided_conv towers read fields of it: tower_width,
# video_pool / audio_pool, and tower_stem_stride for video).
VIDEO_TOWERS: dict[str, Callable[[BackboneSpec], nn.Module]] = {
    "r2plus1d_18": lambda spec: R2Plus1DVideoTower(),
    "strided_conv": lambda spec: StridedConvVideoTower(spec.tower_width, spec.tower_stem_stride, spec.video_pool),
}
AUDIO_TOWERS: dict[str, Callable[[BackboneSpec], nn.Module]] = {
    "resnet18": lambda spec: ResNet18AudioTower(),
    "l3_vgg": lambda spec: L3AudioTower(),
    "strided_conv": lambda spec: StridedConvAudioTower(spec.tower_width, spec.audio_pool),
}


class CNNAudioVisualEncoder(nn.Module):
    """One video CNN tower and one audio CNN tower with the `AudioVisualEncoder` interface.

    Args:
        spec: a `BackboneSpec` of kind ``cnn``: ``video_tower``, ``audio_tower``,
            ``tower_width`` (strided_conv towers only) and ``embed_dim`` (the towers' own width,
            512 for the published ones, keeps their pooled features as they are, the published
            setting, since the papers put their projection or classifier heads in the objective;
            any other width adds a linear projection per modality). The transformer fields are
            ignored.

    Outputs of `forward_features` (later stages may add keys, never rename them):
        ``audio_embedding``, ``video_embedding`` ``[B, D]``: pooled tower outputs, projected to
        ``embed_dim`` when the spec asks for it; ``joint_embedding [B, D]``: the **mean** of the
        two after each is scaled to unit L2 norm (same width as the per-modality embeddings, as in
        `AudioVisualEncoder`; AVC's correspondence head concatenates the two embeddings itself).
        The towers' outputs differ in scale by their pooling (a max-pooled map gives values several
        times an average-pooled one's), and a plain mean would be the larger one's with the other
        added as noise: on looming the plain mean probed 7 points below this one (docs/backbones.md);
        ``audio_feature_map [B, C, f, m]``, ``video_feature_map [B, C, t, h, w]``: last
        feature maps before pooling and projection (C: the tower's width, 512 for the published ones).

    Raises:
        ValueError: a mask that drops tokens (CNN towers see the whole input), or inputs of the wrong
            layout.

    Examples:
        >>> import torch
        >>> enc = CNNAudioVisualEncoder(BackboneSpec(kind="cnn", audio_tower="l3_vgg", embed_dim=128))
        >>> out = enc.forward_features(torch.randn(2, 1, 64, 32), torch.randn(2, 3, 4, 32, 32))
        >>> out["joint_embedding"].shape
        torch.Size([2, 128])
    """

    OUTPUT_KEYS = EMBEDDING_KEYS | {"audio_feature_map", "video_feature_map"}
    MASKABLE = False

    def __init__(self, spec: BackboneSpec):
        super().__init__()
        for key, value, valid in (("video_tower", spec.video_tower, VIDEO_TOWERS),
                                  ("audio_tower", spec.audio_tower, AUDIO_TOWERS)):
            if value not in valid:
                raise ValueError(f"backbone.{key}={value!r} is unknown; choose one of {sorted(valid)}")
        self.spec = spec
        self.video_tower = VIDEO_TOWERS[spec.video_tower](spec)
        self.audio_tower = AUDIO_TOWERS[spec.audio_tower](spec)
        d = spec.embed_dim
        self.video_proj = nn.Identity() if d == self.video_tower.out_dim else nn.Linear(self.video_tower.out_dim, d)
        self.audio_proj = nn.Identity() if d == self.audio_tower.out_dim else nn.Linear(self.audio_tower.out_dim, d)

    @property
    def embed_dim(self) -> int:
        return self.spec.embed_dim

    def encode_audio(self, audio: Tensor) -> Tensor:
        """Clip embedding from audio alone: ``[B, 1, frames, mels] -> [B, D]``."""
        return self.audio_proj(self.audio_tower(audio))

    def encode_video(self, video: Tensor) -> Tensor:
        """Clip embedding from video alone: ``[B, 3, T, H, W] -> [B, D]``."""
        return self.video_proj(self.video_tower(video))

    def encode_joint(self, audio: Tensor, video: Tensor) -> Tensor:
        """Mean of the unit-norm audio and video embeddings: ``-> [B, D]``."""
        return self.forward_features(audio, video)["joint_embedding"]

    def forward_features(
        self, audio: Tensor, video: Tensor, audio_mask: MaskSpec | None = None, video_mask: MaskSpec | None = None
    ) -> dict[str, Tensor]:
        """Encodes a batch of clips.

        Args:
            audio: normalised fbank ``[B, 1, frames, mels]``.
            video: normalised frames ``[B, 3, T, H, W]``.
            audio_mask: must drop nothing (None or ratio 0): CNN towers see the whole input.
            video_mask: the same for video.

        Raises:
            ValueError: if a mask drops tokens.
        """
        for name, mask in (("audio", audio_mask), ("video", video_mask)):
            if mask is not None and mask.ratio:
                raise ValueError(f"{name} mask ratio {mask.ratio}: CNN towers do not drop tokens; use a pass "
                                 "without masking, or a transformer backbone.")
        a_map = self.audio_tower.forward_features(audio)  # (B, C, f, m)
        v_map = self.video_tower.forward_features(video)  # (B, C, t, h, w)
        a = self.audio_proj(self.audio_tower.pool(a_map).flatten(1))  # (B, D)
        v = self.video_proj(self.video_tower.pool(v_map).flatten(1))  # (B, D)
        return {
            "audio_embedding": a,
            "video_embedding": v,
            "joint_embedding": (F.normalize(a, dim=1) + F.normalize(v, dim=1)) / 2,
            "audio_feature_map": a_map,
            "video_feature_map": v_map,
        }
