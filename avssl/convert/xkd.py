"""Convert released XKD backbones (audio and video ViT, student or teacher) to one avssl export.

Sarkar & Etemad, "XKD: Cross-modal Knowledge Distillation with Domain Alignment for Video
Representation Learning", AAAI 2024, arXiv:2211.13929. Reference code:
`pritamqu/XKD@806c75d codes/train/models/modules/{vit_audio,vit_video,vit2}.py`. XKD releases one
file per backbone (`XKD_Net.save_state_dicts`: ``aud_student.pth.tar``, ``vid_student.pth.tar``,
``aud_teacher.pth.tar``, ``vid_teacher.pth.tar``), each ``torch.save(backbone.state_dict())`` of an
`AudioViT` / `VideoViT`; the evaluation code also accepts them under ``'model'``
(`codes/eval/checkpointing/utils.py`). Both go into one `AudioVisualEncoder` with
``shared_depth=0`` (two independent ViTs, the ``xkd_*`` presets):

============================================  ==========================================================
XKD                                           avssl
============================================  ==========================================================
``patch_embed.proj`` (Linear, audio)          ``audio_tokenizer.proj`` (Conv2d; weight ``(D, pf*pt) -> (D, 1, pf, pt)``)
``cuboid_embed.proj`` (Linear, video)         ``video_tokenizer.proj`` (Conv3d; weight ``(D, pt*ph*pw*3) -> (D, 3, pt, ph, pw)``)
``enc_pos_embed[:, 1:]``                      ``{audio,video}_tokenizer.pos_embed``
``cls_token + enc_pos_embed[:, :1]``          ``{audio,video}_tokenizer.cls.token`` (avssl folds the CLS position into the token)
``encoder.blocks.i``                          ``{audio,video}_blocks.i`` (``norm1`` -> ``norm1.x``, ``norm2`` -> ``norm2.x``)
``encoder_norm``                              ``norm.a`` / ``norm.v``
(none)                                        ``audio_modality`` / ``video_modality``: zeros
(none)                                        ``norm.av``: identity (weight 1, bias 0); XKD has no joint stream
============================================  ==========================================================

Token order needs no permutation. XKD's `SpecPatches` takes the spectrogram as ``[B, 1, mels,
frames]`` and rearranges ``b c (h ph) (w pw) -> b (h w) (ph pw c)``: frequency-major tokens, patch
values frequency-major, as avssl's Conv2d on the transposed fbank. `Cuboids` rearranges
``b c (t pt) (h ph) (w pw) -> b (t h w) (pt ph pw c)``: time-major tokens as avssl's Conv3d, but the
channel is the fastest-varying patch value, hence the permute of the video weight.

Dropped on purpose: ``head.*`` (classification head of a fine-tuned `AudioViT` / `VideoViT`). Any
other key is an error. LayerNorms: XKD passes ``nn.LayerNorm`` (eps 1e-5) everywhere.

Departures that do not affect the native input size (80 x 448 spectrogram, 32 x 112 x 112 clip):
for other sizes XKD interpolates positions with ``scale_factor=(n + 0.1) / N`` (bicubic audio, time
only; trilinear video) while avssl interpolates to the exact ``size``, so outputs then differ
slightly. ``joint_tokens`` / ``encode_joint`` have no XKD counterpart.

Shape letters: D width, N tokens, pf/pt audio patch (frequency, time), pt/ph/pw tubelet.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from avssl.backbones.encoder import AudioVisualEncoder
from avssl.backbones.spec import BackboneSpec
from avssl.convert.cav_mae import describe_keys
from avssl.export import export_encoder
from avssl.torch_files import read_state_dict
from datamodules.preprocessing import Preprocessing

REFERENCE = "pritamqu/XKD@806c75d codes/train/models/modules/vit_audio.py, vit_video.py"
# Published XKD input setting (`codes/train/configs/pretext/kinetics400/xkd.yaml`): 80 mel bins in
# 4 x 16 (frequency x time) patches; 32 frames in 4 x 16 x 16 tubelets. A backbone file stores only
# the flattened patch size and the token count, so these split them into axes.
MEL_BINS = 80
AUDIO_PATCH = (4, 16)
NUM_FRAMES = 32
VIDEO_PATCH = (4, 16, 16)
# Files `XKD_Net.save_state_dicts` writes; used when SRC is a directory.
DEFAULT_FILES = {"student": ("aud_student.pth.tar", "vid_student.pth.tar"), "teacher": ("aud_teacher.pth.tar", "vid_teacher.pth.tar")}

log = logging.getLogger(__name__)

_BLOCK_PARAMS = (
    "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
    "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias",
)  # fmt: skip


def read_backbone(path: str | Path, modality: str) -> dict[str, Tensor]:
    """Reads one XKD backbone file: a state dict, possibly under ``'model'``, ``module.`` prefix removed.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a state dict of an XKD `AudioViT` / `VideoViT`.
    """
    path = Path(path)
    example = "aud_student.pth.tar" if modality == "audio" else "vid_student.pth.tar"
    state = read_state_dict(path, f"{modality} checkpoint", f"an XKD backbone file such as {example}")
    if any(k.startswith(("vid_student.", "aud_student.", "vid_teacher.", "aud_teacher.")) for k in state):
        raise ValueError(
            f"{path} is a full XKD training checkpoint (XKD_Net); pass the backbone files that "
            "save_state_dicts writes (aud_student.pth.tar / vid_student.pth.tar, or the teachers) instead"
        )
    tokenizer = "patch_embed" if modality == "audio" else "cuboid_embed"
    other = "cuboid_embed" if modality == "audio" else "patch_embed"
    needed = [f"{tokenizer}.proj.weight", "enc_pos_embed", "cls_token"]
    if any(k not in state for k in needed):
        hint = f"; it looks like the other modality's file (has {other}.proj), swap --audio and --video" if f"{other}.proj.weight" in state else ""
        found = ", ".join(sorted(state)[:5]) + (", ..." if len(state) > 5 else "")
        raise ValueError(
            f"{path} is not an XKD {modality} backbone: {describe_keys('missing', [k for k in needed if k not in state])} "
            f"(found: {found}){hint}. Expected {example} from {REFERENCE}"
        )
    return state


def _depth(state: dict[str, Tensor]) -> int:
    indices = {int(m.group(1)) for k in state if (m := re.match(r"^encoder\.blocks\.(\d+)\.", k))}
    return max(indices) + 1 if indices else 0


def infer_spec(audio: dict[str, Tensor], video: dict[str, Tensor], num_heads: int | None = None) -> BackboneSpec:
    """The `BackboneSpec` of an XKD audio + video backbone pair, read from tensor shapes.

    Args:
        audio: `AudioViT` state dict; video: `VideoViT` state dict (prefixes removed).
        num_heads: attention heads; tensors do not record them. None: ``D / 64`` (12 for ViT-B).

    Raises:
        ValueError: the two backbones disagree, or their shapes do not fit XKD's patch layout.
    """
    wa, wv = audio["patch_embed.proj.weight"], video["cuboid_embed.proj.weight"]  # (D, pf*pt), (D, pt*ph*pw*3)
    d = wa.shape[0]
    problems = []
    if wv.shape[0] != d:
        problems.append(f"audio width {d} but video width {wv.shape[0]}")
    if wa.shape[1] != math.prod(AUDIO_PATCH):
        problems.append(f"audio patch has {wa.shape[1]} values, XKD's {AUDIO_PATCH[0]}x{AUDIO_PATCH[1]} patch has {math.prod(AUDIO_PATCH)}")
    if wv.shape[1] != 3 * math.prod(VIDEO_PATCH):
        problems.append(f"video tubelet has {wv.shape[1]} values, XKD's 3x{'x'.join(map(str, VIDEO_PATCH))} tubelet has {3 * math.prod(VIDEO_PATCH)}")
    depth_a, depth_v = _depth(audio), _depth(video)
    if depth_a != depth_v:
        problems.append(f"audio has {depth_a} layers but video {depth_v} (avssl needs the same depth)")
    num_audio, num_video = audio["enc_pos_embed"].shape[1] - 1, video["enc_pos_embed"].shape[1] - 1  # CLS position excluded
    rows = MEL_BINS // AUDIO_PATCH[0]
    grid_t = NUM_FRAMES // VIDEO_PATCH[0]
    side = math.isqrt(num_video // grid_t) if num_video % grid_t == 0 else 0
    if num_audio % rows != 0:
        problems.append(f"audio enc_pos_embed has {num_audio} patch positions, not a multiple of {rows} frequency rows ({MEL_BINS} mels)")
    if side * side * grid_t != num_video:
        problems.append(f"video enc_pos_embed has {num_video} patch positions, not {grid_t} time steps x a square grid ({NUM_FRAMES} frames)")
    num_heads = num_heads if num_heads is not None else max(d // 64, 1)
    if d % num_heads != 0:
        problems.append(f"num_heads={num_heads} does not divide the width {d}; pass the head count (--num-heads)")
    if problems:
        raise ValueError(f"cannot convert this XKD backbone pair: {'; '.join(problems)}")
    fc1 = audio.get("encoder.blocks.0.mlp.fc1.weight")  # (hidden, D)
    return BackboneSpec(
        embed_dim=d,
        num_heads=num_heads,
        modality_specific_depth=depth_a,
        shared_depth=0,  # two independent ViTs
        mlp_ratio=fc1.shape[0] / d if fc1 is not None else 4.0,
        qkv_bias=any(k.endswith("attn.qkv.bias") for k in audio),
        norm_eps=1e-5,  # XKD passes nn.LayerNorm with torch's default eps
        audio_frames=num_audio // rows * AUDIO_PATCH[1],
        num_mel_bins=MEL_BINS,
        audio_patch=list(AUDIO_PATCH),
        num_frames=NUM_FRAMES,
        frame_size=side * VIDEO_PATCH[1],
        video_patch=list(VIDEO_PATCH),
        cls_token=True,
        pos_embed="learned",
    )


def _block_name(name: str) -> str:
    """XKD block parameter -> avssl's: the single stream's norms are ``norm1.x`` / ``norm2.x``."""
    return re.sub(r"^(norm[12])\.", r"\1.x.", name)


def _modality_state(state: dict[str, Tensor], tokenizer: str, weight: Tensor, ours: str, norm: str, depth: int) -> dict[str, Tensor]:
    """One XKD backbone's tensors under avssl's names (``ours``: ``audio`` or ``video``)."""
    pos = state["enc_pos_embed"]  # (1, 1 + N, D), CLS position first
    out = {
        f"{ours}_tokenizer.proj.weight": weight,
        f"{ours}_tokenizer.proj.bias": state[f"{tokenizer}.proj.bias"],
        f"{ours}_tokenizer.pos_embed": pos[:, 1:],
        f"{ours}_tokenizer.cls.token": state["cls_token"] + pos[:, :1],  # XKD: cls_token + enc_pos_embed[:, :1]
        f"norm.{norm}.weight": state["encoder_norm.weight"],
        f"norm.{norm}.bias": state["encoder_norm.bias"],
    }
    for i in range(depth):
        for name in _BLOCK_PARAMS:
            key = f"encoder.blocks.{i}.{name}"
            if key in state:
                out[f"{ours}_blocks.{i}.{_block_name(name)}"] = state[key]
    return out


def convert_state_dicts(audio: dict[str, Tensor], video: dict[str, Tensor], encoder: AudioVisualEncoder) -> tuple[dict[str, Tensor], dict[str, int]]:
    """Maps XKD audio and video backbone state dicts onto `encoder`'s parameter names.

    Returns:
        ``(avssl_state, dropped)``: the encoder's full state dict, and dropped keys per reason.

    Raises:
        ValueError: keys are missing, unexpected, or have the wrong shape (the message lists them).
    """
    spec, d = encoder.spec, encoder.embed_dim
    pf, pt = AUDIO_PATCH
    vt, vh, vw = VIDEO_PATCH
    wa = audio["patch_embed.proj.weight"].reshape(d, 1, pf, pt)  # (D, pf*pt) -> (D, 1, pf, pt)
    wv = video["cuboid_embed.proj.weight"].reshape(d, vt, vh, vw, 3).permute(0, 4, 1, 2, 3)  # (D, pt*ph*pw*c) -> (D, 3, pt, ph, pw)
    converted = {
        **_modality_state(audio, "patch_embed", wa, "audio", "a", spec.modality_specific_depth),
        **_modality_state(video, "cuboid_embed", wv, "video", "v", spec.modality_specific_depth),
        # Not in XKD: zero modality embeddings and the untouched joint-stream norm.
        "audio_modality": torch.zeros(1, 1, d),
        "video_modality": torch.zeros(1, 1, d),
        "norm.av.weight": torch.ones(d),
        "norm.av.bias": torch.zeros(d),
    }
    problems, dropped = [], {}
    for what, state, tokenizer in (("audio", audio, "patch_embed"), ("video", video, "cuboid_embed")):
        used = {"cls_token", "enc_pos_embed", f"{tokenizer}.proj.weight", f"{tokenizer}.proj.bias", "encoder_norm.weight", "encoder_norm.bias"}
        used |= {f"encoder.blocks.{i}.{n}" for i in range(spec.modality_specific_depth) for n in _BLOCK_PARAMS}
        missing = sorted(k for k in used if k not in state and not k.endswith("qkv.bias"))
        unexpected = [k for k in state if k not in used and not k.startswith("head.")]
        n_head = sum(k.startswith("head.") for k in state)
        if n_head:
            dropped[f"{what} classification head (fine-tuned XKD)"] = n_head
        if missing:
            problems.append(f"{what}: {describe_keys('missing', missing)}")
        if unexpected:
            problems.append(f"{what}: {describe_keys('unexpected', unexpected)}")
    target = encoder.state_dict()
    wrong = [f"{k} {tuple(v.shape)} (avssl {tuple(target[k].shape)})" for k, v in converted.items() if k in target and v.shape != target[k].shape]
    if wrong:
        problems.append(describe_keys("wrong shape for", wrong, limit=3))
    if problems:
        raise ValueError(f"the checkpoints do not match XKD backbones of the inferred architecture: {'; '.join(problems)}. Are they AudioViT / VideoViT state dicts from {REFERENCE}?")
    assert set(converted) == set(target), sorted(set(converted) ^ set(target))  # every avssl tensor is set
    return {k: v.to(target[k].dtype) for k, v in converted.items()}, dropped


def preprocessing_for(spec: BackboneSpec) -> Preprocessing:
    """XKD's input pipeline as far as `Preprocessing` can express it (`codes/train/configs/.../xkd.yaml`).

    NOTE: XKD computes a librosa log-mel (n_fft 1024, hop 143 at 16 kHz); avssl computes a kaldi
    fbank. The window, hop, mel count and normalisation statistics are XKD's, the filterbank and
    log floor are not, so audio features are close to, not equal to, XKD's.
    """
    return replace(
        Preprocessing(),
        clip_seconds=4.0,
        num_frames=spec.num_frames,
        fps=8.0,  # 32 frames at 8 fps = 4 s
        frame_size=spec.frame_size,
        sample_rate=16000,
        num_mel_bins=spec.num_mel_bins,
        frame_length_ms=64.0,  # n_fft 1024 at 16 kHz
        frame_shift_ms=8.9375,  # hop 143 at 16 kHz
        audio_frames=spec.audio_frames,
        audio_mean=-5.3688107,
        audio_std=4.410007,
    )


def convert_xkd(
    src: str | Path | None,
    out: str | Path,
    audio: str | Path | None = None,
    video: str | Path | None = None,
    which: str = "student",
    num_heads: int | None = None,
) -> Path:
    """Converts an XKD audio + video backbone pair to an avssl export directory.

    Args:
        src: a directory holding XKD's backbone files (``aud_student.pth.tar`` ...), or None when
            both `audio` and `video` are given.
        out: export directory to write.
        audio: the audio backbone file (default: ``SRC/aud_<which>.pth.tar``).
        video: the video backbone file (default: ``SRC/vid_<which>.pth.tar``).
        which: ``"student"`` or ``"teacher"``: the files taken from `src`.
        num_heads: attention heads (None: width / 64, i.e. 12 for XKD's ViT-B).

    Returns:
        The export directory, loadable with `avssl.load_backbone`.

    Raises:
        FileNotFoundError: a backbone file does not exist.
        ValueError: the files are not XKD backbones avssl can represent (the message says why).

    Examples:
        >>> convert_xkd(None, "exports/xkd", audio="aud_student.pth.tar", video="vid_student.pth.tar")  # doctest: +SKIP
    """
    if which not in DEFAULT_FILES:
        raise ValueError(f"which={which!r}: must be one of {sorted(DEFAULT_FILES)}")
    if src is not None:
        src = Path(src)
        if not src.is_dir():
            raise ValueError(f"xkd: SRC={src} must be a directory holding {' and '.join(DEFAULT_FILES[which])}; or omit it and pass --audio and --video")
        audio = audio if audio is not None else src / DEFAULT_FILES[which][0]
        video = video if video is not None else src / DEFAULT_FILES[which][1]
    if audio is None or video is None:
        raise ValueError("xkd needs both backbones: pass --audio aud_student.pth.tar and --video vid_student.pth.tar (or a directory holding them)")
    audio_state, video_state = read_backbone(audio, "audio"), read_backbone(video, "video")
    spec = infer_spec(audio_state, video_state, num_heads)
    encoder = AudioVisualEncoder(spec)
    converted, dropped = convert_state_dicts(audio_state, video_state, encoder)
    encoder.load_state_dict(converted, strict=True)
    log.info("XKD audio %s + video %s: kept %d tensors, dropped %s", audio, video, len(converted), dropped)
    source = {
        "checkpoint": {"audio": str(audio), "video": str(video)},
        "converted_from": f"XKD AudioViT + VideoViT backbones, {REFERENCE}",
        "dropped": dropped,
        "added": "audio_modality/video_modality = 0, norm.av = identity (not in XKD)",
    }
    return export_encoder(encoder.eval(), preprocessing_for(spec), out, source=source)
