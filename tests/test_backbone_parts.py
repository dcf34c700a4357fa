"""Backbone parts: block options, tokenizer options, every encoder kind, presets and exports."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import yaml

import avssl
from avssl.backbones.masking import MaskSpec
from avssl.backbones import (
    BACKBONE_PRESETS,
    AudioVisualEncoder,
    BackboneSpec,
    BottleneckFusionEncoder,
    SharedEncoder,
    build_encoder,
    create_backbone,
)
from avssl.backbones.block import Block
from avssl.backbones.tokenizers import SpectrogramPatchTokenizer, TubeletTokenizer, interpolate_pos_embed
from avssl.config import ConfigError, load_config
from avssl.export import export_encoder
from avssl.loading import load_backbone
from datamodules.preprocessing import Preprocessing

SPEC = BackboneSpec(
    embed_dim=32,
    num_heads=4,
    modality_specific_depth=2,
    shared_depth=1,
    audio_frames=64,
    num_mel_bins=32,
    num_frames=4,
    frame_size=32,
    video_patch=[2, 16, 16],
)
NA, NV = (32 // 16) * (64 // 16), 2 * 2 * 2  # 8 audio and 8 video tokens
KINDS = ["cav_mae", "shared", "bottleneck"]
# every option on at once, on top of each kind
OPTIONS = dict(cls_token=True, pos_embed="learned", drop_path=0.1, layer_scale_init=0.1, qkv_bias=False)


def _inputs(spec: BackboneSpec, b: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(b, 1, spec.audio_frames, spec.num_mel_bins, generator=g)
    video = torch.randn(b, 3, spec.num_frames, spec.frame_size, spec.frame_size, generator=g)
    return audio, video


def _spec(kind: str, options: bool) -> BackboneSpec:
    return replace(SPEC, kind=kind, **(OPTIONS if options else {}))


# ----------------------------------------------------------------------------- every encoder kind


@pytest.mark.parametrize("options", [False, True], ids=["plain", "options"])
@pytest.mark.parametrize("kind", KINDS)
def test_shapes_masking_and_gradients(kind, options):
    spec = _spec(kind, options)
    torch.manual_seed(0)
    enc = build_encoder(spec).eval()  # eval: drop-path must not drop a whole branch of the gradient check
    assert type(enc) is {"cav_mae": AudioVisualEncoder, "shared": SharedEncoder, "bottleneck": BottleneckFusionEncoder}[kind]
    audio, video = _inputs(spec)
    out = enc.forward_features(audio, video, MaskSpec(ratio=0.5), MaskSpec(ratio=0.75))
    ka, kv = round(NA * 0.5), round(NV * 0.25)
    assert out["audio_tokens"].shape == (2, ka, 32)
    assert out["video_tokens"].shape == (2, kv, 32)
    assert out["joint_tokens"].shape == (2, ka + kv, 32)
    assert out["audio_idx_keep"].shape == (2, ka) and out["audio_idx_mask"].shape == (2, NA - ka)
    assert out["video_idx_keep"].shape == (2, kv) and out["video_idx_mask"].shape == (2, NV - kv)
    for name in ("audio", "video", "joint"):
        assert out[f"{name}_embedding"].shape == (2, 32)
    assert ("audio_cls_token" in out) == options
    for name, t in out.items():
        assert torch.isfinite(t.float()).all(), name
    loss = sum(t.pow(2).mean() for k, t in out.items() if t.is_floating_point())
    loss.backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"No gradient for {name}"
    for encode, args in ((enc.encode_audio, (audio,)), (enc.encode_video, (video,)), (enc.encode_joint, (audio, video))):
        assert encode(*args).shape == (2, 32)


@pytest.mark.parametrize("options", [False, True], ids=["plain", "options"])
@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_round_trip_reproduces_outputs(kind, options):
    spec = _spec(kind, options)
    torch.manual_seed(0)
    enc = build_encoder(spec).eval()
    torch.manual_seed(1)
    fresh = build_encoder(spec).eval()
    audio, video = _inputs(spec)
    assert not torch.allclose(fresh.encode_audio(audio), enc.encode_audio(audio))
    fresh.load_state_dict(enc.state_dict())
    a, b = enc.forward_features(audio, video), fresh.forward_features(audio, video)
    for name in a:
        torch.testing.assert_close(a[name], b[name])


def test_default_cav_mae_parameter_names_are_unchanged():
    # A CAV-MAE checkpoint converter and existing exports rely on exactly these names.
    enc = AudioVisualEncoder(replace(SPEC, modality_specific_depth=1))
    block = ["norm1.{s}.weight", "norm1.{s}.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
             "norm2.{s}.weight", "norm2.{s}.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"]
    expected = {"audio_modality", "video_modality", "audio_tokenizer.proj.weight", "audio_tokenizer.proj.bias",
                "video_tokenizer.proj.weight", "video_tokenizer.proj.bias"}
    for prefix in ("audio_blocks.0.", "video_blocks.0."):
        expected |= {prefix + k.format(s="x") for k in block}
    expected |= {"shared_blocks.0." + k.format(s=s) for k in block for s in ("av", "a", "v")}
    expected |= {f"norm.{s}.{w}" for s in ("av", "a", "v") for w in ("weight", "bias")}
    assert set(enc.state_dict()) == expected


# ----------------------------------------------------------------------------- shared and bottleneck


def test_shared_encoder_uses_one_transformer_for_both_modalities():
    enc = SharedEncoder(SPEC).eval()
    assert not hasattr(enc, "audio_blocks") and not hasattr(enc, "video_blocks")
    assert len(enc.blocks) == SPEC.modality_specific_depth + SPEC.shared_depth
    audio, video = _inputs(SPEC)
    enc.encode_audio(audio).sum().backward()
    block_params = list(enc.blocks.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in block_params)
    assert all(p.grad is None for p in enc.video_tokenizer.parameters())
    # the video path runs through those very tensors: changing one changes the video embedding
    before = enc.encode_video(video)
    with torch.no_grad():
        # a random change: a constant one cancels out, since the block's LayerNorm outputs sum to 0
        enc.blocks[0].attn.qkv.weight.add_(0.5 * torch.randn(enc.blocks[0].attn.qkv.weight.shape, generator=torch.Generator().manual_seed(0)))
    assert not torch.allclose(enc.encode_video(video), before)


def test_bottleneck_is_the_only_path_between_modalities():
    audio, video = _inputs(SPEC)
    other_video = torch.randn_like(video)
    # Two fusion layers: video reaches audio via the bottlenecks video wrote in the first one.
    for num_bottlenecks, changes in ((0, False), (4, True)):
        spec = replace(SPEC, kind="bottleneck", modality_specific_depth=1, shared_depth=2, num_bottlenecks=num_bottlenecks)
        enc = BottleneckFusionEncoder(spec).eval()
        a1 = enc.forward_features(audio, video)["audio_tokens"]
        a2 = enc.forward_features(audio, other_video)["audio_tokens"]
        assert (not torch.allclose(a1, a2)) == changes, num_bottlenecks
        assert torch.equal(enc.forward_features(audio, video)["video_tokens"], enc.forward_features(audio, video)["video_tokens"])
    assert enc.forward_features(audio, video)["bottleneck_tokens"].shape == (2, 4, 32)


def test_bottleneck_before_the_fusion_layer_audio_ignores_video():
    # All layers modality-specific (no fusion layer): the bottlenecks are never attended.
    enc = BottleneckFusionEncoder(replace(SPEC, kind="bottleneck", modality_specific_depth=3, shared_depth=0)).eval()
    audio, video = _inputs(SPEC)
    a1 = enc.forward_features(audio, video)["audio_tokens"]
    torch.testing.assert_close(a1, enc.forward_features(audio, torch.randn_like(video))["audio_tokens"], rtol=0, atol=0)


# ----------------------------------------------------------------------------- block parts


def test_drop_path_is_identity_in_eval_and_active_in_training():
    torch.manual_seed(0)
    plain = Block(32, 4)
    dropping = Block(32, 4, drop_path=0.5)
    dropping.load_state_dict(plain.state_dict())
    x = torch.randn(16, 5, 32)
    torch.testing.assert_close(dropping.eval()(x), plain.eval()(x))
    assert not torch.allclose(dropping.train()(x), plain(x))


def test_layer_scale_starts_at_init_values_and_is_absent_by_default():
    blk = Block(32, 4, init_values=1e-6)
    assert torch.equal(blk.ls1.gamma, torch.full((32,), 1e-6)) and torch.equal(blk.ls2.gamma, torch.full((32,), 1e-6))
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(blk(x), x, atol=1e-4, rtol=0)  # residual branches scaled to ~0
    assert not any("ls" in name for name in Block(32, 4).state_dict())


@pytest.mark.parametrize("kind", KINDS)
def test_math_attention_matches_sdpa(kind):
    torch.manual_seed(0)
    sdpa = build_encoder(_spec(kind, False)).eval()
    math = build_encoder(replace(_spec(kind, False), attention="math")).eval()
    math.load_state_dict(sdpa.state_dict())
    assert math.spec.attention == "math" and sdpa.spec.attention == "sdpa"
    audio, video = _inputs(SPEC)
    a, b = sdpa.forward_features(audio, video), math.forward_features(audio, video)
    for name in ("audio_tokens", "video_tokens", "joint_tokens"):
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-5)


def test_unknown_attention_kernel_is_rejected():
    with pytest.raises(ValueError, match="attention='flash'.*'math', 'sdpa'"):
        Block(32, 4, attention="flash")


# ----------------------------------------------------------------------------- tokenizers


def test_xkd_audio_patches_give_560_tokens():
    tok = SpectrogramPatchTokenizer(80, 448, (4, 16), 32, cls_token=True, pos_embed="learned")
    assert tok.grid == (20, 28) and tok.num_tokens == 560
    assert tok(torch.randn(2, 1, 448, 80)).shape == (2, 560, 32)
    assert tok.cls(torch.zeros(2, 560, 32)).shape == (2, 561, 32)


def test_overlapping_audio_patches():
    tok = SpectrogramPatchTokenizer(32, 64, (16, 16), 8, stride=(8, 8))
    assert tok.grid == ((32 - 16) // 8 + 1, (64 - 16) // 8 + 1) == (3, 7)
    audio = torch.randn(2, 1, 64, 32)
    assert tok(audio).shape == (2, 21, 8)
    patches = tok.patchify(audio)  # (B, N, 256): the values the convolution sees
    assert patches.shape == (2, 21, 256)
    # token 1 is frequency row 0, time column 1: frames 8..24, mels 0..16
    torch.testing.assert_close(patches[:, 1].reshape(2, 16, 16), audio[:, 0, 8:24, 0:16].transpose(1, 2))


@pytest.mark.parametrize("pos_embed", ["sincos", "learned"])
def test_longer_inputs_interpolate_position_embeddings(pos_embed):
    spec = replace(SPEC, pos_embed=pos_embed, cls_token=True)
    enc = build_encoder(spec).eval()
    out = enc.forward_features(torch.randn(2, 1, 128, 32), torch.randn(2, 3, 8, 32, 32))  # 2x frames
    assert out["audio_tokens"].shape == (2, 2 * NA, 32)
    assert out["video_tokens"].shape == (2, 2 * NV, 32)
    assert torch.isfinite(out["joint_tokens"]).all()
    tok = enc.audio_tokenizer
    assert tok.pos_embed_for((2, 8)).shape == (1, 16, 32)
    assert tok.pos_embed_for(tok.grid) is tok.pos_embed


def test_interpolation_to_the_same_grid_is_identity_and_resamples_otherwise():
    pos = torch.randn(1, 2 * 4, 6)
    assert torch.equal(interpolate_pos_embed(pos, (2, 4), (2, 4)), pos)
    # a grid constant along time stays constant along time after bicubic resampling
    const_time = torch.randn(1, 2, 1, 6).expand(1, 2, 4, 6).reshape(1, 8, 6)
    up = interpolate_pos_embed(const_time, (2, 4), (2, 8)).reshape(2, 8, 6)
    torch.testing.assert_close(up, up[:, :1].expand(2, 8, 6))
    video = torch.randn(1, 1 * 2 * 2, 6)
    up = interpolate_pos_embed(video, (1, 2, 2), (4, 2, 2)).reshape(4, 4, 6)  # trilinear: every frame the same
    torch.testing.assert_close(up, video.reshape(1, 4, 6).expand(4, 4, 6))
    tok = TubeletTokenizer(2, 32, (2, 16, 16), 8)
    assert tok(torch.randn(1, 3, 6, 32, 32)).shape == (1, 3 * 4, 8)


def test_input_that_does_not_fit_the_patches_names_both_shapes():
    enc = build_encoder(SPEC)
    with pytest.raises(ValueError, match=r"\(2, 1, 60, 32\).*\[B, 1, 64, 32\].*audio_frames=60"):
        enc.encode_audio(torch.zeros(2, 1, 60, 32))


# ----------------------------------------------------------------------------- presets, config, exports


@pytest.mark.parametrize("name", [n for n in BACKBONE_PRESETS if n.endswith("_tiny")])
def test_tiny_presets_run(name):
    enc = create_backbone(name, audio_frames=64, num_frames=4, frame_size=32)
    s = enc.spec
    audio, video = _inputs(s)
    out = enc.forward_features(audio, video, MaskSpec(ratio=0.5), MaskSpec(ratio=0.5))
    assert torch.isfinite(out["joint_embedding"]).all()


def test_presets_hold_the_published_settings():
    xkd = create_backbone("xkd_tiny")
    assert xkd.audio_tokenizer.num_tokens == 560 and xkd.video_tokenizer.num_tokens == 8 * 7 * 7
    assert xkd.spec.cls_token and xkd.spec.pos_embed == "learned" and not xkd.spec.qkv_bias
    assert xkd.audio_blocks[0].attn.qkv.bias is None
    mbt = avssl.create_backbone("mbt_base")
    assert isinstance(mbt, BottleneckFusionEncoder)
    assert (mbt.spec.modality_specific_depth, mbt.spec.shared_depth, mbt.spec.num_bottlenecks) == (8, 4, 4)
    assert isinstance(create_backbone("vatt_shared_tiny"), SharedEncoder)
    assert create_backbone("cav_mae_tiny", drop_path=0.2).spec.drop_path == 0.2


def test_unknown_preset_or_override_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown backbone 'vit_base'.*cav_mae_base"):
        create_backbone("vit_base")
    with pytest.raises(ValueError, match="unknown backbone override.*'depth'"):
        create_backbone("cav_mae_tiny", depth=3)
    with pytest.raises(ValueError, match="kind='perceiver'.*bottleneck"):
        build_encoder(replace(SPEC, kind="perceiver"))


def test_config_fields_reach_the_spec_and_bad_values_name_the_key():
    config = load_config(["recipe=cav_mae_demo", "backbone.kind=bottleneck", "backbone.num_bottlenecks=2", "backbone.cls_token=true",
                          "backbone.pos_embed=learned", "backbone.drop_path=0.1", "backbone.layer_scale_init=0.1",
                          "backbone.attention=math", "backbone.audio_patch_stride=[10,10]"])
    spec = config.backbone.resolve(config.data.preprocessing)
    assert (spec.kind, spec.num_bottlenecks, spec.cls_token, spec.pos_embed) == ("bottleneck", 2, True, "learned")
    assert (spec.drop_path, spec.layer_scale_init, spec.attention, spec.audio_patch_stride) == (0.1, 0.1, "math", [10, 10])
    demo = load_config(["recipe=cav_mae_demo"])
    default = demo.backbone.resolve(demo.data.preprocessing)
    assert (default.kind, default.cls_token, default.pos_embed, default.audio_patch_stride) == ("cav_mae", False, "sincos", None)
    with pytest.raises(ConfigError, match="backbone.kind"):
        load_config(["backbone.kind=resnet"])
    with pytest.raises(ConfigError, match="backbone.drop_path"):
        load_config(["backbone.drop_path=1.5"])


@pytest.mark.parametrize("kind", KINDS)
def test_export_and_load_backbone_rebuild_every_kind(tmp_path, kind):
    enc = build_encoder(_spec(kind, True)).eval()
    pre = Preprocessing(clip_seconds=1.0, num_frames=4, frame_size=32, num_mel_bins=32, audio_frames=64)
    export_encoder(enc, pre, tmp_path)
    model = load_backbone(tmp_path)
    assert type(model.encoder) is type(enc)
    audio, video = _inputs(SPEC)
    torch.testing.assert_close(model.encode_joint(audio, video), enc.encode_joint(audio, video))


def test_export_written_before_the_new_fields_still_loads(tmp_path):
    enc = build_encoder(SPEC).eval()
    pre = Preprocessing(clip_seconds=1.0, num_frames=4, frame_size=32, num_mel_bins=32, audio_frames=64)
    export_encoder(enc, pre, tmp_path)
    meta = yaml.safe_load((tmp_path / "config.yaml").read_text())
    old_keys = {"embed_dim", "num_heads", "modality_specific_depth", "shared_depth", "mlp_ratio", "qkv_bias", "norm_eps",
                "audio_frames", "num_mel_bins", "audio_patch", "num_frames", "frame_size", "video_patch"}
    meta["backbone"] = {k: v for k, v in meta["backbone"].items() if k in old_keys}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(meta))
    model = load_backbone(tmp_path)
    assert isinstance(model.encoder, AudioVisualEncoder)
    audio, _ = _inputs(SPEC)
    torch.testing.assert_close(model.encode_audio(audio), enc.encode_audio(audio))
