"""Linear probe of a frozen audio-visual encoder on a labeled set.

Protocol (one for every recipe, so numbers are comparable): the encoder is frozen and in eval
mode; each clip is embedded as the mean of its audio, video and joint stream tokens (CAV-MAE's
pooling, arXiv:2210.07839); features are standardised with the train split's statistics; a
multinomial logistic regression is fitted with L-BFGS, its L2 penalty chosen from
`L2_GRID` on a stratified 20% hold-out of the train split and then refitted on the whole train
split; the figure is top-1 accuracy on the test split. A split that cannot give a meaningful
figure (fewer than 2 classes, a class only in test; `datamodules.split_check`) is refused, also
when clips that failed to decode made it so.

A probe takes about a minute on the demo's 480 clips on a CPU: `linear_probe` logs what it
probes when it starts and shows its progress through the embedding pass and the fits
(`avssl.task_progress`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from avssl.backbones.encoder import AudioVisualEncoder
from avssl.task_progress import TaskProgress
from datamodules.labeled import LabeledClipDataModule

log = logging.getLogger(__name__)

FEATURE_SETS = ("audio", "video", "joint")
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
FITS_PER_PROBE = len(L2_GRID) + 1  # per feature set: one fit per L2 penalty on the hold-out split, then the refit
PROTOCOL = (
    "frozen encoder; mean-pooled audio/video/joint tokens; standardised features; multinomial "
    "logistic regression (L-BFGS), L2 penalty picked from {1e-4,...,1} on a stratified 20% hold-out "
    "of the train split, refitted on all of it; top-1 on the test split"
)


@dataclass
class ClipFeatures:
    """Embeddings of a labeled set: ``audio``, ``video``, ``joint`` ``[N, D]`` and ``labels`` ``[N]``."""

    audio: Tensor
    video: Tensor
    joint: Tensor
    labels: Tensor
    skipped: list[dict[str, str]]


def _advance(progress: TaskProgress | None, n: int) -> None:
    if progress is not None:
        progress.update(n)


@torch.no_grad()
def embed_clips(encoder: AudioVisualEncoder, loader: Any, device: torch.device | str = "cpu",
                progress: TaskProgress | None = None) -> ClipFeatures:
    """Embeds every usable clip of a labeled loader (batches from `datamodules.collate_clips`).

    A loader without a usable clip gives empty tensors (``labels`` of shape ``[0]``). `progress`
    counts the clips read, those that failed to decode included.
    """
    was_training = encoder.training
    encoder.eval()
    feats: dict[str, list[Tensor]] = {k: [] for k in (*FEATURE_SETS, "labels")}
    skipped: list[dict[str, str]] = []
    for batch in loader:
        skipped.extend(batch["meta"]["skipped"])
        _advance(progress, batch["video"].shape[0] + len(batch["meta"]["skipped"]))
        if batch["video"].shape[0] == 0:
            continue
        out = encoder.forward_features(batch["audio"].to(device), batch["video"].to(device))
        for name in FEATURE_SETS:
            feats[name].append(out[f"{name}_embedding"].float().cpu())
        feats["labels"].append(batch["label"].cpu())
    encoder.train(was_training)
    if not feats["labels"]:
        return ClipFeatures(**{k: torch.empty(0) for k in FEATURE_SETS}, labels=torch.empty(0, dtype=torch.long),
                            skipped=skipped)
    return ClipFeatures(**{k: torch.cat(v) for k, v in feats.items()}, skipped=skipped)


def _fit(x: Tensor, y: Tensor, num_classes: int, l2: float) -> tuple[Tensor, Tensor]:
    weight = torch.zeros(x.shape[1], num_classes, dtype=x.dtype, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=x.dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight + bias, y) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach()


def _accuracy(x: Tensor, y: Tensor, params: tuple[Tensor, Tensor]) -> float:
    weight, bias = params
    return (x @ weight + bias).argmax(dim=1).eq(y).double().mean().item()


def _stratified_holdout(y: Tensor, fraction: float, generator: torch.Generator) -> Tensor:
    """Boolean mask of a hold-out set with about `fraction` of each class (at least one per class of 2+)."""
    holdout = torch.zeros_like(y, dtype=torch.bool)
    for c in y.unique():
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        take = min(len(idx) - 1, max(1, round(fraction * len(idx))))
        holdout[idx[:take]] = True
    return holdout


def linear_probe_top1(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, seed: int = 0,
                      progress: TaskProgress | None = None) -> float:
    """Top-1 test accuracy of a standardised multinomial logistic regression (see module doc).

    Args:
        train_x: ``[N, D]`` train features.
        train_y: ``[N]`` integer labels.
        test_x: ``[M, D]`` test features.
        test_y: ``[M]`` integer labels.
        seed: seed of the hold-out split used to pick the L2 penalty.
        progress: counts `FITS_PER_PROBE` fits (a penalty search that is not possible, with no
            class of 2 train clips, counts as done).
    """
    num_classes = int(max(train_y.max(), test_y.max()).item()) + 1
    mean, std = train_x.mean(dim=0), train_x.std(dim=0).clamp_min(1e-6)
    train_x = ((train_x - mean) / std).double()
    test_x = ((test_x - mean) / std).double()
    holdout = _stratified_holdout(train_y, 0.2, torch.Generator().manual_seed(seed))
    if holdout.any() and (~holdout).any():
        scores = []
        for l2 in L2_GRID:
            scores.append(_accuracy(train_x[holdout], train_y[holdout],
                                    _fit(train_x[~holdout], train_y[~holdout], num_classes, l2)))
            _advance(progress, 1)
        l2 = L2_GRID[max(range(len(L2_GRID)), key=lambda i: (scores[i], L2_GRID[i]))]
    else:
        l2 = 1e-2
        _advance(progress, len(L2_GRID))
    top1 = _accuracy(test_x, test_y, _fit(train_x, train_y, num_classes, l2))
    _advance(progress, 1)
    return top1


def linear_probe(encoder: AudioVisualEncoder, labeled: LabeledClipDataModule, device: torch.device | str = "cpu",
                 seed: int = 0, name: str = "pretrained", show_progress: bool = True) -> dict[str, Any]:
    """Probes `encoder` on the train and test splits of `labeled` (set up already).

    Files that fail to decode are added to ``labeled.report``. Logs what is probed, then shows
    the progress of the embedding pass and of the fits (`avssl.task_progress`).

    Args:
        name: what is probed, named in the log lines (``pretrained``, ``random_init``, ``epoch_3``).
        show_progress: show the progress (False: only the line logged at the start).

    Returns:
        ``{"audio": {"top1"}, "video": {"top1"}, "joint": {"top1"}, "protocol", "train_clips",
        "test_clips"}`` with top-1 as a fraction in [0, 1].

    Raises:
        datamodules.errors.DataSourceError: the clips that decoded make a split the probe cannot
            use (see `LabeledClipDataModule.check_split`).
    """
    label = f"linear probe ({name})"
    parameters = sum(p.numel() for p in encoder.parameters())
    fits = len(FEATURE_SETS) * FITS_PER_PROBE
    log.info("%s: embedding %d train and %d test clips of %s with the frozen %s backbone (%.2fM parameters) on %s, "
             "then fitting %d logistic regressions", label, labeled.num_train, labeled.num_test, labeled.source,
             encoder.spec.kind, parameters / 1e6, device, fits)
    with TaskProgress(f"{label}: embedding clips", labeled.num_train + labeled.num_test, "clips",
                      show_progress) as progress:
        train = embed_clips(encoder, labeled.train_dataloader(), device, progress)
        test = embed_clips(encoder, labeled.test_dataloader(), device, progress)
    labeled.report.merge(train.skipped + test.skipped)
    labeled.check_split(train.labels.tolist(), test.labels.tolist())
    with TaskProgress(f"{label}: fitting logistic regressions", fits, "fits", show_progress) as progress:
        result: dict[str, Any] = {
            features: {"top1": linear_probe_top1(getattr(train, features), train.labels, getattr(test, features),
                                                 test.labels, seed, progress)}
            for features in FEATURE_SETS
        }
    result.update(
        protocol=PROTOCOL,
        train_clips=len(train.labels),
        test_clips=len(test.labels),
    )
    return result
