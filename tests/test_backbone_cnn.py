"""CNN towers (R(2+1)D-18 / strided-conv video, ResNet-18 / L3 / strided-conv audio) and `CNNAudioVisualEncoder`."""

import dataclasses

import pytest
import torch

from avssl.backbones.masking import MaskSpec
from avssl.backbones.cnn import AUDIO_TOWERS, VIDEO_TOWERS, CNNAudioVisualEncoder
from avssl.backbones.spec import BackboneSpec


def inputs(batch: int = 2):
    return torch.randn(batch, 1, 64, 32), torch.randn(batch, 3, 4, 32, 32)  # fbank 64 x 32, 4 frames 32 px


def cnn_spec(**fields) -> BackboneSpec:
    return BackboneSpec(**{"kind": "cnn", "embed_dim": 512, **fields})


SPECS = [  # every tower, with and without a projection to embed_dim
    cnn_spec(audio_tower="resnet18"),
    cnn_spec(audio_tower="l3_vgg", embed_dim=16),
    cnn_spec(video_tower="strided_conv", audio_tower="strided_conv", tower_width=8, embed_dim=64),
    cnn_spec(video_tower="strided_conv", audio_tower="strided_conv", tower_width=8, embed_dim=64, tower_stem_stride=1),
    cnn_spec(video_tower="strided_conv", audio_tower="strided_conv", tower_width=8, embed_dim=64, video_pool="max", audio_pool="max"),
]
# video feature map of 4 frames of 32 px: R(2+1)D-18 halves T three times (rounded up), strided_conv
# once; strided_conv halves space four times, three with a full-resolution first layer
VIDEO_MAPS = {("r2plus1d_18", 2): (2, 512, 1, 2, 2), ("strided_conv", 2): (2, 64, 2, 2, 2), ("strided_conv", 1): (2, 64, 2, 4, 4)}


@pytest.fixture(scope="module", params=SPECS,
                ids=lambda s: f"{s.video_tower}-{s.audio_tower}-{s.embed_dim}-stem{s.tower_stem_stride}-{s.video_pool}-{s.audio_pool}")
def encoder(request):
    torch.manual_seed(0)
    return CNNAudioVisualEncoder(request.param)


def test_output_shapes_and_finite(encoder):
    audio, video = inputs()
    d = encoder.embed_dim
    assert d == encoder.spec.embed_dim
    out = encoder.forward_features(audio, video)
    for name in ("audio", "video", "joint"):
        assert out[f"{name}_embedding"].shape == (2, d)
        assert torch.isfinite(out[f"{name}_embedding"]).all()
    assert out["video_feature_map"].shape == VIDEO_MAPS[encoder.spec.video_tower, encoder.spec.tower_stem_stride]
    assert out["audio_feature_map"].shape[:2] == (2, encoder.audio_tower.out_dim)
    unit = [out[f"{name}_embedding"] / out[f"{name}_embedding"].norm(dim=1, keepdim=True) for name in ("audio", "video")]
    assert torch.allclose(out["joint_embedding"], (unit[0] + unit[1]) / 2, atol=1e-6)


def test_joint_embedding_weighs_both_modalities_whatever_their_scale():
    """A tower whose outputs are 100x the other's must not drown the other in the joint embedding."""
    torch.manual_seed(0)
    encoder = CNNAudioVisualEncoder(cnn_spec(video_tower="strided_conv", audio_tower="strided_conv", tower_width=8,
                                             embed_dim=32)).eval()
    audio, video = inputs()
    out = encoder.forward_features(audio, video)
    with torch.no_grad():
        for p in encoder.video_proj.parameters():
            p.mul_(100)
    scaled = encoder.forward_features(audio, video)
    torch.testing.assert_close(scaled["video_embedding"], 100 * out["video_embedding"])
    torch.testing.assert_close(scaled["joint_embedding"], out["joint_embedding"])


