"""What pretraining buys on a synthetic collection: linear-probe top-1 against three baselines.

    python bench/quality.py [--collection demo|looming] [--recipes default cav_mae_demo] [--seeds 0 1 2]
        [--supervised-epochs 30] [--out bench/results/quality.json] [--set key=value ...]

For each recipe and seed it pretrains with `avssl.pretrain.run` on the collection's unlabeled clips
(``data.root``; ``--collection``: the built-in ``demo`` clips, or ``looming``, the second
development collection of `datamodules.looming_scenes`, both rendered and cached on first use;
``--set`` overrides go to every recipe, e.g. ``--set trainer.max_epochs=2`` for a smoke run) and,
on the same labeled split the probe callback uses (the collection's labeled clips, ``probe.data``,
``probe.test_fraction``, split seeded by the seed), reports
audio / video / joint top-1 of the one probe protocol (`avssl.evaluation.linear_probe`) for:

* **random init**: the freshly initialised backbone (the probe callback's baseline);
* **trivial features**: per-mel-bin mean and std over time of the fbank (2 x mels), per-channel
  mean, std and mean absolute frame difference of the frames (9), and their concatenation;
* **pretrained**: the backbone after pretraining (wall time: the whole run, both probes included);
* **supervised (same encoder)**: the recipe's encoder trained from the same seed with labels on the
  train split only (a linear head per embedding, sum of the three cross-entropies, AdamW at the
  recipe's lr and weight decay, batch 32, ``--supervised-epochs``; 0 leaves this row out), then
  frozen and probed (wall time: training and probe; the clips are decoded once beforehand).

It also reads the run's TensorBoard scalars: every ``train/*`` and ``health/*`` tag, as the mean of
its last 5 logged values, paired with ``health/<objective>/<term>_chance`` where the run logs one
(``retrieval_a2v`` and ``retrieval_v2a`` share ``retrieval_chance``).
Prints two Markdown tables (top-1 as median (min-max) over seeds; final loss terms against chance,
gap = final - chance) and writes every raw figure and the machine to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import Tensor, nn

from avssl.backbones.registry import build_encoder
from avssl.config import PretrainConfig, load_config
from avssl.evaluation.linear_probe import FEATURE_SETS, embed_clips, linear_probe_top1
from avssl.pretrain import USER_ERRORS, run
from datamodules.demo import COLLECTIONS, ensure_collection
from datamodules.labeled import LabeledClipDataModule

log = logging.getLogger("bench.quality")

ROWS = {"random_init": "random init", "trivial": "trivial features", "pretrained": "pretrained",
        "supervised": "supervised (same encoder)"}
LAST_N = 5  # scalars: mean of the last LAST_N logged values, to smooth step-to-step noise


@dataclass
class Split:
    """One decoded split: the loader's batches (for `embed_clips`) and their tensors stacked.

    Shapes: ``audio [N, 1, F, M]`` fbank, ``video [N, 3, T, S, S]`` frames, ``labels [N]``.
    """

    batches: list[dict[str, Any]]
    audio: Tensor
    video: Tensor
    labels: Tensor


def decode(loader: Any) -> Split:
    """Decodes every usable clip of a labeled loader once."""
    batches = [b for b in loader if b["video"].shape[0] > 0]
    return Split(batches, *(torch.cat([b[k] for b in batches]) for k in ("audio", "video", "label")))


def top1(train: dict[str, Tensor], train_y: Tensor, test: dict[str, Tensor], test_y: Tensor,
         seed: int) -> dict[str, float]:
    """`linear_probe_top1` for each feature set of ``{"audio", "video", "joint"} -> [N, D]``."""
    return {k: linear_probe_top1(train[k], train_y, test[k], test_y, seed) for k in FEATURE_SETS}


def trivial_features(split: Split) -> dict[str, Tensor]:
    """Hand-made clip statistics: audio ``[N, 2M]``, video ``[N, 9]``, joint ``[N, 2M + 9]``."""
    audio = torch.cat([split.audio.mean(dim=2), split.audio.std(dim=2)], dim=-1).flatten(1)  # (N, 2M)
    v = split.video  # (N, 3, T, S, S)
    motion = (v[:, :, 1:] - v[:, :, :-1]).abs().mean(dim=(2, 3, 4)) if v.shape[2] > 1 else torch.zeros(len(v), 3)
    video = torch.cat([v.mean(dim=(2, 3, 4)), v.std(dim=(2, 3, 4)), motion], dim=1)  # (N, 9)
    return {"audio": audio, "video": video, "joint": torch.cat([audio, video], dim=1)}


def frozen_top1(encoder: nn.Module, train: Split, test: Split, seed: int) -> dict[str, float]:
    """The probe protocol on a frozen encoder's embeddings."""
    a, b = embed_clips(encoder, train.batches), embed_clips(encoder, test.batches)
    return top1(vars(a), a.labels, vars(b), b.labels, seed)


