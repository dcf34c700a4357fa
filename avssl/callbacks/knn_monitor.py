"""kNN monitor: does the backbone gain class information while its loss falls?

A falling loss says that the objective's task gets solved, not that the features learn what the
classes share: on the demo clips an InfoNCE on unmasked clips fell to 0.02 while the linear probe
ended *below* the masked recipe's (docs/objectives.md). The linear probe says so at the end of the
run; this callback says so every few epochs, cheaply. It classifies the probe set's test clips by
weighted cosine kNN on the frozen audio, video and joint features (`avssl.evaluation.knn`, Wu et
al. 2018, arXiv:1805.01978), logs the top-1 as ``health/knn/<audio|video|joint>_top1`` next to the
same figure for a freshly initialised backbone of the same architecture
(``health/knn/<...>_random_init``), and warns once per feature set that ends up worse than at
random init while the training loss fell.

Cost: the probe set is decoded once, when fitting starts, and its batches are kept in memory (the
size is logged; a set of more than `KEEP_DECODED_BYTES` decoded is decoded again at each check
instead), so each check is one embedding pass over it and no decoding. The check runs on
global rank 0 only, like `avssl.callbacks.LinearProbeCallback`, on the module's device.
"""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from avssl.backbones.registry import build_seeded_encoder
from avssl.evaluation.knn import knn_top1
from avssl.evaluation.linear_probe import FEATURE_SETS, embed_clips
from avssl.task_progress import TaskProgress
from datamodules.errors import DataSourceError
from datamodules.labeled import LabeledClipDataModule

log = logging.getLogger(__name__)

# The probe set is kept decoded in memory up to this size (a few hundred small clips take about
# 100 MB); a larger one is decoded again at every check instead of filling the host's memory.
KEEP_DECODED_BYTES = 2**30

# A feature set is "worse than at random init" when its top-1 is more than this below the random
# init's (fractions). On the demo's 144 test clips one clip is 0.7 points: 2 points is three clips,
# so one or two clips that flip between checks do not raise the warning.
WORSE_MARGIN = 0.02

SHORTCUT_HINT = (
    "augmentation that hides what only one clip has (colour jitter: data.augment.video.brightness/contrast/"
    "saturation/hue; audio gain and masks: data.augment.audio.gain_db, time_mask_frames, freq_mask_bins; "
    "random crops: data.augment.video.resized_crop_scale; audio shifted against the video: data.av_offset_s), "
    "more frames per clip (data.preprocessing.num_frames), cross-modal negatives only "
    "(objectives.av_infonce.negatives=cross_modal), or a contrastive term on a masked pass "
    "(objectives.av_infonce.pass_name=masked)"
)


def worse_than_random_init(top1: float, random_init_top1: float, first_epoch_loss: float, last_epoch_loss: float,
                           margin: float = WORSE_MARGIN) -> bool:
    """Whether features got worse than at random init while the training loss fell.

    Args:
        top1: kNN top-1 of the trained backbone's features, in [0, 1].
        random_init_top1: the same for the freshly initialised backbone.
        first_epoch_loss: mean training loss over the first epoch.
        last_epoch_loss: mean training loss over the latest epoch.
        margin: how far below ``random_init_top1`` counts as worse (fractions, not points).

    Examples:
        >>> worse_than_random_init(0.30, 0.40, first_epoch_loss=4.1, last_epoch_loss=1.2)
        True
        >>> worse_than_random_init(0.30, 0.40, first_epoch_loss=4.1, last_epoch_loss=4.3)
        False
    """
    return top1 < random_init_top1 - margin and last_epoch_loss < first_epoch_loss


def _decoded(loader: Any, progress: TaskProgress) -> list[Any]:
    """Every batch of `loader`, counted into `progress` (clips read, those that failed included)."""
    batches = []
    for batch in loader:
        batches.append(batch)
        progress.update(batch["video"].shape[0] + len(batch["meta"]["skipped"]))
    return batches


