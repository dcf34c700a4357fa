"""``python -m avssl.probe RUN_OR_EXPORT --data LABELED_DIR``: linear probe of a pretrained backbone.

Embeds the labeled clips with the frozen backbone (audio, video and joint features), fits the
linear classifier of `avssl.evaluation.linear_probe` and prints top-1 per feature set; the JSON
written to ``--out`` adds the protocol and the number of clips used and skipped.
``--random-init`` probes the same architecture with fresh weights, to show what pretraining bought.
Without ``--out`` the JSON is named after what is probed (`default_out`), so the two probes of a
run write two files: ``probe-<run>.json`` and ``probe-<run>-random_init.json``.

LABELED_DIR is folder-per-class (split into train and test by a seeded stratified split) or holds
``train/`` and ``val/`` (or ``test/``) folders of classes. A split a probe cannot give a meaningful
figure on (fewer than 2 classes with usable clips in train or test, a class only in test) is an
error (exit code 2); the JSON is then written with the error and the skipped files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from avssl.backbones.encoder import AudioVisualEncoder
from avssl.backbones.registry import build_encoder
from avssl.console import configure_logging
from avssl.evaluation.linear_probe import FEATURE_SETS, linear_probe
from avssl.export import encoder_from_checkpoint
from avssl.loading import load_backbone
from datamodules.errors import DataPathError, DataSourceError, NoUsableClipsError
from datamodules.folder import DEFAULT_EXTENSIONS
from datamodules.labeled import LabeledClipDataModule
from datamodules.preprocessing import Preprocessing
from datamodules.report import DataReport


def _load(path: str) -> tuple[AudioVisualEncoder, Preprocessing]:
    if path.endswith(".ckpt"):
        encoder, preprocessing, _ = encoder_from_checkpoint(path)
        return encoder, preprocessing
    model = load_backbone(path)
    return model.encoder, model.preprocessing


def probe(
    backbone: str,
    data: str,
    random_init: bool = False,
    batch_size: int = 32,
    num_workers: int = 2,
    test_fraction: float = 0.3,
    seed: int = 0,
    device: str = "cpu",
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS,
    report: DataReport | None = None,
) -> dict[str, Any]:
    """Linear-probes a run directory, export directory or checkpoint on a labeled folder.

    Args:
        report: records the labeled files that were skipped, also when the data is refused; its
            ``location`` is where warnings say they are listed (default: a fresh report).

    Returns:
        ``{"audio": {"top1"}, "video": {"top1"}, "joint": {"top1"}, "protocol", "train_clips",
        "test_clips", "skipped_clips", "skipped", "backbone", "init", "data", "classes"}``.

    Raises:
        FileNotFoundError, ValueError: the backbone cannot be loaded (one line naming the file).
        DataPathError, DataSourceError, NoUsableClipsError: the labeled data cannot be probed on.
    """
    encoder, preprocessing = _load(backbone)
    if random_init:
        torch.manual_seed(seed)
        encoder = build_encoder(encoder.spec)
    labeled = LabeledClipDataModule(
        root=data, preprocessing=preprocessing, batch_size=batch_size, num_workers=num_workers, test_fraction=test_fraction, seed=seed,
        extensions=extensions, key="--data", extensions_key="--extensions", report=report,
    )
    labeled.setup("fit")
    encoder.to(device)
    init = "random_init" if random_init else "pretrained"
    result = linear_probe(encoder, labeled, device, seed, name=init)
    skipped = labeled.report.skipped
    result.update(
        backbone=backbone,
        init=init,
        data=data,
        classes=labeled.class_names,
        skipped_clips=len(skipped),
        skipped=skipped,
    )
    return result


def default_out(backbone: str, random_init: bool = False) -> Path:
    """The JSON file a probe writes without ``--out``: ``probe-<name>[-random_init].json`` in the current folder.

    <name> is the run's or export's folder name (for ``<run>/export``: the run's), or for a
    checkpoint its file name, after the run's (``<run>/checkpoints/last.ckpt``: ``<run>-last``).

    Examples:
        >>> default_out("runs/default-20250101-120000/export", random_init=True).name
        'probe-default-20250101-120000-random_init.json'
        >>> default_out("runs/cav/checkpoints/last.ckpt").name
        'probe-cav-last.json'
    """
    path = Path(backbone).resolve()
    if path.suffix == ".ckpt":
        name = f"{path.parent.parent.name}-{path.stem}" if path.parent.name == "checkpoints" else path.stem
    else:
        name = path.parent.name if path.name == "export" else path.name
    return Path(f"probe-{name}{'-random_init' if random_init else ''}.json")


def format_table(result: dict[str, Any]) -> str:
    header = f"{'features':<10}{'top-1':>8}"
    rows = [f"{name:<10}{result[name]['top1']:>8.1%}" for name in FEATURE_SETS]
    counts = (
        f"{result['init']} backbone, {len(result['classes'])} classes, {result['train_clips']} train / "
        f"{result['test_clips']} test clips, {result['skipped_clips']} skipped"
    )
    return "\n".join([counts, header, *rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m avssl.probe", description=__doc__.splitlines()[0])
    parser.add_argument("backbone", help="run directory, export directory, or a .ckpt checkpoint")
    parser.add_argument("--data", required=True, help="labeled folder (folder-per-class, or train/ + val/ or test/)")
    parser.add_argument("--out", help="JSON file for the results (default: probe-<run or export name>.json, "
                        "probe-<name>-random_init.json with --random-init)")
    parser.add_argument("--random-init", action="store_true", help="probe the same architecture with fresh weights")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--test-fraction", type=float, default=0.3, help="test share of a folder-per-class split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--extensions", default=",".join(DEFAULT_EXTENSIONS),
                        help="comma-separated file endings that count as videos (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = str(default_out(args.backbone, args.random_init))
    configure_logging()
    report = DataReport(location=f"{args.out} ('skipped')")
    extensions = tuple(ext.strip() for ext in args.extensions.split(",") if ext.strip())
    try:
        result = probe(
            args.backbone, args.data, args.random_init, args.batch_size, args.num_workers, args.test_fraction, args.seed, args.device,
            extensions, report,
        )
    except (DataSourceError, NoUsableClipsError) as err:
        # The labeled data was refused: the skipped files the warnings pointed to are written all the same.
        Path(args.out).write_text(json.dumps({"error": str(err), "data": args.data, "skipped_clips": len(report.skipped),
                                              "skipped": report.skipped}, indent=2))
        print(f"avssl.probe: error: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, DataPathError) as err:
        print(f"avssl.probe: error: {err}", file=sys.stderr)
        return 2
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(format_table(result))
    print(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
