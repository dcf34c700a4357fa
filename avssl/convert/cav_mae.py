"""Convert a released CAV-MAE checkpoint (pretrained `CAVMAE` or fine-tuned `CAVMAEFT`) to an avssl export.

Gong et al., "Contrastive Audio-Visual Masked Autoencoder", ICLR 2023, arXiv:2210.07839. Reference
code: `YuanGongND/cav-mae@68fe8c2a src/models/cav_mae.py`. Its checkpoints are
``torch.save(model.state_dict())`` of an ``nn.DataParallel``-wrapped model, so every key starts
with ``module.`` (`src/traintest_cavmae.py`, `src/traintest_ft.py`).

`AudioVisualEncoder` has CAV-MAE's encoder layout, so conversion is a renaming:

=================================  ==========================================================
CAV-MAE                            avssl
=================================  ==========================================================
``patch_embed_a.proj``             ``audio_tokenizer.proj`` (same Conv2d on [B, 1, mels, frames])
``patch_embed_v.proj``             ``video_tokenizer.proj`` (Conv2d [D, 3, p, p] -> Conv3d [D, 3, 1, p, p])
``modality_a`` / ``modality_v``    ``audio_modality`` / ``video_modality``
``blocks_a.i`` / ``blocks_v.i``    ``audio_blocks.i`` / ``video_blocks.i`` (``norm1`` -> ``norm1.x``)
``blocks_u.i``                     ``shared_blocks.i`` (``norm1`` -> ``norm1.av``, ``norm1_a`` -> ``norm1.a``, ...)
``norm`` / ``norm_a`` / ``norm_v``  ``norm.av`` / ``norm.a`` / ``norm.v``
=================================  ==========================================================

Dropped on purpose: the fixed sin-cos ``pos_embed_a`` / ``pos_embed_v`` (avssl recomputes them; the
converter checks that they agree), the per-modality norms ``norm1_a`` ... of the modality-specific
blocks (every CAV-MAE `Block` has them, only the shared blocks use them), the MAE decoder of
`CAVMAE` and the classification head ``mlp_head`` of `CAVMAEFT`. Any other key is an error.

Shape letters: D width, p patch side.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

from torch import Tensor

from avssl.backbones.encoder import AudioVisualEncoder
from avssl.backbones.spec import BackboneSpec
from avssl.export import export_encoder
from avssl.torch_files import read_state_dict
from datamodules.preprocessing import Preprocessing

REFERENCE = "YuanGongND/cav-mae@68fe8c2a src/models/cav_mae.py"
# CAV-MAE lays the audio patches out on a grid of 8 frequency rows whatever the clip length
# (`CAVMAE.initialize_weights`: ``get_2d_sincos_pos_embed(D, 8, num_patches / 8)``), i.e. 128 mel
# bins at patch 16.
AUDIO_FREQUENCY_ROWS = 8
# Fixed position embeddings must agree with avssl's to this tolerance. NOTE: 1e-5, not 1e-6:
# CAV-MAE computes the sin-cos table in float64 (`src/models/pos_embed.py`, ``np.float``), avssl's
# `sincos_2d` uses lightly's helper, whose frequencies are float32, so the phases of the last grid
# columns are off by up to ~4e-6 (measured 3.9e-6 on the 8 x 64 audio grid at D=768). Learned
# (fine-tuned) or mis-ordered positions differ by orders of magnitude more.
POS_EMBED_ATOL = 1e-5

log = logging.getLogger(__name__)

# avssl name -> CAV-MAE name, applied in order to every key of `AudioVisualEncoder.state_dict()`.
_TO_REFERENCE: list[tuple[str, str]] = [
    (r"^audio_tokenizer\.", "patch_embed_a."),
    (r"^video_tokenizer\.", "patch_embed_v."),
    (r"^audio_modality$", "modality_a"),
    (r"^video_modality$", "modality_v"),
    (r"^audio_blocks\.", "blocks_a."),
    (r"^video_blocks\.", "blocks_v."),
    (r"^shared_blocks\.", "blocks_u."),
    # Modality-specific blocks have the one stream "x"; the shared block's joint stream "av" uses
    # CAV-MAE's plain norm1/norm2 (``modality=None``), the audio and video streams norm1_a/norm1_v.
    (r"\.(norm[12])\.(x|av)\.", r".\1."),
    (r"\.(norm[12])\.(a|v)\.", r".\1_\2."),
    (r"^norm\.av\.", "norm."),
    (r"^norm\.(a|v)\.", r"norm_\1."),
]

# CAV-MAE keys that are deliberately not converted, with the reason given in the summary.
_DROPPED: list[tuple[str, str]] = [
    (r"^pos_embed_[av]$", "fixed sin-cos position embeddings (checked against avssl's, then recomputed)"),
    (r"^blocks_[av]\.\d+\.norm[12]_[av]\.", "per-modality norms of modality-specific blocks (unused by CAV-MAE)"),
    (r"^(decoder_|mask_token$)", "MAE decoder (CAVMAE pretraining)"),
    (r"^mlp_head\.", "classification head (CAVMAEFT fine-tuning)"),
]

# Tensors whose layout differs: CAV-MAE embeds a single frame with a Conv2d, avssl uses a Conv3d
# tubelet of one frame.
_TO_AVSSL_LAYOUT: dict[str, Callable[[Tensor], Tensor]] = {
    "video_tokenizer.proj.weight": lambda w: w.unsqueeze(2),  # (D, 3, p, p) -> (D, 3, 1, p, p)
}


def reference_name(avssl_name: str) -> str:
    """The CAV-MAE state-dict key that holds avssl's parameter `avssl_name`."""
    for pattern, repl in _TO_REFERENCE:
        avssl_name = re.sub(pattern, repl, avssl_name)
    return avssl_name


