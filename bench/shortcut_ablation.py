"""What each training choice buys against the pairing shortcut: one short training per variant.

    python bench/shortcut_ablation.py --collection looming [--variants default full] [--seeds 0]
        [--out bench/results/shortcut_ablation-looming.json]

Decodes a collection once (its unlabeled clips and labeled split, 16 frames of 64 px, 64 x 192
fbank; cached under ``$AVSSL_CACHE_DIR/bench``), then trains the default recipe's kind of model
(strided-conv towers + audio-visual InfoNCE) once per variant on the cached tensors and probes
its backbone embeddings with the one probe protocol (`avssl.evaluation.linear_probe`). Each
variant changes one or a few things relative to ``default`` (the default recipe as it was when
issue 15 was filed); the table in docs/benchmarks.md ("Learning what transfers") comes from
this script. It trains without Lightning and without the datamodule so that a variant costs
minutes; `bench/quality.py` measures the recipes themselves, end to end.

Variant keys (``VARIANTS``): ``frames`` (of the 16, evenly spaced), ``stem_stride`` (spatial
stride of the video tower's first layer), ``negatives`` (``all``: NT-Xent, same-modality
negatives too; ``cross_modal``), ``head`` (``simclr``: lightly's SimCLR head, Linear-BN-ReLU-
Linear-BN; ``mlp``: Linear-ReLU-Linear), ``lr``, ``batch``, ``steps``, ``jitter_s`` (the audio
window is cut up to this many seconds away from the video window, independently: a temporal
offset between the streams), ``colour`` (SimCLR's colour distortion of the frames at this strength), ``spec_mask``
(SpecAugment-style time and frequency masks and a random gain on the fbank), ``supervised``
(an upper bound: the same encoder trained with labels on the labeled train split, a linear head per
embedding and the sum of their cross-entropies, for the same number of steps, then probed frozen).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import Tensor, nn

from avssl.backbones.cnn import CNNAudioVisualEncoder
from avssl.backbones.spec import BackboneSpec
from avssl.evaluation.linear_probe import FEATURE_SETS, linear_probe_top1
from avssl.objectives.contrastive import AVInfoNCE
from datamodules.demo import COLLECTIONS, default_cache_dir, ensure_collection
from datamodules.labeled import LabeledClipDataModule
from datamodules.preprocessing import Preprocessing
from datamodules.pretrain import AVPretrainDataModule
from datamodules.sources import SourceConfig
from datamodules.stream import StreamSettings

log = logging.getLogger("bench.shortcut_ablation")

PRE = Preprocessing(clip_seconds=2.0, num_frames=16, frame_size=64, sample_rate=16000, num_mel_bins=64, audio_frames=192)
FPS = 8  # the collections' frame rate: 16 frames cover the 2 s clip
BASE: dict[str, Any] = {"frames": 4, "stem_stride": 2, "negatives": "all", "head": "simclr", "lr": 1e-3,
                        "batch": 32, "steps": 320, "jitter_s": 0.0, "colour": 0.0, "spec_mask": False,
                        "temperature": 0.1, "width": 32, "pool": "avg", "audio_pool": "avg",
                        "supervised": False}
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "frames16": {"frames": 16},
    "stem1": {"stem_stride": 1},
    "cross_modal": {"negatives": "cross_modal"},
    "mlp_head": {"head": "mlp"},
    "jitter": {"jitter_s": 0.5},
    "colour": {"colour": 1.0},
    "spec_mask": {"spec_mask": True},
    "batch64": {"batch": 64, "steps": 160},
    "frames16_stem1": {"frames": 16, "stem_stride": 1},
    "frames16_stem1_cross": {"frames": 16, "stem_stride": 1, "negatives": "cross_modal"},
    "aug": {"jitter_s": 0.5, "colour": 1.0, "spec_mask": True},
    "cross_aug": {"negatives": "cross_modal", "jitter_s": 0.5, "colour": 1.0, "spec_mask": True},
    "supervised": {"supervised": True},
    "supervised_frames16_stem1": {"supervised": True, "frames": 16, "stem_stride": 1},
    "frames8": {"frames": 8},
    "frames8_aug": {"frames": 8, "colour": 1.0, "spec_mask": True},
    "frames8_cross_aug": {"frames": 8, "negatives": "cross_modal", "colour": 1.0, "spec_mask": True},
    "frames8_cross_aug_jitter": {"frames": 8, "negatives": "cross_modal", "colour": 1.0, "spec_mask": True,
                                 "jitter_s": 0.25},
    "max": {"pool": "max", "audio_pool": "max"},
    "max_video": {"pool": "max"},
    "supervised_max": {"supervised": True, "pool": "max", "audio_pool": "max"},
    "frames8_max": {"frames": 8, "pool": "max", "audio_pool": "max"},
    "frames8_max_aug": {"frames": 8, "pool": "max", "audio_pool": "max", "colour": 1.0, "spec_mask": True},
    "frames8_stem1_cross_aug": {"frames": 8, "stem_stride": 1, "width": 16, "negatives": "cross_modal",
                                "colour": 1.0, "spec_mask": True},
}


def decoded(collection: str) -> dict[str, Tensor]:
    """Unlabeled clips and the labeled split of a collection as tensors, decoded once and cached."""
    cache = default_cache_dir() / "bench" / f"{collection}-v{COLLECTIONS[collection].version}-f16.pt"
    if cache.is_file():
        return torch.load(cache, weights_only=True)
    clips = ensure_collection(collection)
    source = SourceConfig(kind="folder", path=str(clips.unlabeled))
    unlabeled = AVPretrainDataModule(source, StreamSettings(preprocessing=PRE, batch_size=64, num_workers=2))
    unlabeled.setup("fit")
    batches = [b for b in unlabeled.train_dataloader() if len(b["video"])]
    labeled = LabeledClipDataModule(root=str(clips.labeled), preprocessing=PRE, batch_size=64, num_workers=2,
                                    test_fraction=0.5, seed=0)
    labeled.setup("fit")
    data = {"video": torch.cat([b["video"] for b in batches]).half(), "audio": torch.cat([b["audio"] for b in batches])}
    for split, loader in (("train", labeled.train_dataloader()), ("test", labeled.test_dataloader())):
        got = [b for b in loader if len(b["video"])]
        data[f"{split}_video"] = torch.cat([b["video"] for b in got]).half()
        data[f"{split}_audio"] = torch.cat([b["audio"] for b in got])
        data[f"{split}_label"] = torch.cat([b["label"] for b in got])
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, cache)
    return data


def select_frames(video: Tensor, frames: int) -> Tensor:
    """``frames`` evenly spaced frames of ``[B, 3, 16, S, S]`` (the centres of equal parts, as decoding does)."""
    total = video.shape[2]
    idx = ((torch.arange(frames) + 0.5) * total / frames).long()
    return video[:, :, idx]


def build(v: dict[str, Any]) -> tuple[CNNAudioVisualEncoder, AVInfoNCE]:
    spec = BackboneSpec(kind="cnn", embed_dim=8 * v["width"], video_tower="strided_conv", audio_tower="strided_conv",
                        tower_width=v["width"], tower_stem_stride=v["stem_stride"], video_pool=v["pool"], audio_pool=v["audio_pool"])
    encoder = CNNAudioVisualEncoder(spec)
    loss = AVInfoNCE(encoder, temperature=v["temperature"], gather_distributed=False, negatives=v["negatives"])
    if v["head"] == "mlp":
        d = spec.embed_dim
        loss.audio_head = nn.Sequential(nn.Linear(d, 512), nn.ReLU(), nn.Linear(512, 128))
        loss.video_head = nn.Sequential(nn.Linear(d, 512), nn.ReLU(), nn.Linear(512, 128))
    return encoder, loss


def colour_jitter(video: Tensor, strength: float, g: torch.Generator) -> Tensor:
    """SimCLR's colour distortion at ``strength`` (brightness, contrast, saturation 0.8 s, hue 0.2 s,
    applied with p 0.8; greyscale with p 0.2), one draw per clip, on normalised ``[B, 3, T, S, S]``."""
    mean = torch.tensor(PRE.video_mean).view(1, 3, 1, 1, 1)
    std = torch.tensor(PRE.video_std).view(1, 3, 1, 1, 1)
    frames = (video * std + mean).clamp(0, 1).transpose(1, 2)  # (B, T, 3, S, S)
    out = []
    for clip in frames:
        u = torch.rand(6, generator=g)
        if u[0] < 0.8:
            clip = TF.adjust_brightness(clip, 1 + 0.8 * strength * (2 * float(u[1]) - 1))
            clip = TF.adjust_contrast(clip, 1 + 0.8 * strength * (2 * float(u[2]) - 1))
            clip = TF.adjust_saturation(clip, 1 + 0.8 * strength * (2 * float(u[3]) - 1))
            clip = TF.adjust_hue(clip, 0.2 * strength * (2 * float(u[4]) - 1))
        if u[5] < 0.2:
            clip = TF.rgb_to_grayscale(clip, num_output_channels=3)
        out.append(clip)
    return (torch.stack(out).transpose(1, 2) - mean) / std


def augment(video: Tensor, audio: Tensor, v: dict[str, Any], g: torch.Generator) -> tuple[Tensor, Tensor]:
    """The variant's augmentation of a batch: video ``[B, 3, T, S, S]`` (16 frames), audio ``[B, 1, F, M]``."""
    b = len(video)
    if v["jitter_s"]:
        # a 1.5 s video window and a 1.5 s audio window, each placed independently in the 2 s clip
        keep_t, keep_f = 12, 144
        max_shift = v["jitter_s"]
        t0 = torch.randint(0, 16 - keep_t + 1, (b,), generator=g)
        shift = ((torch.rand(b, generator=g) * 2 - 1) * max_shift * 100).long()  # fbank frames
        f0 = (t0 * 100 / FPS).long() + shift
        f0 = f0.clamp(0, audio.shape[2] - keep_f)
        video = torch.stack([video[i, :, t0[i]:t0[i] + keep_t] for i in range(b)])
        audio = torch.stack([audio[i, :, f0[i]:f0[i] + keep_f] for i in range(b)])
    if v["colour"]:
        video = colour_jitter(video, v["colour"], g)
    if v["spec_mask"]:
        audio = audio.clone()
        frames, mels = audio.shape[2:]
        for i in range(b):
            for _ in range(2):
                w = int(torch.randint(0, frames // 8 + 1, (1,), generator=g))
                s0 = int(torch.randint(0, frames - w + 1, (1,), generator=g))
                audio[i, :, s0:s0 + w] = 0
                w = int(torch.randint(0, mels // 8 + 1, (1,), generator=g))
                s0 = int(torch.randint(0, mels - w + 1, (1,), generator=g))
                audio[i, :, :, s0:s0 + w] = 0
        audio = audio + (torch.rand(b, 1, 1, 1, generator=g) * 2 - 1) * 0.5  # +-10 dB: ln(10) / 4.48 per 10 dB
    return video, audio


@torch.no_grad()
def probe(encoder: nn.Module, data: dict[str, Tensor], frames: int, seed: int) -> dict[str, float]:
    encoder.eval()
    feats = {}
    for split in ("train", "test"):
        outs = [encoder.forward_features(a, select_frames(vv.float(), frames))
                for a, vv in zip(data[f"{split}_audio"].split(64), data[f"{split}_video"].split(64))]
        feats[split] = {k: torch.cat([o[f"{k}_embedding"] for o in outs]) for k in FEATURE_SETS}
    encoder.train()
    return {k: linear_probe_top1(feats["train"][k], data["train_label"], feats["test"][k], data["test_label"], seed)
            for k in FEATURE_SETS}


def train_variant(data: dict[str, Tensor], v: dict[str, Any], seed: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    encoder, loss = build(v)
    random_init = probe(encoder, data, v["frames"], seed)
    heads = nn.ModuleDict({k: nn.Linear(encoder.embed_dim, int(data["train_label"].max()) + 1) for k in FEATURE_SETS})
    params = [*encoder.parameters(), *(heads if v["supervised"] else loss).parameters()]
    optimizer = torch.optim.AdamW(params, lr=v["lr"], weight_decay=0.05, betas=(0.9, 0.95))
    warmup = max(1, v["steps"] // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * s / v["steps"]))))
    g = torch.Generator().manual_seed(seed)
    if v["supervised"]:
        data = data | {"video": data["train_video"], "audio": data["train_audio"], "label": data["train_label"]}
    n = len(data["video"])
    losses, chance = [], []
    started = time.perf_counter()
    step = 0
    while step < v["steps"]:
        for idx in torch.randperm(n, generator=g).split(v["batch"]):
            if len(idx) < v["batch"] or step >= v["steps"]:
                continue
            video, audio = augment(data["video"][idx].float(), data["audio"][idx], v, g)
            video = select_frames(video, v["frames"] if not v["jitter_s"] else max(1, v["frames"] * 3 // 4))
            out = encoder.forward_features(audio, video)
            if v["supervised"]:
                term = sum(F.cross_entropy(heads[k](out[f"{k}_embedding"]), data["label"][idx]) for k in FEATURE_SETS)
                chance.append(3 * math.log(len(heads["audio"].bias)))
            else:
                result = loss({"unmasked": out}, {})
                term = result.losses["infonce"]
                chance.append(result.chance["infonce"])
            optimizer.zero_grad(set_to_none=True)
            term.backward()
            optimizer.step()
            schedule.step()
            losses.append(term.item())
            step += 1
    seconds = time.perf_counter() - started
    pretrained = probe(encoder, data, v["frames"], seed)
    return {"random_init": random_init, "pretrained": pretrained, "final_loss": statistics.mean(losses[-20:]),
            "chance": chance[-1], "train_seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collection", default="looming", choices=sorted(COLLECTIONS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", dest="sets",
                        help="applied to every variant, e.g. steps=100")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        print(f"shortcut_ablation.py: error: unknown variants {unknown}; choose from {list(VARIANTS)}", file=sys.stderr)
        return 2
    overrides = {}
    for item in args.sets:
        key, value = item.split("=", 1)
        overrides[key] = type(BASE[key])(value) if not isinstance(BASE[key], bool) else value == "true"
    data = decoded(args.collection)
    out = Path(args.out or f"bench/results/shortcut_ablation-{args.collection}.json")
    results: dict[str, Any] = json.loads(out.read_text())["variants"] if out.is_file() else {}
    for name in args.variants:
        v = BASE | VARIANTS[name] | overrides
        for seed in args.seeds:
            r = train_variant(data, v, seed)
            results.setdefault(name, {})[str(seed)] = r | {"settings": v}
            log.info("%s seed %d: loss %.2f (chance %.2f), %0.f s; random init %s; pretrained %s", name, seed,
                     r["final_loss"], r["chance"], r["train_seconds"],
                     " / ".join(f"{100 * r['random_init'][k]:.1f}" for k in FEATURE_SETS),
                     " / ".join(f"{100 * r['pretrained'][k]:.1f}" for k in FEATURE_SETS))
            out.parent.mkdir(parents=True, exist_ok=True)
            machine = {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                       "torch": torch.__version__}
            out.write_text(json.dumps({"machine": machine, "collection": args.collection, "variants": results}, indent=2))
    print("| variant | loss (chance) | audio | video | joint | random init a / v / j | train s |")
    print("|---|---|---|---|---|---|---|")
    for name, seeds in results.items():
        rs = list(seeds.values())
        med = {k: statistics.median(100 * r["pretrained"][k] for r in rs) for k in FEATURE_SETS}
        ri = " / ".join(f"{statistics.median(100 * r['random_init'][k] for r in rs):.1f}" for k in FEATURE_SETS)
        print(f"| {name} | {statistics.median(r['final_loss'] for r in rs):.2f} ({rs[0]['chance']:.2f}) | "
              f"{med['audio']:.1f} | {med['video']:.1f} | {med['joint']:.1f} | {ri} | "
              f"{statistics.median(r['train_seconds'] for r in rs):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
