"""`python -m avssl.convert cav_mae`: CAV-MAE checkpoints become avssl exports with the same outputs.

The reference code (YuanGongND/cav-mae@68fe8c2a src/models/cav_mae.py) cannot live in the repo, so
the tests build state dicts in its key layout with random weights and compare avssl's outputs with
a naive forward written here from the reference's equations. Parity with the reference model itself
(ViT-B, max abs diff <= 3e-6) was measured outside the repo; see docs/export.md.
"""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

import avssl
from avssl.convert import CONVERTERS, convert
from avssl.convert.__main__ import main

D, HEADS, DEPTH, SHARED, P = 64, 2, 2, 1, 16
MELS, FRAMES, SIDE = 128, 256, 64  # audio grid 8 x 16 = 128 tokens, video grid 4 x 4 = 16 tokens


def sincos(dim: int, rows: int, cols: int) -> torch.Tensor:
    """MAE / CAV-MAE fixed positions in float64: first half encodes the column, second the row."""
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))
    col, row = np.meshgrid(np.arange(cols, dtype=np.float64), np.arange(rows, dtype=np.float64))

    def one(pos):
        out = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    return torch.from_numpy(np.concatenate([one(col), one(row)], axis=1)).float()[None]  # (1, rows*cols, dim)


def block_keys(prefix: str) -> dict[str, tuple[int, ...]]:
    shapes = {"attn.qkv.weight": (3 * D, D), "attn.qkv.bias": (3 * D,), "attn.proj.weight": (D, D),
              "attn.proj.bias": (D,), "mlp.fc1.weight": (4 * D, D), "mlp.fc1.bias": (4 * D,),
              "mlp.fc2.weight": (D, 4 * D), "mlp.fc2.bias": (D,)}
    for norm in ("norm1", "norm1_a", "norm1_v", "norm2", "norm2_a", "norm2_v"):  # every CAV-MAE Block has all six
        shapes |= {f"{norm}.weight": (D,), f"{norm}.bias": (D,)}
    return {f"{prefix}.{k}": s for k, s in shapes.items()}


