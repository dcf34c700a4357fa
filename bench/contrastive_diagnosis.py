"""Why the audio-visual InfoNCE sat at its chance value: one short training loop per variant.

    python bench/contrastive_diagnosis.py [--steps 100] [--variants all]

Decodes the demo's 480 unlabeled clips and its labeled split once (the inputs of
``recipe=cav_mae_demo``: 2 s, 4 frames of 64 px, 64 x 192 fbank), then trains each variant for
``--steps`` steps on the cached clips (batch 32, AdamW lr 1e-3, weight decay 0.05, 15 warm-up steps,
cosine, temperature 0.1, no masking) and prints one row per variant: the loss of the first and last
steps (mean of 5 and of 10) against its chance value, in-batch audio->video retrieval, the collapse
monitor of the backbone's embeddings (scaled by sqrt(D), so 1 is an even spread) and the linear
probe (`avssl.evaluation.linear_probe`) of the backbone's embeddings. The figures in
docs/objectives.md ("Why the contrastive term was stuck") come from this script.

Variants: encoder (``transformer``: the tiny CAV-MAE encoder of cav_mae_demo; ``strided_conv``:
the default recipe's towers) x loss (``ntxent``: lightly's NTXentLoss, same-modality negatives
too; ``cross``: symmetric InfoNCE with cross-modal negatives only) x head (``none``, ``linear``,
``mlp`` without normalisation, ``bn``: BatchNorm1d alone, ``simclr``: lightly's SimCLR head).
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
from dataclasses import replace

import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss
from lightly.models.modules.heads import SimCLRProjectionHead
from torch import Tensor, nn

from avssl.backbones.registry import build_encoder, create_backbone
from avssl.config import load_config
from avssl.evaluation.linear_probe import FEATURE_SETS, linear_probe_top1
from avssl.objectives.health import embedding_std, retrieval_top1
from datamodules.demo import ensure_demo_clips
from datamodules.labeled import LabeledClipDataModule
from datamodules.pretrain import AVPretrainDataModule
from datamodules.stream import StreamSettings

log = logging.getLogger("bench.contrastive_diagnosis")

VARIANTS = [  # (encoder, loss, head)
    ("transformer", "ntxent", "none"), ("transformer", "cross", "none"), ("transformer", "cross", "linear"),
    ("transformer", "ntxent", "mlp"), ("transformer", "ntxent", "bn"), ("transformer", "ntxent", "simclr"),
    ("transformer", "cross", "simclr"), ("strided_conv", "ntxent", "simclr"),
]


def cached_clips() -> dict[str, Tensor]:
    """The demo's unlabeled clips and labeled split, decoded once with cav_mae_demo's inputs."""
    config = load_config(["recipe=cav_mae_demo"])
    demo, pre = ensure_demo_clips(), config.data.preprocessing
    source = replace(config.data.source, kind="folder", path=str(demo.unlabeled))
    unlabeled = AVPretrainDataModule(source, StreamSettings(preprocessing=pre, policies=config.data.policies, batch_size=32,
                                                            num_workers=2))
    unlabeled.setup("fit")
    batches = list(unlabeled.train_dataloader())
    clips = {k: torch.cat([b[k] for b in batches]) for k in ("audio", "video")}
    labeled = LabeledClipDataModule(root=str(demo.labeled), preprocessing=pre, batch_size=64, num_workers=2, test_fraction=0.3,
                                    seed=0, extensions=config.data.source.extensions, key="probe.data", policies=config.data.policies)
    labeled.setup("fit")
    for split, loader in (("train", labeled.train_dataloader()), ("test", labeled.test_dataloader())):
        batches = list(loader)
        for k in ("audio", "video", "label"):
            clips[f"{split}_{k}"] = torch.cat([b[k] for b in batches])
    return clips


def head(kind: str, dim: int) -> nn.Module:
    return {
        "none": lambda: nn.Identity(),
        "linear": lambda: nn.Linear(dim, 128),
        "mlp": lambda: nn.Sequential(nn.Linear(dim, 512), nn.ReLU(), nn.Linear(512, 128)),
        "bn": lambda: nn.BatchNorm1d(dim),
        "simclr": lambda: SimCLRProjectionHead(dim, 512, 128),
    }[kind]()


def cross_modal_infonce(za: Tensor, zv: Tensor, temperature: float) -> Tensor:
    """Symmetric InfoNCE with the other clips of the *other* modality as the only negatives."""
    logits = F.normalize(za, dim=1) @ F.normalize(zv, dim=1).T / temperature  # (B, B)
    target = torch.arange(len(za))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def run_variant(clips: dict[str, Tensor], encoder_name: str, loss_name: str, head_name: str, steps: int, seed: int) -> dict:
    torch.manual_seed(seed)
    config = load_config(["recipe=cav_mae_demo"])
    encoder = (build_encoder(config.backbone.resolve(config.data.preprocessing)) if encoder_name == "transformer"
               else create_backbone("strided_conv"))
    audio_head, video_head = head(head_name, encoder.embed_dim), head(head_name, encoder.embed_dim)
    params = [*encoder.parameters(), *audio_head.parameters(), *video_head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05, betas=(0.9, 0.95))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 15) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    ntxent, temperature, batch = NTXentLoss(temperature=0.1), 0.1, 32
    generator = torch.Generator().manual_seed(seed)
    order: list[Tensor] = []
    rows = []
    for _ in range(steps):
        if not order:
            order = list(torch.randperm(len(clips["audio"]), generator=generator).split(batch))[:-1]  # full batches only
        idx = order.pop(0)
        out = encoder.forward_features(clips["audio"][idx], clips["video"][idx])
        za, zv = audio_head(out["audio_embedding"]), video_head(out["video_embedding"])
        loss = ntxent(za, zv) if loss_name == "ntxent" else cross_modal_infonce(za, zv, temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        rows.append((loss.item(), retrieval_top1(za, zv).item(), embedding_std(out["audio_embedding"]).item() * encoder.embed_dim**0.5))
    encoder.eval()
    with torch.no_grad():
        train = encoder.forward_features(clips["train_audio"], clips["train_video"])
        test = encoder.forward_features(clips["test_audio"], clips["test_video"])
    probe = {k: linear_probe_top1(train[f"{k}_embedding"], clips["train_label"], test[f"{k}_embedding"], clips["test_label"])
             for k in FEATURE_SETS}
    chance = math.log(2 * batch - 1) if loss_name == "ntxent" else math.log(batch)
    return {"first": statistics.mean(r[0] for r in rows[:5]), "last": statistics.mean(r[0] for r in rows[-10:]), "chance": chance,
            "retrieval": statistics.mean(r[1] for r in rows[-10:]), "std_first": statistics.mean(r[2] for r in rows[:5]),
            "std_last": statistics.mean(r[2] for r in rows[-10:]), "probe": probe}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="*", type=int, help="indices into VARIANTS (default: all)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    clips = cached_clips()
    print("| encoder | loss | head | loss first -> last (chance) | a->v top-1 | backbone z_std x sqrt(D) | probe a / v / j |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for i in args.variants if args.variants else range(len(VARIANTS)):
        encoder_name, loss_name, head_name = VARIANTS[i]
        r = run_variant(clips, encoder_name, loss_name, head_name, args.steps, args.seed)
        probe = " / ".join(f"{100 * r['probe'][k]:.1f}" for k in FEATURE_SETS)
        print(f"| {encoder_name} | {loss_name} | {head_name} | {r['first']:.2f} -> {r['last']:.2f} ({r['chance']:.2f}) | "
              f"{r['retrieval']:.2f} | {r['std_first']:.2f} -> {r['std_last']:.2f} | {probe} |", flush=True)


if __name__ == "__main__":
    main()
