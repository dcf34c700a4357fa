"""Objectives: closed forms, naive references, symmetry, and that the loss drops."""

import math

import pytest
import torch
import torch.nn.functional as F

from avssl.backbones.masking import MaskSpec
from avssl.backbones import AudioVisualEncoder, BackboneSpec
from avssl.config import ConfigError
from avssl.objectives import OBJECTIVES, build_objective, check_objective_config, objective_weight, register_objective
from avssl.objectives.contrastive import AVInfoNCE
from avssl.objectives.masked import masked_patch_mse

SPEC = BackboneSpec(
    embed_dim=32, num_heads=4, modality_specific_depth=1, shared_depth=1,
    audio_frames=32, num_mel_bins=32, num_frames=2, frame_size=32, video_patch=[2, 16, 16],
)

HALF = MaskSpec(ratio=0.5)


def naive_nt_xent(a, v, t):
    """SimCLR's NT-Xent written out: each of the 2n embeddings against the 2n - 1 others."""
    z = F.normalize(torch.cat([a, v]), dim=1)
    n = a.shape[0]
    losses = []
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        sims = torch.stack([z[i] @ z[j] / t for j in range(2 * n) if j != i])
        target = positive if positive < i else positive - 1
        losses.append(-F.log_softmax(sims, dim=0)[target])
    return torch.stack(losses).mean()


@pytest.mark.parametrize("batch,dim,temperature", [(2, 4, 0.05), (5, 16, 0.1), (8, 3, 0.5)])
def test_infonce_matches_naive_reference_and_is_symmetric(batch, dim, temperature):
    torch.manual_seed(batch)
    a, v = torch.randn(batch, dim), torch.randn(batch, dim)
    loss = AVInfoNCE(temperature=temperature, gather_distributed=False, projection_dim=0)
    result = loss({"unmasked": {"audio_embedding": a, "video_embedding": v}}, {})
    value = result.losses["infonce"]
    torch.testing.assert_close(value, naive_nt_xent(a, v, temperature))
    swapped = loss({"unmasked": {"audio_embedding": v, "video_embedding": a}}, {}).losses["infonce"]
    torch.testing.assert_close(value, swapped)
    assert result.chance["infonce"] == pytest.approx(math.log(2 * batch - 1))
    # equal embeddings for every clip: every candidate is as likely as the positive
    same = loss({"unmasked": {"audio_embedding": a[:1].expand(batch, dim), "video_embedding": a[:1].expand(batch, dim)}}, {})
    assert same.losses["infonce"].item() == pytest.approx(same.chance["infonce"], rel=1e-5)


def test_infonce_closed_form_for_identical_orthogonal_pairs():
    n, t = 4, 0.5
    e = torch.eye(n)
    passes = {"unmasked": {"audio_embedding": e, "video_embedding": e}}
    value = AVInfoNCE(temperature=t, gather_distributed=False, projection_dim=0)(passes, {}).losses["infonce"]
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + (2 * n - 2)))
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_infonce_rejects_non_positive_temperature():
    with pytest.raises(ValueError, match="temperature=0"):
        AVInfoNCE(temperature=0.0)
    with pytest.raises(ValueError, match="projection heads need the backbone"):
        AVInfoNCE(temperature=0.1)


def test_masked_patch_mse_matches_a_loop_over_masked_patches():
    torch.manual_seed(0)
    pred, target = torch.randn(2, 6, 5), torch.randn(2, 6, 5)
    idx_mask = torch.tensor([[0, 3], [5, 1]])
    expected = torch.stack([(pred[b, i] - target[b, i]).pow(2).mean() for b in range(2) for i in idx_mask[b]]).mean()
    torch.testing.assert_close(masked_patch_mse(pred, target, idx_mask, normalize_target=False), expected)
    normed = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    expected = torch.stack([(pred[b, i] - normed[b, i]).pow(2).mean() for b in range(2) for i in idx_mask[b]]).mean()
    torch.testing.assert_close(masked_patch_mse(pred, target, idx_mask, normalize_target=True), expected)