def reference_state(kind: str = "pretrain", seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with CAV-MAE's key layout (no ``module.`` prefix) and random weights."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"patch_embed_a.proj.weight": (D, 1, P, P), "patch_embed_a.proj.bias": (D,),
              "patch_embed_v.proj.weight": (D, 3, P, P), "patch_embed_v.proj.bias": (D,),
              "modality_a": (1, 1, D), "modality_v": (1, 1, D)}
    for stack, depth in (("blocks_a", DEPTH), ("blocks_v", DEPTH), ("blocks_u", SHARED)):
        for i in range(depth):
            shapes |= block_keys(f"{stack}.{i}")
    for norm in ("norm", "norm_a", "norm_v"):
        shapes |= {f"{norm}.weight": (D,), f"{norm}.bias": (D,)}
    if kind == "pretrain":
        shapes |= {"decoder_embed.weight": (32, D), "decoder_embed.bias": (32,), "mask_token": (1, 1, 32),
                   "decoder_modality_a": (1, 1, 32), "decoder_pos_embed_a": (1, 128, 32),
                   "decoder_blocks.0.norm1.weight": (32,), "decoder_norm.weight": (32,),
                   "decoder_pred_a.weight": (P * P, 32), "decoder_pred_v.weight": (3 * P * P, 32)}
    else:
        shapes |= {"mlp_head.0.weight": (D,), "mlp_head.0.bias": (D,), "mlp_head.1.weight": (10, D), "mlp_head.1.bias": (10,)}
    state = {}
    for k, s in shapes.items():
        t = torch.randn(s, generator=g)
        state[k] = 1 + 0.2 * t if "norm" in k and k.endswith("weight") else 0.1 * t if len(s) == 1 else t / math.sqrt(s[-1])
    state["pos_embed_a"] = sincos(D, MELS // P, FRAMES // P)
    state["pos_embed_v"] = sincos(D, SIDE // P, SIDE // P)
    return state


def naive_features(sd: dict[str, torch.Tensor], audio: torch.Tensor, video: torch.Tensor) -> dict[str, torch.Tensor]:
    """CAV-MAE's forward_feat / forward_encoder (mask ratio 0) from reference tensors, written out by hand.

    audio ``[B, frames, mels]``, video ``[B, 3, H, W]`` (the reference's layouts).
    """

    def ln(x, name):
        return F.layer_norm(x, (D,), sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-5)

    def block(x, name, suffix=""):
        b, n, _ = x.shape
        h = ln(x, f"{name}.norm1{suffix}")
        q, k, v = (h @ sd[f"{name}.attn.qkv.weight"].T + sd[f"{name}.attn.qkv.bias"]).reshape(b, n, 3, HEADS, D // HEADS).unbind(2)
        att = torch.softmax(torch.einsum("bqhc,bkhc->bhqk", q, k) / math.sqrt(D // HEADS), dim=-1)
        x = x + torch.einsum("bhqk,bkhc->bqhc", att, v).reshape(b, n, D) @ sd[f"{name}.attn.proj.weight"].T + sd[f"{name}.attn.proj.bias"]
        h = F.gelu(ln(x, f"{name}.norm2{suffix}") @ sd[f"{name}.mlp.fc1.weight"].T + sd[f"{name}.mlp.fc1.bias"])
        return x + h @ sd[f"{name}.mlp.fc2.weight"].T + sd[f"{name}.mlp.fc2.bias"]

    a = F.conv2d(audio[:, None].transpose(2, 3), sd["patch_embed_a.proj.weight"], sd["patch_embed_a.proj.bias"], stride=P)
    a = a.flatten(2).transpose(1, 2) + sd["pos_embed_a"] + sd["modality_a"]
    v = F.conv2d(video, sd["patch_embed_v.proj.weight"], sd["patch_embed_v.proj.bias"], stride=P)
    v = v.flatten(2).transpose(1, 2) + sd["pos_embed_v"] + sd["modality_v"]
    for i in range(DEPTH):
        a, v = block(a, f"blocks_a.{i}"), block(v, f"blocks_v.{i}")
    x, ca, cv = torch.cat([a, v], dim=1), a, v
    for i in range(SHARED):
        x, ca, cv = block(x, f"blocks_u.{i}"), block(ca, f"blocks_u.{i}", "_a"), block(cv, f"blocks_u.{i}", "_v")
    return {"joint_tokens": ln(x, "norm"), "audio_tokens": ln(ca, "norm_a"), "video_tokens": ln(cv, "norm_v")}


def save(state, path, wrap=None):
    obj = {"module." + k: v for k, v in state.items()}
    torch.save({wrap: obj} if wrap else obj, path)
    return path


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, FRAMES, MELS, generator=g), torch.randn(2, 3, SIDE, SIDE, generator=g)


@pytest.mark.parametrize("kind", ["pretrain", "finetune"])
def test_cli_converts_and_outputs_match_reference_equations(tmp_path, inputs, kind):
    state = reference_state(kind)
    src = save(state, tmp_path / "cav-mae.pth")
    assert main(["cav_mae", str(src), "--out", str(tmp_path / "export"), "--num-heads", str(HEADS)]) == 0
    model = avssl.load_backbone(tmp_path / "export")
    spec = model.encoder.spec
    assert (spec.embed_dim, spec.num_heads, spec.modality_specific_depth, spec.shared_depth) == (D, HEADS, DEPTH, SHARED)
    assert (spec.num_mel_bins, spec.audio_frames, spec.frame_size, spec.video_patch) == (MELS, FRAMES, SIDE, [1, P, P])
    assert (model.preprocessing.audio_frames, model.preprocessing.audio_mean) == (FRAMES, -5.081)

    audio, video = inputs
    with torch.no_grad():
        ours = model.encoder.forward_features(audio[:, None], video[:, :, None])
        expected = naive_features(state, audio, video)
    for key, want in expected.items():
        torch.testing.assert_close(ours[key], want, atol=1e-5, rtol=0, msg=key)


def test_weights_land_in_the_right_parameters(tmp_path):
    state = reference_state()
    out = convert("cav_mae", save(state, tmp_path / "c.pth"), tmp_path / "export", num_heads=HEADS)
    params = avssl.load_backbone(out).encoder.state_dict()
    pairs = {"audio_blocks.1.attn.qkv.weight": "blocks_a.1.attn.qkv.weight", "video_blocks.0.norm1.x.weight": "blocks_v.0.norm1.weight",
             "shared_blocks.0.norm1.av.bias": "blocks_u.0.norm1.bias", "shared_blocks.0.norm1.a.weight": "blocks_u.0.norm1_a.weight",
             "shared_blocks.0.norm2.v.weight": "blocks_u.0.norm2_v.weight", "norm.a.weight": "norm_a.weight",
             "norm.av.bias": "norm.bias", "audio_modality": "modality_a"}
    for ours, theirs in pairs.items():
        assert torch.equal(params[ours], state[theirs]), ours
    assert torch.equal(params["video_tokenizer.proj.weight"][:, :, 0], state["patch_embed_v.proj.weight"])
    assert not torch.equal(params["shared_blocks.0.norm1.a.weight"], state["blocks_u.0.norm1_v.weight"])


def test_outputs_detect_a_permuted_mapping(inputs):
    # The naive forward is sensitive to which norm set each stream uses: swapping the audio and
    # video norms of the shared block (a plausible mapping slip) changes the outputs.
    state = reference_state()
    swapped = dict(state)
    swapped["blocks_u.0.norm1_a.weight"], swapped["blocks_u.0.norm1_v.weight"] = state["blocks_u.0.norm1_v.weight"], state["blocks_u.0.norm1_a.weight"]
    audio, video = inputs
    right, wrong = naive_features(state, audio, video), naive_features(swapped, audio, video)
    assert (right["audio_tokens"] - wrong["audio_tokens"]).abs().max() > 1e-2


def test_pretrain_and_finetune_layouts_give_the_same_encoder(tmp_path):
    pre, ft = reference_state("pretrain"), reference_state("finetune")
    shared = {k: v for k, v in pre.items() if k in ft}
    a = avssl.load_backbone(convert("cav_mae", save(pre, tmp_path / "pre.pth"), tmp_path / "a", num_heads=HEADS)).encoder.state_dict()
    b = avssl.load_backbone(convert("cav_mae", save(ft, tmp_path / "ft.pth"), tmp_path / "b", num_heads=HEADS)).encoder.state_dict()
    assert set(pre) - set(shared) and set(ft) - set(shared)  # the decoder and the head were dropped
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_accepts_unprefixed_and_wrapped_state_dicts(tmp_path, wrap):
    state = reference_state()
    path = tmp_path / "c.pth"
    torch.save({wrap: state} if wrap else state, path)
    convert("cav_mae", path, tmp_path / "export", num_heads=HEADS)
    assert avssl.load_backbone(tmp_path / "export").embed_dim == D


def test_every_reference_key_is_consumed_or_deliberately_dropped(tmp_path):
    out = convert("cav_mae", save(reference_state(), tmp_path / "c.pth"), tmp_path / "export", num_heads=HEADS)
    dropped = OmegaConf.load(out / "config.yaml").source.dropped
    kept = len(avssl.load_backbone(out).encoder.state_dict())
    assert kept + sum(dropped.values()) == len(reference_state())
    assert set(dropped) == {
        "fixed sin-cos position embeddings (checked against avssl's, then recomputed)",
        "per-modality norms of modality-specific blocks (unused by CAV-MAE)",
        "MAE decoder (CAVMAE pretraining)",
    }


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.pop("blocks_a.0.attn.qkv.weight"), "missing 1 key: blocks_a.0.attn.qkv.weight"),
        (lambda s: s.update(extra_thing=torch.zeros(1)), "unexpected 1 key: extra_thing"),
        (lambda s: s.update({"modality_a": torch.zeros(1, 1, 2 * D)}), "wrong shape for 1 key: modality_a"),
        (lambda s: s["pos_embed_a"].add_(1e-3), "pos_embed_a differs from avssl's fixed sin-cos"),
        (lambda s: s.pop("patch_embed_v.proj.weight"), "not a CAV-MAE checkpoint"),
    ],
)
def test_wrong_checkpoints_are_rejected_with_the_reason(tmp_path, edit, message):
    state = reference_state()
    edit(state)
    with pytest.raises(ValueError, match=message):
        convert("cav_mae", save(state, tmp_path / "c.pth"), tmp_path / "export", num_heads=HEADS)
    assert not (tmp_path / "export").exists()


def test_cli_user_errors_exit_2_with_one_line(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    for argv, message in [
        (["cav_mae", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "o")], "does not exist"),
        (["cav_mae", str(tmp_path / "notes.txt"), "--out", str(tmp_path / "o")], "could not be read as a PyTorch checkpoint"),
        (["mae", str(tmp_path / "notes.txt"), "--out", str(tmp_path / "o")], f"available: {', '.join(sorted(CONVERTERS))}"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_module_entry_point(tmp_path):
    run = subprocess.run([sys.executable, "-m", "avssl.convert", "cav_mae", str(tmp_path / "x.pth"), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "Traceback" not in run.stderr and "does not exist" in run.stderr
