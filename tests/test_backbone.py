"""The audio-visual encoder, its tokenizers, masking and the MAE decoder."""

import pytest
import torch
import torch.nn.functional as F

from avssl.backbones.masking import MaskSpec
from avssl.backbones import AudioVisualEncoder, BackboneSpec, MAEDecoder
from avssl.backbones.masking import drop_tokens

SPEC = BackboneSpec(
    embed_dim=32, num_heads=4, modality_specific_depth=2, shared_depth=1,
    audio_frames=64, num_mel_bins=32, audio_patch=[16, 16], num_frames=4, frame_size=32, video_patch=[2, 16, 16],
)


def inputs(batch: int = 3):
    return torch.randn(batch, 1, 64, 32), torch.randn(batch, 3, 4, 32, 32)


def test_token_counts_and_output_shapes_with_masking():
    enc = AudioVisualEncoder(SPEC)
    assert enc.audio_tokenizer.num_tokens == (32 // 16) * (64 // 16) == 8
    assert enc.video_tokenizer.num_tokens == (4 // 2) * 2 * 2 == 8
    audio, video = inputs()
    out = enc.forward_features(audio, video, MaskSpec(ratio=0.75), MaskSpec(ratio=0.5))
    assert out["audio_tokens"].shape == (3, 2, 32)
    assert out["video_tokens"].shape == (3, 4, 32)
    assert out["joint_tokens"].shape == (3, 6, 32)
    for name in ("audio", "video", "joint"):
        assert out[f"{name}_embedding"].shape == (3, 32)
        assert torch.isfinite(out[f"{name}_embedding"]).all()


def test_cav_mae_base_geometry():
    spec = BackboneSpec()  # the defaults are CAV-MAE's ViT-B at 1024 x 128 audio and one 224 px frame
    enc = AudioVisualEncoder(spec)
    assert enc.audio_tokenizer.grid == (8, 64)
    assert enc.audio_tokenizer.num_tokens == 512
    assert enc.video_tokenizer.num_tokens == 196
    assert len(enc.audio_blocks) == 11 and len(enc.shared_blocks) == 1


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.75])
def test_drop_tokens_keeps_a_disjoint_complete_split(ratio):
    tokens = torch.arange(2 * 20, dtype=torch.float).reshape(2, 20, 1)
    visible, keep, mask = drop_tokens(tokens, ratio)
    assert keep.shape[1] == int(20 * (1 - ratio))
    for b in range(2):
        assert sorted(keep[b].tolist() + mask[b].tolist()) == list(range(20))
        assert torch.equal(visible[b, :, 0], tokens[b, keep[b], 0])


def test_drop_tokens_rejects_impossible_ratio():
    with pytest.raises(ValueError, match="mask_ratio=1.0"):
        drop_tokens(torch.zeros(1, 4, 2), 1.0)


def test_unmasked_forward_matches_encode_methods():
    enc = AudioVisualEncoder(SPEC).eval()
    audio, video = inputs()
    out = enc.forward_features(audio, video)
    torch.testing.assert_close(out["audio_embedding"], enc.encode_audio(audio))
    torch.testing.assert_close(out["video_embedding"], enc.encode_video(video))
    torch.testing.assert_close(out["joint_embedding"], enc.encode_joint(audio, video))


def test_audio_embedding_ignores_video_and_vice_versa():
    enc = AudioVisualEncoder(SPEC).eval()
    audio, video = inputs()
    a = enc.forward_features(audio, video)["audio_embedding"]
    b = enc.forward_features(audio, torch.randn_like(video))["audio_embedding"]
    torch.testing.assert_close(a, b)


def test_patchify_orders_values_like_the_patch_convolution():
    enc = AudioVisualEncoder(SPEC)
    audio, video = inputs()
    # A kernel that picks one value of each patch must equal that column of the patchified tensor.
    kernel = torch.zeros(1, 1, 16, 16)
    kernel[0, 0, 3, 5] = 1.0  # (frequency 3, time 5) inside the patch
    picked = F.conv2d(audio.transpose(2, 3), kernel, stride=16).flatten(2)[:, 0]
    torch.testing.assert_close(picked, enc.audio_tokenizer.patchify(audio)[:, :, 3 * 16 + 5])
    kernel = torch.zeros(1, 3, 2, 16, 16)
    kernel[0, 2, 1, 4, 7] = 1.0  # channel 2, frame 1, row 4, column 7
    picked = F.conv3d(video, kernel, stride=(2, 16, 16)).flatten(2)[:, 0]
    torch.testing.assert_close(picked, enc.video_tokenizer.patchify(video)[:, :, ((1 * 16 + 4) * 16 + 7) * 3 + 2])


def test_wrong_input_shape_names_both_shapes():
    enc = AudioVisualEncoder(SPEC)
    with pytest.raises(ValueError, match=r"\(2, 1, 60, 32\).*\[B, 1, 64, 32\]"):
        enc.encode_audio(torch.zeros(2, 1, 60, 32))


def test_decoder_predicts_every_patch_and_every_parameter_gets_a_gradient():
    enc = AudioVisualEncoder(SPEC)
    dec = MAEDecoder(32, enc.audio_tokenizer, enc.video_tokenizer, decoder_dim=16, depth=1, num_heads=2)
    audio, video = inputs()
    out = enc.forward_features(audio, video, MaskSpec(ratio=0.5), MaskSpec(ratio=0.5))
    pred_a, pred_v = dec(out["joint_tokens"], out["audio_idx_keep"], out["video_idx_keep"])
    assert pred_a.shape == (3, 8, 256) and pred_v.shape == (3, 8, 2 * 16 * 16 * 3)
    loss = pred_a.pow(2).mean() + pred_v.pow(2).mean() + out["audio_embedding"].sum() + out["video_embedding"].sum()
    loss.backward()
    missing = [n for n, p in [*enc.named_parameters(), *dec.named_parameters()] if p.grad is None]
    assert not missing, f"No gradient for {missing}"


def test_state_dict_round_trip_gives_identical_outputs():
    enc = AudioVisualEncoder(SPEC).eval()
    other = AudioVisualEncoder(SPEC).eval()
    other.load_state_dict(enc.state_dict())
    audio, video = inputs()
    torch.testing.assert_close(enc.encode_joint(audio, video), other.encode_joint(audio, video))