def test_masked_reconstruction_and_infonce_drop_in_a_few_steps():
    torch.manual_seed(0)
    encoder = AudioVisualEncoder(SPEC)
    mae, _ = build_objective("masked_reconstruction", {"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2}, encoder)
    nce, _ = build_objective("av_infonce", {"temperature": 0.1, "gather_distributed": False}, encoder)
    batch = {"audio": torch.randn(4, 1, 32, 32), "video": torch.randn(4, 3, 2, 32, 32)}
    params = [*encoder.parameters(), *mae.parameters()]
    optimizer = torch.optim.Adam(params, lr=3e-3)

    def losses():
        torch.manual_seed(1)  # same masks every step
        out = encoder.forward_features(batch["audio"], batch["video"], HALF, HALF)
        passes = {"masked": out, "unmasked": out}  # both objectives read the one masked pass here
        return {**mae(passes, batch).losses, **nce(passes, batch).losses}

    first = {k: v.item() for k, v in losses().items()}
    for _ in range(25):
        optimizer.zero_grad()
        sum(losses().values()).backward()
        optimizer.step()
    last = {k: v.item() for k, v in losses().items()}
    assert set(first) == {"audio", "video", "infonce"}
    for k in first:
        assert last[k] < 0.8 * first[k], f"{k}: {first[k]:.4f} -> {last[k]:.4f}"


def test_masked_reconstruction_chance_is_the_cost_of_predicting_zero():
    encoder = AudioVisualEncoder(SPEC)
    mae, _ = build_objective("masked_reconstruction", {"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2}, encoder)
    torch.nn.init.zeros_(mae.decoder.audio_head.weight)
    torch.nn.init.zeros_(mae.decoder.audio_head.bias)
    batch = {"audio": torch.randn(3, 1, 32, 32), "video": torch.randn(3, 3, 2, 32, 32)}
    result = mae({"masked": encoder.forward_features(batch["audio"], batch["video"], HALF, HALF)}, batch)
    assert result.chance["audio"] == pytest.approx(255 / 256)  # 16 x 16 patches
    assert result.losses["audio"].item() == pytest.approx(result.chance["audio"], rel=1e-4)


def test_masked_reconstruction_without_masking_says_which_setting_to_change():
    encoder = AudioVisualEncoder(SPEC)
    mae, _ = build_objective("masked_reconstruction", {"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2}, encoder)
    batch = {"audio": torch.randn(2, 1, 32, 32), "video": torch.randn(2, 3, 2, 32, 32)}
    out = encoder.forward_features(batch["audio"], batch["video"], None, HALF)
    with pytest.raises(ValueError, match=r"passes.masked.audio.ratio > 0"):
        mae({"masked": out}, batch)


def test_registry_rejects_a_second_registration_of_a_name():
    with pytest.raises(ValueError, match="already registered"):
        register_objective("av_infonce")(AVInfoNCE)
    assert OBJECTIVES["av_infonce"] is AVInfoNCE


@pytest.mark.parametrize(
    "name,params,message",
    [
        ("av_infonse", {}, "Did you mean 'av_infonce'"),
        ("av_infonce", {"temprature": 0.1}, "objectives.av_infonce.temprature.*Did you mean 'temperature'"),
        ("av_infonce", {"weight": -1}, r"objectives.av_infonce.weight=-1: must be in \[0.0, 1000.0\] \(0 turns the objective off\)"),
        ("av_infonce", {"temperature": -0.5}, r"objectives.av_infonce.temperature=-0.5: must be in \(0.0, 100.0\]"),
        ("av_infonce", {"projection_dim": -1}, r"objectives.av_infonce.projection_dim=-1: must be in \[0, 65_536\]"),
        ("av_infonce", {"temperature": "abc"}, r"objectives.av_infonce.temperature=abc: must be a float \(e.g. 0.05\)"),
        ("masked_reconstruction", {"decoder_depth": 2.5}, r"objectives.masked_reconstruction.decoder_depth=2.5: must be an integer"),
        ("masked_reconstruction", {"decoder_dim": 30, "decoder_heads": 4}, "divisible"),
    ],
)
def test_bad_objective_settings_name_the_key(name, params, message):
    with pytest.raises(ConfigError, match=message):
        build_objective(name, params, AudioVisualEncoder(SPEC))


def test_an_objective_weight_is_read_and_checked_in_one_place():
    assert objective_weight("av_infonce", {}) == 1.0  # the default
    assert objective_weight("av_infonce", {"weight": 0}) == 0.0 and isinstance(objective_weight("av_infonce", {"weight": 2}), float)
    with pytest.raises(ConfigError, match=r"objectives.av_infonce.weight=true: must be a number in \[0.0, 1000.0\]"):
        objective_weight("av_infonce", {"weight": True})
    _, weight = build_objective("av_infonce", {"weight": 3, "gather_distributed": False}, AudioVisualEncoder(SPEC))
    assert weight == 3.0


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_objective_has_type_annotations_the_config_check_can_read(name):
    check_objective_config(name, {})  # resolves the annotations of its __init__