def test_every_parameter_gets_a_gradient(encoder):
    encoder.train()
    audio, video = inputs()
    encoder.zero_grad()
    out = encoder.forward_features(audio, video)
    out["joint_embedding"].square().mean().backward()
    for name, p in encoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"No gradient for {name}"


def test_encode_methods_match_forward_features(encoder):
    encoder.eval()
    audio, video = inputs()
    with torch.no_grad():
        out = encoder.forward_features(audio, video)
        assert torch.allclose(encoder.encode_audio(audio), out["audio_embedding"], atol=1e-6)
        assert torch.allclose(encoder.encode_video(video), out["video_embedding"], atol=1e-6)
        assert torch.allclose(encoder.encode_joint(audio, video), out["joint_embedding"], atol=1e-6)


def test_spec_and_state_dict_round_trip(encoder):
    encoder.eval()
    rebuilt = CNNAudioVisualEncoder(BackboneSpec(**dataclasses.asdict(encoder.spec))).eval()
    rebuilt.load_state_dict(encoder.state_dict())
    audio, video = inputs()
    with torch.no_grad():
        a, b = encoder.forward_features(audio, video), rebuilt.forward_features(audio, video)
    for key in ("audio_embedding", "video_embedding", "joint_embedding"):
        assert torch.equal(a[key], b[key])


def test_max_pool_keeps_a_small_bright_patch_that_avg_pool_dilutes():
    torch.manual_seed(0)
    pooled = {p: CNNAudioVisualEncoder(cnn_spec(video_tower="strided_conv", audio_tower="strided_conv",
                                                tower_width=8, embed_dim=64, video_pool=p)) for p in ("avg", "max")}
    pooled["max"].load_state_dict(pooled["avg"].state_dict())  # pooling has no weights: same towers
    video = torch.zeros(2, 3, 4, 32, 32)
    video[1, :, :, 4:8, 4:8] = 3.0  # one 4 x 4 object in the second clip only
    with torch.no_grad():
        maps = pooled["avg"].eval().video_tower.forward_features(video)
        change = {p: (enc.eval().encode_video(video)[1] - enc.encode_video(video)[0]).norm().item()
                  for p, enc in pooled.items()}
    assert torch.allclose(pooled["max"].encode_video(video), pooled["max"].video_proj(maps.amax(dim=(2, 3, 4))))
    assert change["max"] > 2 * change["avg"]


@pytest.mark.parametrize("ratios", [(0.75, 0.0), (0.0, 0.5)])
def test_masking_is_rejected(ratios):
    enc = CNNAudioVisualEncoder(cnn_spec(audio_tower="l3_vgg"))
    with pytest.raises(ValueError, match="CNN towers do not drop tokens"):
        enc.forward_features(*inputs(1), *(MaskSpec(ratio=r) for r in ratios))


def test_bad_spec_and_inputs_raise_readable_errors():
    with pytest.raises(ValueError, match=r"audio_tower='vggish' is unknown; choose one of \['l3_vgg', 'resnet18', 'strided_conv'\]"):
        CNNAudioVisualEncoder(cnn_spec(audio_tower="vggish"))
    with pytest.raises(ValueError, match="video_tower='r3d_18' is unknown"):
        CNNAudioVisualEncoder(cnn_spec(video_tower="r3d_18"))
    enc = CNNAudioVisualEncoder(cnn_spec(audio_tower="l3_vgg"))
    audio, video = inputs(1)
    with pytest.raises(ValueError, match=r"audio input of shape \(1, 64, 32\)"):
        enc.encode_audio(audio[:, 0])
    with pytest.raises(ValueError, match=r"video input of shape \(1, 1, 4, 32, 32\)"):
        enc.encode_video(video[:, :1])
    with pytest.raises(ValueError, match="at least 8 frames and 8 mel bins"):
        enc.encode_audio(torch.randn(1, 1, 64, 4))


def test_registered_tower_names():
    assert sorted(VIDEO_TOWERS) == ["r2plus1d_18", "strided_conv"]
    assert sorted(AUDIO_TOWERS) == ["l3_vgg", "resnet18", "strided_conv"]