def supervised(config: PretrainConfig, train: Split, test: Split, num_classes: int, epochs: int,
               seed: int) -> dict[str, float]:
    """Trains the recipe's encoder with labels on ``train``, then probes it frozen."""
    torch.manual_seed(seed)
    encoder = build_encoder(config.backbone.resolve(config.data.preprocessing)).train()
    with torch.no_grad():
        dims = {k: v.shape[-1] for k, v in encoder.forward_features(train.audio[:2], train.video[:2]).items()}
    heads = nn.ModuleDict({k: nn.Linear(dims[f"{k}_embedding"], num_classes) for k in FEATURE_SETS})
    optimizer = torch.optim.AdamW([*encoder.parameters(), *heads.parameters()],
                                  lr=config.optim.lr, weight_decay=config.optim.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        losses = []
        for idx in torch.randperm(len(train.labels), generator=generator).split(32):
            out = encoder.forward_features(train.audio[idx], train.video[idx])  # no masking: ratios 0
            loss = sum(F.cross_entropy(heads[k](out[f"{k}_embedding"]), train.labels[idx]) for k in FEATURE_SETS)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        log.info("supervised epoch %d/%d: loss %.3f", epoch + 1, epochs, statistics.mean(losses))
    return frozen_top1(encoder, train, test, seed)


def final_scalars(tensorboard_dir: Path) -> dict[str, float]:
    """Mean of the last `LAST_N` values of every ``train/*`` and ``health/*`` scalar."""
    events = EventAccumulator(str(tensorboard_dir), size_guidance={"scalars": 0})  # 0: keep every value
    events.Reload()
    return {tag: statistics.mean(e.value for e in events.Scalars(tag)[-LAST_N:])
            for tag in sorted(events.Tags()["scalars"]) if tag.startswith(("train/", "health/"))}


def one_seed(config: PretrainConfig, seed: int, supervised_epochs: int) -> dict[str, Any]:
    """Pretrains once and runs the baselines on the probe's labeled split; every raw figure."""
    result = run(config)
    rows = {name: {k: result.probe[name][k]["top1"] for k in FEATURE_SETS} | {"seconds": None}
            for name in ("random_init", "pretrained") if name in result.probe}
    if "pretrained" in rows:
        rows["pretrained"]["seconds"] = result.seconds
    labeled = LabeledClipDataModule(
        root=config.probe.data, preprocessing=config.data.preprocessing,
        batch_size=64, num_workers=config.data.num_workers, test_fraction=config.probe.test_fraction, seed=seed,
        extensions=config.data.source.extensions, key="probe.data", policies=config.data.policies)
    labeled.setup("fit")
    train, test = decode(labeled.train_dataloader()), decode(labeled.test_dataloader())
    started = time.perf_counter()
    rows["trivial"] = top1(trivial_features(train), train.labels, trivial_features(test), test.labels, seed)
    rows["trivial"]["seconds"] = time.perf_counter() - started
    if supervised_epochs:
        started = time.perf_counter()
        rows["supervised"] = supervised(config, train, test, len(labeled.class_names), supervised_epochs, seed)
        rows["supervised"]["seconds"] = time.perf_counter() - started
    scalars = final_scalars(result.run_dir / "tensorboard")
    retrieval = {name: {d: scalars.get(f"health/{name}/retrieval_{d}") for d in ("a2v", "v2a")}
                 for name in config.objectives}
    log.info("seed %d: %s", seed, {r: {k: f"{v:.1%}" for k, v in row.items() if k != "seconds"} for r, row in rows.items()})
    return {"rows": rows, "scalars": scalars, "retrieval": retrieval,
            "clips": {"train": len(train.labels), "test": len(test.labels)}}


def spread(values: list[float], fmt: str) -> str:
    """``median (min-max)`` of ``values``, each formatted with ``fmt`` (``min to max`` if negative)."""
    if not values:
        return "-"
    sep = "-" if min(values) >= 0 else " to "
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}{sep}{max(values):{fmt}})"


