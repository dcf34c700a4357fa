"""A small hand-written audio-visual model, the yardstick the recipes are held against.

    python bench/reference_model.py [--collection looming] [--seeds 0 1 2] [--steps 180]
        [--out bench/results/reference_model-looming.json]

The model issue 15 compares avssl with, written from its description in plain PyTorch and
independent of avssl's towers, heads and objectives: two BatchNorm CNN towers (a 3-D conv video
tower whose first layer runs at full resolution, a 2-D conv audio tower, 256-d each), a 2-layer
MLP head per modality to 128-d, 16 frames, a symmetric cross-modal InfoNCE (temperature 0.1, no
same-modality negatives), AdamW 5e-4, batch 64, 180 steps, no augmentation. It trains on a
collection's unlabeled clips (decoded once by `shortcut_ablation.decoded`, 16 frames of 64 px,
64 x 192 fbank) and is probed like `bench/quality.py` probes a recipe: the one probe protocol
(`avssl.evaluation.linear_probe`) on the collection's labeled clips split as the probe callback
splits them (``--test-fraction`` 0.3, seeded by the seed), for the random init and after training.
The same towers trained with labels on the train split give the supervised row (``--supervised``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).parent))
from shortcut_ablation import PRE, decoded  # noqa: E402

from avssl.evaluation.linear_probe import FEATURE_SETS, linear_probe_top1  # noqa: E402
from datamodules.demo import COLLECTIONS, ensure_collection  # noqa: E402
from datamodules.labeled import LabeledClipDataModule  # noqa: E402

log = logging.getLogger("bench.reference_model")

DIM = 256


def conv_bn(conv: type[nn.Module], norm: type[nn.Module], cin: int, cout: int, stride: Any) -> list[nn.Module]:
    return [conv(cin, cout, 3, stride=stride, padding=1, bias=False), norm(cout), nn.ReLU(inplace=True)]


class ReferenceModel(nn.Module):
    """Video ``[B, 3, 16, 64, 64]`` and fbank ``[B, 1, 192, 64]`` to two 256-d embeddings."""

    def __init__(self):
        super().__init__()
        video = [*conv_bn(nn.Conv3d, nn.BatchNorm3d, 3, 16, 1), nn.MaxPool3d((1, 2, 2))]  # full resolution
        for cin, cout, stride in ((16, 32, (1, 2, 2)), (32, 64, 2), (64, 128, 2), (128, DIM, (1, 2, 2))):
            video += conv_bn(nn.Conv3d, nn.BatchNorm3d, cin, cout, stride)
        self.video = nn.Sequential(*video, nn.AdaptiveAvgPool3d(1), nn.Flatten())
        audio: list[nn.Module] = []
        for cin, cout in ((1, 32), (32, 64), (64, 128), (128, DIM)):
            audio += conv_bn(nn.Conv2d, nn.BatchNorm2d, cin, cout, 2)
        self.audio = nn.Sequential(*audio, nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, audio: Tensor, video: Tensor) -> dict[str, Tensor]:
        a, v = self.audio(audio), self.video(video)
        return {"audio": a, "video": v, "joint": (a + v) / 2}


def mlp_head() -> nn.Module:
    return nn.Sequential(nn.Linear(DIM, DIM), nn.BatchNorm1d(DIM), nn.ReLU(inplace=True), nn.Linear(DIM, 128))


def cross_modal_infonce(za: Tensor, zv: Tensor, temperature: float) -> Tensor:
    logits = F.normalize(za, dim=1) @ F.normalize(zv, dim=1).T / temperature
    target = torch.arange(len(za))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def labeled_split(collection: str, test_fraction: float, seed: int) -> dict[str, Tensor]:
    """The labeled clips at 16 frames, split as the probe callback of `bench/quality.py` splits them."""
    module = LabeledClipDataModule(root=str(ensure_collection(collection).labeled), preprocessing=PRE, batch_size=64,
                                   num_workers=2, test_fraction=test_fraction, seed=seed)
    module.setup("fit")
    data = {}
    for split, loader in (("train", module.train_dataloader()), ("test", module.test_dataloader())):
        got = [b for b in loader if len(b["video"])]
        for key in ("audio", "video", "label"):
            data[f"{split}_{key}"] = torch.cat([b[key] for b in got])
    return data


@torch.no_grad()
def probe(model: ReferenceModel, data: dict[str, Tensor], seed: int) -> dict[str, float]:
    model.eval()
    feats = {}
    for split in ("train", "test"):
        outs = [model(a, v) for a, v in zip(data[f"{split}_audio"].split(64), data[f"{split}_video"].split(64))]
        feats[split] = {k: torch.cat([o[k] for o in outs]) for k in FEATURE_SETS}
    model.train()
    return {k: linear_probe_top1(feats["train"][k], data["train_label"], feats["test"][k], data["test_label"], seed)
            for k in FEATURE_SETS}


def train(unlabeled: dict[str, Tensor], labeled: dict[str, Tensor], args: argparse.Namespace, seed: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    model = ReferenceModel()
    random_init = probe(model, labeled, seed)
    if args.supervised:
        heads = nn.ModuleDict({k: nn.Linear(DIM, int(labeled["train_label"].max()) + 1) for k in FEATURE_SETS})
        audio, video, labels = labeled["train_audio"], labeled["train_video"], labeled["train_label"]
    else:
        heads = nn.ModuleDict({"audio": mlp_head(), "video": mlp_head()})
        audio, video, labels = unlabeled["audio"], unlabeled["video"], None
    optimizer = torch.optim.AdamW([*model.parameters(), *heads.parameters()], lr=args.lr)
    g = torch.Generator().manual_seed(seed)
    losses = []
    started = time.perf_counter()
    while len(losses) < args.steps:
        for idx in torch.randperm(len(audio), generator=g).split(args.batch):
            if len(idx) < args.batch or len(losses) >= args.steps:
                continue
            out = model(audio[idx], video[idx].float())
            if labels is None:
                loss = cross_modal_infonce(heads["audio"](out["audio"]), heads["video"](out["video"]), args.temperature)
            else:
                loss = sum(F.cross_entropy(heads[k](out[k]), labels[idx]) for k in FEATURE_SETS)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    seconds = time.perf_counter() - started
    return {"random_init": random_init, "pretrained": probe(model, labeled, seed),
            "final_loss": statistics.mean(losses[-20:]), "train_seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collection", default="looming", choices=sorted(COLLECTIONS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", type=int, default=180)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--test-fraction", type=float, default=0.3)
    parser.add_argument("--supervised", action="store_true", help="train with labels on the train split instead")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    unlabeled = decoded(args.collection)
    results = {}
    for seed in args.seeds:
        r = train(unlabeled, labeled_split(args.collection, args.test_fraction, seed), args, seed)
        results[str(seed)] = r
        log.info("seed %d: loss %.2f, %.0f s; random init %s; trained %s", seed, r["final_loss"], r["train_seconds"],
                 " / ".join(f"{100 * r['random_init'][k]:.1f}" for k in FEATURE_SETS),
                 " / ".join(f"{100 * r['pretrained'][k]:.1f}" for k in FEATURE_SETS))
    kind = "supervised" if args.supervised else "ssl"
    out = Path(args.out or f"bench/results/reference_model-{args.collection}-{kind}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
               "torch": torch.__version__, "threads": torch.get_num_threads()}
    out.write_text(json.dumps({"machine": machine, "args": vars(args), "seeds": results}, indent=2))
    print("| features | " + " | ".join(FEATURE_SETS) + " |")
    print("|---|---|---|---|")
    for row in ("random_init", "pretrained"):
        cells = []
        for k in FEATURE_SETS:
            values = [100 * r[row][k] for r in results.values()]
            cells.append(f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})")
        print(f"| {row} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