def drop_reason(reference_key: str) -> str | None:
    """Why a CAV-MAE key is not converted, or None if it should be."""
    for pattern, reason in _DROPPED:
        if re.search(pattern, reference_key):
            return reason
    return None


def describe_keys(what: str, keys: Iterable[str], limit: int = 5) -> str:
    """``"missing 3 keys: a, b, c"``; long lists are cut after `limit` names."""
    keys = sorted(keys)
    shown = ", ".join(keys[:limit]) + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")
    return f"{what} {len(keys)} key{'s' if len(keys) != 1 else ''}: {shown}"


def _depth(state: dict[str, Tensor], blocks: str) -> int:
    indices = {int(m.group(1)) for k in state if (m := re.match(rf"^{blocks}\.(\d+)\.", k))}
    return max(indices) + 1 if indices else 0


def infer_spec(state: dict[str, Tensor], num_heads: int | None = None) -> BackboneSpec:
    """The `BackboneSpec` of a CAV-MAE state dict (prefix removed), read from its tensor shapes.

    Args:
        state: CAV-MAE state dict.
        num_heads: attention heads; tensors do not record them. None: ``D / 64`` (ViT's head
            width; CAV-MAE's ViT-B has 768 / 64 = 12 heads).

    Raises:
        ValueError: the state dict lacks the tensors the sizes are read from, or they disagree.
    """
    needed = ["patch_embed_a.proj.weight", "patch_embed_v.proj.weight", "pos_embed_a", "pos_embed_v"]
    if any(k not in state for k in needed):
        found = ", ".join(sorted(state)[:5])
        raise ValueError(
            f"not a CAV-MAE checkpoint: {describe_keys('missing', [k for k in needed if k not in state])} "
            f"(found: {found}{', ...' if len(state) > 5 else ''}); pass a checkpoint of CAVMAE or CAVMAEFT from {REFERENCE}"
        )
    audio_w, video_w = state["patch_embed_a.proj.weight"], state["patch_embed_v.proj.weight"]  # (D, 1, p, p), (D, 3, p, p)
    d = audio_w.shape[0]
    audio_patch, video_patch = list(audio_w.shape[2:]), list(video_w.shape[2:])
    num_audio, num_video = state["pos_embed_a"].shape[1], state["pos_embed_v"].shape[1]
    side = math.isqrt(num_video)
    if side * side != num_video or num_audio % AUDIO_FREQUENCY_ROWS != 0:
        raise ValueError(
            f"pos_embed_a has {num_audio} tokens and pos_embed_v {num_video}: CAV-MAE needs a multiple of "
            f"{AUDIO_FREQUENCY_ROWS} audio tokens and a square number of video tokens; is this a CAV-MAE checkpoint?"
        )
    depth_a, depth_v = _depth(state, "blocks_a"), _depth(state, "blocks_v")
    if depth_a != depth_v:
        raise ValueError(f"blocks_a has {depth_a} layers but blocks_v {depth_v}; avssl needs the same depth for both")
    fc1 = next((v for k, v in state.items() if k.endswith("mlp.fc1.weight")), None)  # (hidden, D)
    num_heads = num_heads if num_heads is not None else max(d // 64, 1)
    if d % num_heads != 0:
        raise ValueError(f"num_heads={num_heads} does not divide the width {d}; pass the checkpoint's head count (--num-heads)")
    return BackboneSpec(
        embed_dim=d,
        num_heads=num_heads,
        modality_specific_depth=depth_a,
        shared_depth=_depth(state, "blocks_u"),
        mlp_ratio=fc1.shape[0] / d if fc1 is not None else 4.0,
        qkv_bias=any(k.endswith("attn.qkv.bias") for k in state),
        norm_eps=1e-5,  # CAV-MAE passes nn.LayerNorm with torch's default eps
        audio_frames=num_audio // AUDIO_FREQUENCY_ROWS * audio_patch[1],
        num_mel_bins=AUDIO_FREQUENCY_ROWS * audio_patch[0],
        audio_patch=audio_patch,
        num_frames=1,
        frame_size=side * video_patch[0],
        video_patch=[1, *video_patch],
    )


def check_position_embeddings(state: dict[str, Tensor], encoder: AudioVisualEncoder) -> None:
    """Raises ValueError unless the checkpoint's fixed position embeddings equal avssl's."""
    for key, tokenizer in (("pos_embed_a", encoder.audio_tokenizer), ("pos_embed_v", encoder.video_tokenizer)):
        ours = tokenizer.pos_embed  # (1, N, D)
        theirs = state[key].float()
        diff = (theirs - ours).abs().max().item() if theirs.shape == ours.shape else math.inf
        if not diff <= POS_EMBED_ATOL:
            raise ValueError(
                f"{key} differs from avssl's fixed sin-cos position embedding (shape {tuple(theirs.shape)} vs "
                f"{tuple(ours.shape)}, max abs diff {diff:.3g} > {POS_EMBED_ATOL:g}). The checkpoint was probably "
                "trained with learned positions (CAVMAEFT defaults to tr_pos=True); avssl's encoder only has fixed "
                "sin-cos positions, so it cannot reproduce this model. Convert the pretrained CAVMAE checkpoint instead."
            )


def convert_state_dict(state: dict[str, Tensor], encoder: AudioVisualEncoder) -> tuple[dict[str, Tensor], dict[str, int]]:
    """Maps a CAV-MAE state dict onto `encoder`'s parameter names.

    Returns:
        ``(avssl_state, dropped)``: the encoder's state dict, and the number of dropped keys per reason.

    Raises:
        ValueError: keys are missing, unexpected, or have the wrong shape (the message lists them).
    """
    converted, missing, wrong_shape = {}, [], []
    for name, target in encoder.state_dict().items():
        key = reference_name(name)
        if key not in state:
            missing.append(key)
            continue
        tensor = _TO_AVSSL_LAYOUT.get(name, lambda t: t)(state[key])
        if tensor.shape != target.shape:
            wrong_shape.append(f"{key} {tuple(state[key].shape)} (avssl {name} {tuple(target.shape)})")
            continue
        converted[name] = tensor.to(target.dtype)
    mapped = {reference_name(name) for name in encoder.state_dict()}
    dropped: dict[str, int] = {}
    unexpected = []
    for key in state:
        reason = None if key in mapped else drop_reason(key)
        if reason is not None:
            dropped[reason] = dropped.get(reason, 0) + 1
        elif key not in mapped:
            unexpected.append(key)
    problems = []
    if missing:
        problems.append(describe_keys("missing", missing))
    if wrong_shape:
        problems.append(describe_keys("wrong shape for", wrong_shape, limit=3))
    if unexpected:
        problems.append(describe_keys("unexpected", unexpected))
    if problems:
        raise ValueError(
            f"the checkpoint does not match a CAV-MAE encoder of the inferred architecture: {'; '.join(problems)}. "
            f"Is it a CAVMAE / CAVMAEFT state dict from {REFERENCE}?"
        )
    return converted, dropped


def preprocessing_for(spec: BackboneSpec) -> Preprocessing:
    """CAV-MAE's input pipeline (the `Preprocessing` defaults) at the checkpoint's input sizes."""
    pre = Preprocessing()
    # CAV-MAE pads or crops the fbank to `audio_frames`; 1024 frames go with 10 s clips, shorter
    # models (e.g. 512 frames for 5 s ESC-50 clips) with proportionally shorter ones.
    return replace(
        pre,
        clip_seconds=pre.clip_seconds * spec.audio_frames / pre.audio_frames,
        audio_frames=spec.audio_frames,
        num_mel_bins=spec.num_mel_bins,
        frame_size=spec.frame_size,
    )


def convert_cav_mae(src: str | Path, out: str | Path, num_heads: int | None = None) -> Path:
    """Converts a CAV-MAE checkpoint to an avssl export directory (``model.safetensors`` + ``config.yaml``).

    Args:
        src: a ``.pth`` of `CAVMAE` or `CAVMAEFT` (``module.``-prefixed or not).
        out: export directory to write.
        num_heads: attention heads (None: width / 64, i.e. 12 for CAV-MAE's ViT-B).

    Returns:
        The export directory, loadable with `avssl.load_backbone`.

    Raises:
        FileNotFoundError: `src` does not exist.
        ValueError: `src` is not a CAV-MAE checkpoint avssl can represent (the message says why).

    Examples:
        >>> convert_cav_mae("cav-mae-scale++.pth", "exports/cav-mae-scale++")  # doctest: +SKIP
    """
    state = read_state_dict(src, "checkpoint", "a CAV-MAE .pth file such as cav-mae-scale++.pth")
    spec = infer_spec(state, num_heads)
    encoder = AudioVisualEncoder(spec)
    check_position_embeddings(state, encoder)
    converted, dropped = convert_state_dict(state, encoder)
    encoder.load_state_dict(converted, strict=True)
    kind = "CAVMAEFT (fine-tuned)" if any(k.startswith("mlp_head.") for k in state) else "CAVMAE (pretrained)"
    log.info("%s: %s, kept %d tensors, dropped %s", src, kind, len(converted), dropped)
    source = {
        "checkpoint": str(src),
        "converted_from": f"{kind}, {REFERENCE}",
        "dropped": dropped,
    }
    return export_encoder(encoder.eval(), preprocessing_for(spec), out, source=source)