def chance_tag_of(tag: str, tags: set[str]) -> str:
    """The chance tag of ``<train|health>/<objective>/<term>``: ``health/<objective>/<term>_chance``,
    else the one its direction shares (``retrieval_a2v`` -> ``retrieval_chance``); "" if neither."""
    objective_term = tag.split("/", 1)[1]
    for candidate in (objective_term, objective_term.rsplit("_", 1)[0]):
        if f"health/{candidate}_chance" in tags:
            return f"health/{candidate}_chance"
    return ""


def tables(results: dict[str, dict[str, Any]]) -> str:
    """The two Markdown tables: probe top-1 per row, and final scalars against chance."""
    lines = ["| recipe | features | audio top-1 % | video top-1 % | joint top-1 % | wall time s |", "|---" * 6 + "|"]
    for recipe, seeds in results.items():
        for row, label in ROWS.items():
            got = [s["rows"][row] for s in seeds.values() if row in s["rows"]]
            cells = [spread([100 * g[k] for g in got], ".1f") for k in FEATURE_SETS]
            seconds = spread([g["seconds"] for g in got if g["seconds"] is not None], ".0f")
            lines.append(f"| {recipe} | {label} | " + " | ".join(cells) + f" | {seconds} |")
    lines += ["", f"| recipe | scalar (mean of last {LAST_N}) | final | chance | gap (final - chance) |", "|---" * 5 + "|"]
    for recipe, seeds in results.items():
        all_tags = {t for s in seeds.values() for t in s["scalars"]}
        for tag in sorted(all_tags, key=lambda t: (not t.startswith("train/"), t)):
            if tag.endswith("_chance"):
                continue
            chance_tag = chance_tag_of(tag, all_tags)
            final = [s["scalars"][tag] for s in seeds.values() if tag in s["scalars"]]
            chance = [s["scalars"][chance_tag] for s in seeds.values() if chance_tag in s["scalars"]]
            gap = [s["scalars"][tag] - s["scalars"][chance_tag] for s in seeds.values()
                   if tag in s["scalars"] and chance_tag in s["scalars"]]
            lines.append(f"| {recipe} | {tag} | {spread(final, '.3f')} | {spread(chance, '.3f')} | {spread(gap, '+.3f')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collection", default="demo", choices=sorted(COLLECTIONS),
                        help="the synthetic collection to pretrain and probe on")
    parser.add_argument("--recipes", nargs="+", default=["default", "cav_mae_demo"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--supervised-epochs", type=int, default=30, help="0: no supervised row")
    parser.add_argument("--out", default="bench/results/quality.json")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", dest="sets",
                        help="dotlist overrides applied to every recipe, e.g. trainer.max_epochs=2")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    machine = {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
               "torch": torch.__version__, "threads": torch.get_num_threads()}
    out = Path(args.out)
    results: dict[str, dict[str, Any]] = {}
    clips = ensure_collection(args.collection)
    data = [f"data.root={clips.unlabeled}", f"probe.data={clips.labeled}"]
    with tempfile.TemporaryDirectory(prefix="avssl-quality-") as tmp:
        try:  # every config first, so a missing recipe or bad override stops before any training
            configs = {(r, s): load_config([f"recipe={r}", f"run.seed={s}", "trainer.enable_progress_bar=false",
                                            f"run.dir={tmp}/{Path(r).stem}-seed{s}", *data, *args.sets])
                       for r in args.recipes for s in args.seeds}
            for (recipe, seed), config in configs.items():
                log.info("recipe %s, seed %d", recipe, seed)
                results.setdefault(config.recipe, {})[str(seed)] = one_seed(config, seed, args.supervised_epochs)
                out.parent.mkdir(parents=True, exist_ok=True)  # after every seed: a late failure keeps the rest
                out.write_text(json.dumps({"machine": machine, "args": vars(args), "collection": args.collection,
                                           "recipes": results}, indent=2))
        except USER_ERRORS as err:
            print(f"bench/quality.py: error: {err}", file=sys.stderr)
            return 2
    log.info("wrote %s", out)
    print(tables(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