class KNNMonitor(pl.Callback):
    """Logs the kNN top-1 of ``pl_module.backbone`` on `datamodule` every ``every_n_epochs`` epochs.

    Args:
        datamodule: the probe's labeled clips (train split: the neighbours; test split: the
            clips classified); the same instance `LinearProbeCallback` uses.
        k: neighbours that vote (clamped to the number of train clips).
        temperature: a neighbour's vote is ``exp(cosine similarity / temperature)``.
        every_n_epochs: check after every n-th epoch (the last one included).
        seed: seed of the random-init backbone's initialisation.

    Attributes:
        results: ``{"random_init" | "epoch_<n>": {"audio" | "video" | "joint": top-1}}``.
        epoch_losses: ``{epoch (from 1): mean training loss}`` of each finished epoch of this fit.
        warned: the feature sets already warned about.

    Raises:
        ValueError: for k < 1, temperature <= 0 or every_n_epochs < 1.
    """

    def __init__(self, datamodule: LabeledClipDataModule, k: int = 20, temperature: float = 0.07,
                 every_n_epochs: int = 1, seed: int = 0):
        if k < 1 or not temperature > 0 or every_n_epochs < 1:
            raise ValueError(f"k={k}, temperature={temperature}, every_n_epochs={every_n_epochs}: need k >= 1, "
                             "temperature > 0 and every_n_epochs >= 1 (set health.knn_every_n_epochs=0 to turn "
                             "the kNN monitor off).")
        self.datamodule = datamodule
        self.k = k
        self.temperature = temperature
        self.every_n_epochs = every_n_epochs
        self.seed = seed
        self.results: dict[str, dict[str, float]] = {}
        self.epoch_losses: dict[int, float] = {}
        self.warned: set[str] = set()
        self._batches: dict[str, Any] = {}  # "train" / "test" -> decoded batches, or their loaders
        self._loss_sum: Tensor | None = None  # on the module's device: no host sync per step
        self._loss_steps = 0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self.datamodule.setup("fit")
        loaders = {"train": self.datamodule.train_dataloader(), "test": self.datamodule.test_dataloader()}
        pre = self.datamodule.preprocessing
        clip_bytes = 4 * (3 * pre.num_frames * pre.frame_size**2 + pre.audio_frames * pre.num_mel_bins)
        if (self.datamodule.num_train + self.datamodule.num_test) * clip_bytes > KEEP_DECODED_BYTES:
            self._batches = loaders  # setup() checked the scanned split
            kept = f"decoded again at each check (more than {KEEP_DECODED_BYTES / 2**30:.0f} GiB decoded)"
        else:
            with TaskProgress("kNN monitor: decoding the probe set", self.datamodule.num_train + self.datamodule.num_test,
                              "clips", enabled=trainer.progress_bar_callback is not None) as progress:
                batches = {split: _decoded(loader, progress) for split, loader in loaders.items()}
            labels = {split: [label for b in kept for label in b["label"].tolist()] for split, kept in batches.items()}
            try:  # clips that failed to decode may leave a split no classifier can use
                self.datamodule.check_split(labels["train"], labels["test"])
            except DataSourceError as err:
                log.error("kNN monitor off: %s", err)
                return
            self._batches = batches
            size = sum(b[key].numel() * b[key].element_size() for kept in batches.values() for b in kept
                       for key in ("audio", "video"))
            kept = f"decoded once and kept in memory ({size / 2**20:.1f} MB)"
        log.info("kNN monitor: %d train and %d test clips of %s, %s; k=%d, every %d epoch(s)",
                 self.datamodule.num_train, self.datamodule.num_test, self.datamodule.source, kept, self.k,
                 self.every_n_epochs)
        fresh = build_seeded_encoder(pl_module.backbone.spec, self.seed).to(pl_module.device)
        self._record(trainer, "random_init", self._top1(fresh, pl_module.device))
        del fresh

    def _top1(self, encoder: nn.Module, device: torch.device) -> dict[str, float]:
        """kNN top-1 of each feature set of `encoder` (embedded in eval mode, without gradients)."""
        train, test = (embed_clips(encoder, self._batches[split], device) for split in ("train", "test"))
        return {name: knn_top1(getattr(train, name), train.labels, getattr(test, name), test.labels, self.k, self.temperature)
                for name in FEATURE_SETS}

    def _record(self, trainer: pl.Trainer, name: str, top1: dict[str, float]) -> None:
        self.results[name] = top1
        random_init = self.results["random_init"]
        metrics = {f"health/knn/{s}_random_init": random_init[s] for s in FEATURE_SETS}
        figures = [f"{s} {top1[s]:.1%}" for s in FEATURE_SETS]
        if name != "random_init":
            metrics.update({f"health/knn/{s}_top1": top1[s] for s in FEATURE_SETS})
            figures = [f"{figure} (random init {random_init[s]:.1%})" for figure, s in zip(figures, FEATURE_SETS)]
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        log.info("kNN top-1 (%s, k=%d): %s", name, self.k, ", ".join(figures))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._loss_sum, self._loss_steps = None, 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self._batches:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, Tensor):  # None: a step skipped for too few usable clips
            loss = loss.detach().float()
            self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
            self._loss_steps += 1

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._batches:  # not rank 0, or the probe set is unusable
            return
        epoch = trainer.current_epoch + 1
        if self._loss_sum is not None:
            self.epoch_losses[epoch] = (self._loss_sum / self._loss_steps).item()
        if epoch % self.every_n_epochs:
            return
        top1 = self._top1(pl_module.backbone, pl_module.device)
        pl_module.train(pl_module.training)  # re-applies the module's own train() (its frozen parts stay in eval)
        self._record(trainer, f"epoch_{epoch}", top1)
        self._warn_if_worse(epoch, top1)

    def _warn_if_worse(self, epoch: int, top1: dict[str, float]) -> None:
        first_epoch, last_epoch = min(self.epoch_losses, default=0), max(self.epoch_losses, default=0)
        if first_epoch == last_epoch:  # no earlier loss to compare with
            return
        first, last = self.epoch_losses[first_epoch], self.epoch_losses[last_epoch]
        random_init = self.results["random_init"]
        for name in FEATURE_SETS:
            if name in self.warned or not worse_than_random_init(top1[name], random_init[name], first, last):
                continue
            self.warned.add(name)
            log.warning(
                "kNN monitor: the %s features are worse than at random init after epoch %d (kNN top-1 %.1f%% against "
                "%.1f%% at random init, k=%d) while the training loss fell (mean %.3f over epoch %d, %.3f over epoch "
                "%d). The objective matches pairs by a clip-specific cue instead of what the classes share; "
                "see docs/objectives.md, \"Training health\". To make that cue useless: %s.",
                name, epoch, 100 * top1[name], 100 * random_init[name], self.k, first, first_epoch, last, last_epoch,
                SHORTCUT_HINT,
            )
