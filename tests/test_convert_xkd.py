"""`python -m avssl.convert xkd`: XKD audio/video backbones become one avssl export with the same outputs.

The reference code (pritamqu/XKD@806c75d codes/train/models/modules/vit_audio.py, vit_video.py,
vit2.py) needs einops and timm and cannot live in the repo, so these tests build state dicts in its
key layout with random weights and compare avssl's outputs with a naive forward written here from
the reference's equations. Parity with the reference model itself (ViT-B, max abs diff <= 7e-6) was
measured outside the repo; see docs/export.md.
"""

import pytest
import torch
import torch.nn.functional as F

from omegaconf import OmegaConf

import avssl
from avssl.convert import CONVERTERS, convert
from avssl.convert.__main__ import main

D, HEADS, DEPTH = 32, 2, 2
MELS, FRAMES, T, S = 80, 448, 32, 112  # XKD's published input: audio grid 20 x 28, video grid 8 x 7 x 7
PF, PT = 4, 16  # audio patch (frequency, time)
VT, VP = 4, 16  # tubelet (time, space)
N_AUDIO, N_VIDEO = (MELS // PF) * (FRAMES // PT), (T // VT) * (S // VP) ** 2


def backbone_state(modality: str, seed: int = 0, head: bool = False) -> dict[str, torch.Tensor]:
    """A state dict in XKD's `AudioViT` / `VideoViT` key layout (qkv without bias) with random weights."""
    g = torch.Generator().manual_seed(seed)
    tokenizer, patch_dim, n = ("patch_embed", PF * PT, N_AUDIO) if modality == "audio" else ("cuboid_embed", 3 * VT * VP * VP, N_VIDEO)
    shapes = {"cls_token": (1, 1, D), "enc_pos_embed": (1, n + 1, D), f"{tokenizer}.proj.weight": (D, patch_dim),
              f"{tokenizer}.proj.bias": (D,), "encoder_norm.weight": (D,), "encoder_norm.bias": (D,)}
    for i in range(DEPTH):
        shapes |= {f"encoder.blocks.{i}.{k}": s for k, s in {
            "norm1.weight": (D,), "norm1.bias": (D,), "attn.qkv.weight": (3 * D, D), "attn.proj.weight": (D, D),
            "attn.proj.bias": (D,), "norm2.weight": (D,), "norm2.bias": (D,), "mlp.fc1.weight": (4 * D, D),
            "mlp.fc1.bias": (4 * D,), "mlp.fc2.weight": (D, 4 * D), "mlp.fc2.bias": (D,)}.items()}
    if head:
        shapes |= {"head.weight": (5, D), "head.bias": (5,)}
    state = {k: torch.randn(s, generator=g) / (s[-1] ** 0.5 if len(s) == 2 else 5) for k, s in shapes.items()}
    for k in state:
        if k.endswith("norm1.weight") or k.endswith("norm2.weight") or k == "encoder_norm.weight":
            state[k] = state[k] + 1.0
    return state


def xkd_forward(state: dict[str, torch.Tensor], x: torch.Tensor, modality: str) -> torch.Tensor:
    """XKD's `AudioViT.forward` / `VideoViT.forward` at the native size: ``[B, 1 + N, D]`` (CLS first)."""
    b = x.shape[0]
    if modality == "audio":  # x [B, 1, mels, frames]; "b c (h ph) (w pw) -> b (h w) (ph pw c)"
        p = x.reshape(b, 1, MELS // PF, PF, FRAMES // PT, PT).permute(0, 2, 4, 3, 5, 1).reshape(b, N_AUDIO, -1)
        tokens = p @ state["patch_embed.proj.weight"].T + state["patch_embed.proj.bias"]
    else:  # x [B, 3, T, H, W]; "b c (t pt) (h ph) (w pw) -> b (t h w) (pt ph pw c)"
        p = x.reshape(b, 3, T // VT, VT, S // VP, VP, S // VP, VP).permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(b, N_VIDEO, -1)
        tokens = p @ state["cuboid_embed.proj.weight"].T + state["cuboid_embed.proj.bias"]
    pos = state["enc_pos_embed"]
    cls = (state["cls_token"] + pos[:, :1]).expand(b, -1, -1)
    h = torch.cat([cls, tokens + pos[:, 1:]], dim=1)  # (B, 1 + N, D)
    for i in range(DEPTH):
        w = {k[len(f"encoder.blocks.{i}."):]: v for k, v in state.items() if k.startswith(f"encoder.blocks.{i}.")}
        y = F.layer_norm(h, (D,), w["norm1.weight"], w["norm1.bias"], eps=1e-5)
        q, k, v = (y @ w["attn.qkv.weight"].T).reshape(b, -1, 3, HEADS, D // HEADS).permute(2, 0, 3, 1, 4)
        a = ((q @ k.transpose(-2, -1)) * (D // HEADS) ** -0.5).softmax(-1) @ v  # (B, H, N, D/H)
        h = h + a.transpose(1, 2).reshape(b, -1, D) @ w["attn.proj.weight"].T + w["attn.proj.bias"]
        y = F.layer_norm(h, (D,), w["norm2.weight"], w["norm2.bias"], eps=1e-5)
        h = h + F.gelu(y @ w["mlp.fc1.weight"].T + w["mlp.fc1.bias"]) @ w["mlp.fc2.weight"].T + w["mlp.fc2.bias"]
    return F.layer_norm(h, (D,), state["encoder_norm.weight"], state["encoder_norm.bias"], eps=1e-5)


@pytest.fixture
def files(tmp_path):
    audio, video = backbone_state("audio", 0), backbone_state("video", 1)
    torch.save(audio, tmp_path / "aud_student.pth.tar")  # XKD_Net.save_state_dicts: a raw state dict
    torch.save({"model": {f"module.{k}": v for k, v in video.items()}}, tmp_path / "vid_student.pth.tar")  # eval's other form
    return tmp_path, audio, video


def test_registered():
    assert "xkd" in CONVERTERS and "cav_mae" in CONVERTERS


def test_cli_conversion_matches_reference_forward(files, tmp_path):
    d, audio_state, video_state = files
    rc = main(["xkd", "--audio", str(d / "aud_student.pth.tar"), "--video", str(d / "vid_student.pth.tar"),
               "--out", str(tmp_path / "export"), "--num-heads", str(HEADS)])
    assert rc == 0
    backbone = avssl.load_backbone(tmp_path / "export")
    spec = backbone.encoder.spec
    assert (spec.shared_depth, spec.cls_token, spec.pos_embed, spec.qkv_bias, spec.norm_eps) == (0, True, "learned", False, 1e-5)
    g = torch.Generator().manual_seed(3)
    mel = torch.randn(2, 1, MELS, FRAMES, generator=g)  # XKD layout [B, 1, mels, frames]
    video = torch.randn(2, 3, T, S, S, generator=g)
    with torch.no_grad():
        ref_a, ref_v = xkd_forward(audio_state, mel, "audio"), xkd_forward(video_state, video, "video")
        out = backbone.encoder.forward_features(mel.transpose(2, 3), video)  # avssl audio [B, 1, frames, mels]
        emb_a, emb_v = backbone.encode_audio(mel.transpose(2, 3)), backbone.encode_video(video)
    torch.testing.assert_close(out["audio_cls_token"], ref_a[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out["audio_tokens"], ref_a[:, 1:], atol=1e-5, rtol=0)
    torch.testing.assert_close(out["video_cls_token"], ref_v[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out["video_tokens"], ref_v[:, 1:], atol=1e-5, rtol=0)
    # XKD's linear evaluation pools the patch tokens without CLS (`feat_op: pool`), as encode_* do.
    torch.testing.assert_close(emb_a, ref_a[:, 1:].mean(1), atol=1e-5, rtol=0)
    torch.testing.assert_close(emb_v, ref_v[:, 1:].mean(1), atol=1e-5, rtol=0)


def test_key_accounting_and_added_tensors(files, tmp_path):
    d, audio_state, video_state = files
    torch.save(backbone_state("audio", 0, head=True), d / "aud_teacher.pth.tar")  # fine-tuned: head is dropped
    torch.save(video_state, d / "vid_teacher.pth.tar")
    out = convert("xkd", d, tmp_path / "export", which="teacher", num_heads=HEADS)  # SRC directory form
    backbone = avssl.load_backbone(out)
    state = backbone.encoder.state_dict()
    assert torch.equal(state["audio_modality"], torch.zeros(1, 1, D))
    assert torch.equal(state["norm.av.weight"], torch.ones(D)) and torch.equal(state["norm.av.bias"], torch.zeros(D))
    assert torch.equal(state["audio_tokenizer.cls.token"], audio_state["cls_token"] + audio_state["enc_pos_embed"][:, :1])
    assert torch.equal(state["video_tokenizer.pos_embed"], video_state["enc_pos_embed"][:, 1:])
    # One avssl tensor per XKD tensor (cls_token + enc_pos_embed become cls.token + pos_embed), plus
    # the four XKD lacks: audio_modality, video_modality, norm.av.weight, norm.av.bias.
    assert len(state) == len(audio_state) + len(video_state) + 4
    config = OmegaConf.load(out / "config.yaml")
    assert config["source"]["dropped"] == {"audio classification head (fine-tuned XKD)": 2}
    assert config["source"]["checkpoint"]["audio"].endswith("aud_teacher.pth.tar")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--audio", "AUD"], "needs both backbones"),
        (["--audio", "missing.pth.tar", "--video", "VID"], "does not exist"),
        (["--audio", "VID", "--video", "AUD"], "swap --audio and --video"),
        (["--audio", "AUD", "--video", "VID", "--num-heads", "3"], "does not divide the width"),
    ],
)
def test_cli_errors(files, tmp_path, capsys, args, message):
    d = files[0]
    paths = {"AUD": str(d / "aud_student.pth.tar"), "VID": str(d / "vid_student.pth.tar")}
    rc = main(["xkd", *(paths.get(a, a) for a in args), "--out", str(tmp_path / "export")])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "export").exists()


def test_wrong_shapes_and_unexpected_keys(files, tmp_path):
    d, audio_state, video_state = files
    bad = dict(video_state, extra=torch.zeros(1))
    torch.save(bad, d / "bad.pth.tar")
    with pytest.raises(ValueError, match="unexpected 1 key: extra"):
        convert("xkd", None, tmp_path / "e", audio=d / "aud_student.pth.tar", video=d / "bad.pth.tar", num_heads=HEADS)
    short = dict(video_state, enc_pos_embed=video_state["enc_pos_embed"][:, :100])
    torch.save(short, d / "short.pth.tar")
    with pytest.raises(ValueError, match="not 8 time steps"):
        convert("xkd", None, tmp_path / "e", audio=d / "aud_student.pth.tar", video=d / "short.pth.tar", num_heads=HEADS)
    torch.save({"model": {"vid_student.backbone.cls_token": torch.zeros(1)}}, d / "checkpoint.pth.tar")
    with pytest.raises(ValueError, match="full XKD training checkpoint"):
        convert("xkd", None, tmp_path / "e", audio=d / "checkpoint.pth.tar", video=d / "vid_student.pth.tar")


def test_options_are_checked_per_converter(tmp_path):
    with pytest.raises(ValueError, match="cav_mae does not take audio"):
        convert("cav_mae", "x.pth", tmp_path / "e", audio="a.pth")
    with pytest.raises(ValueError, match="cav_mae needs SRC"):
        convert("cav_mae", None, tmp_path / "e")
