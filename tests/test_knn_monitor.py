"""Weighted kNN classification and the kNN monitor of pretraining (health/knn/...)."""

import logging
import re
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers.logger import Logger
from torch import nn

from avssl.backbones.registry import build_seeded_encoder, preset_spec
from avssl.callbacks import KNNMonitor
from avssl.callbacks.knn_monitor import WORSE_MARGIN, worse_than_random_init
from avssl.config import load_config
from avssl.errors import ConfigError
from avssl.evaluation.knn import knn_predict_labels, knn_top1
from datamodules.errors import DataSourceError
from datamodules.preprocessing import Preprocessing


def naive_knn(train_x, train_y, test_x, k, temperature):
    """Wu et al. 2018, Sec. 3.4, one test clip at a time."""
    predictions = []
    for x in test_x:
        sims = [float(F.cosine_similarity(x, t, dim=0)) for t in train_x]
        nearest = sorted(range(len(sims)), key=lambda i: -sims[i])[: min(k, len(sims))]
        votes: dict[int, float] = {}
        for i in nearest:
            votes[int(train_y[i])] = votes.get(int(train_y[i]), 0.0) + torch.exp(torch.tensor(sims[i] / temperature)).item()
        predictions.append(max(votes, key=votes.get))
    return torch.tensor(predictions)


@pytest.mark.parametrize("n,m,dim,classes", [(10, 7, 4, 3), (40, 25, 16, 5)])
@pytest.mark.parametrize("k", [1, 5, 20])
@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_knn_matches_the_naive_reference(n, m, dim, classes, k, temperature):
    torch.manual_seed(n + k)
    train_x, test_x = torch.randn(n, dim), torch.randn(m, dim)
    train_y, test_y = torch.randint(classes, (n,)), torch.randint(classes, (m,))
    expected = naive_knn(train_x, train_y, test_x, k, temperature)
    assert torch.equal(knn_predict_labels(train_x, train_y, test_x, k, temperature), expected)
    assert knn_top1(train_x, train_y, test_x, test_y, k, temperature) == pytest.approx(expected.eq(test_y).double().mean().item())


@pytest.mark.parametrize("k", [1, 3, 50])
def test_perfectly_separated_clusters_are_all_right(k):
    torch.manual_seed(0)
    centres = 10.0 * torch.eye(4)  # [C=4, D=4], orthogonal
    train_y, test_y = torch.arange(4).repeat(5), torch.arange(4).repeat(3)
    train_x = centres[train_y] + 0.1 * torch.randn(20, 4)
    test_x = centres[test_y] + 0.1 * torch.randn(12, 4)
    assert knn_top1(train_x, train_y, test_x, test_y, k=k) == 1.0


def test_k_one_is_the_nearest_neighbour_by_cosine():
    torch.manual_seed(1)
    train_x, test_x = torch.randn(30, 8), torch.randn(12, 8)
    train_y = torch.randint(6, (30,))
    nearest = (F.normalize(test_x, dim=1) @ F.normalize(train_x, dim=1).T).argmax(dim=1)
    assert torch.equal(knn_predict_labels(train_x, train_y, test_x, k=1), train_y[nearest])
    # cosine: the scale of a feature does not matter
    assert torch.equal(knn_predict_labels(3.0 * train_x, train_y, 0.5 * test_x, k=1), train_y[nearest])


def test_k_is_clamped_to_the_train_clips():
    torch.manual_seed(2)
    train_x, train_y, test_x = torch.randn(6, 4), torch.tensor([0, 0, 0, 0, 1, 1]), torch.randn(5, 4)
    assert torch.equal(knn_predict_labels(train_x, train_y, test_x, k=1000, temperature=0.5),
                       knn_predict_labels(train_x, train_y, test_x, k=6, temperature=0.5))


@pytest.mark.parametrize("kwargs,message", [
    ({"k": 0}, r"k=0: must be >= 1"),
    ({"temperature": 0.0}, r"temperature=0.0: must be > 0"),
    ({"test_x": torch.randn(3, 5)}, r"train features \(6, 4\) and test features \(3, 5\)"),
    ({"train_y": torch.zeros(5, dtype=torch.long)}, r"train labels \(5,\)"),
    ({"test_y": torch.zeros(2, dtype=torch.long)}, r"test labels \(2,\)"),
    ({"test_x": torch.randn(0, 4), "test_y": torch.zeros(0, dtype=torch.long)}, "at least one clip"),
])
def test_knn_rejects_bad_arguments(kwargs, message):
    args = {"train_x": torch.randn(6, 4), "train_y": torch.zeros(6, dtype=torch.long), "test_x": torch.randn(3, 4),
            "test_y": torch.zeros(3, dtype=torch.long), **kwargs}
    with pytest.raises(ValueError, match=message):
        knn_top1(**args)


def test_worse_than_random_init_while_the_loss_falls():
    assert worse_than_random_init(0.30, 0.40, first_epoch_loss=4.1, last_epoch_loss=1.2)
    # the loss did not fall: the objective is not learning at all, the chance monitor's case
    assert not worse_than_random_init(0.30, 0.40, first_epoch_loss=4.1, last_epoch_loss=4.1)
    assert not worse_than_random_init(0.30, 0.40, first_epoch_loss=4.1, last_epoch_loss=4.5)
    # the features improved, or stayed within the margin of the random init
    assert not worse_than_random_init(0.55, 0.40, first_epoch_loss=4.1, last_epoch_loss=1.2)
    assert not worse_than_random_init(0.40 - WORSE_MARGIN / 2, 0.40, first_epoch_loss=4.1, last_epoch_loss=1.2)
    assert worse_than_random_init(0.40 - 2 * WORSE_MARGIN, 0.40, first_epoch_loss=4.1, last_epoch_loss=1.2)


@pytest.mark.parametrize("override,message", [
    ("health.knn_k=0", "health.knn_k=0: must be in [1, 10_000]"),
    ("health.knn_temperature=-0.1", "health.knn_temperature=-0.1: must be in (0.0, 100.0]"),
    ("health.knn_every_n_epochs=-1", "health.knn_every_n_epochs=-1: must be in [0, 100_000]"),
])
def test_knn_config_keys_are_checked(override, message):
    assert (load_config([]).health.knn_k, load_config([]).health.knn_every_n_epochs) == (20, 5)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config([override])


def test_knn_monitor_rejects_bad_settings():
    with pytest.raises(ValueError, match="temperature=-1"):
        KNNMonitor(datamodule=None, temperature=-1)
    with pytest.raises(ValueError, match="k=0"):
        KNNMonitor(datamodule=None, k=0)


# A tiny labeled set built in memory: the class is written into both inputs (a class-specific
# brightness and tone), so a random-init strided-conv backbone already separates it.
SPEC = preset_spec("strided_conv", embed_dim=16, tower_width=4, audio_frames=24, num_mel_bins=16, num_frames=2, frame_size=16)
CLASSES = 3


def _batches(clips_per_class: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(CLASSES).repeat(clips_per_class)
    level = (labels.float() - 1.0)[:, None, None, None, None]  # [B, 1, 1, 1, 1]
    video = 2.0 * level + 0.1 * torch.randn(len(labels), 3, SPEC.num_frames, SPEC.frame_size, SPEC.frame_size, generator=g)
    audio = 2.0 * level[..., 0] + 0.1 * torch.randn(len(labels), 1, SPEC.audio_frames, SPEC.num_mel_bins, generator=g)
    return [{"audio": audio, "video": video, "label": labels, "meta": {"skipped": []}}]


class InMemoryLabeled:
    """What `KNNMonitor` reads of a `LabeledClipDataModule`, with batches built in memory."""

    source = "probe.data=<in memory>"
    preprocessing = Preprocessing(num_frames=SPEC.num_frames, frame_size=SPEC.frame_size,
                                  audio_frames=SPEC.audio_frames, num_mel_bins=SPEC.num_mel_bins)
    num_train, num_test = 8 * CLASSES, 4 * CLASSES  # as `_batches` builds them

    def __init__(self, degenerate: bool = False):
        self.loads = 0
        self.degenerate = degenerate

    def setup(self, stage=None):
        pass

    def train_dataloader(self):
        self.loads += 1
        return _batches(8, seed=0)

    def test_dataloader(self):
        self.loads += 1
        return _batches(4, seed=1)

    def check_split(self, train_labels, test_labels):
        if self.degenerate:
            raise DataSourceError("probe.data=<in memory>: only one class decoded")


class ClipSpecificBackbone(nn.Module):
    """A 'trained' backbone whose features carry only a per-clip cue: random noise, no class."""

    def __init__(self):
        super().__init__()
        self.spec = SPEC
        self.scale = nn.Parameter(torch.ones(()))

    def forward_features(self, audio, video):
        g = torch.Generator().manual_seed(int(video.shape[0]))
        noise = {name: torch.randn(video.shape[0], SPEC.embed_dim, generator=g) for name in ("audio", "video", "joint")}
        return {f"{name}_embedding": self.scale * z for name, z in noise.items()}


class FallingLoss(pl.LightningModule):
    """Its loss falls every step while its backbone's features stay clip-specific."""

    def __init__(self):
        super().__init__()
        self.backbone = ClipSpecificBackbone()
        self.w = nn.Parameter(torch.tensor(2.0))

    def training_step(self, batch, batch_idx):
        return {"loss": self.w**2}

    def configure_optimizers(self):
        return torch.optim.SGD([self.w], lr=0.1)


class RecordingLogger(Logger):
    def __init__(self):
        super().__init__()
        self.logged: list[tuple[int, dict]] = []

    name, version = "recording", 0

    def log_metrics(self, metrics, step=None):
        self.logged.append((step, dict(metrics)))

    def log_hyperparams(self, params, *args, **kwargs):
        pass


def test_random_init_backbone_separates_the_constructed_classes():
    encoder = build_seeded_encoder(SPEC, seed=0)
    (train,), (test,) = _batches(8, 0), _batches(4, 1)
    with torch.no_grad():
        a, b = encoder.forward_features(train["audio"], train["video"]), encoder.forward_features(test["audio"], test["video"])
    for name in ("audio", "video", "joint"):
        assert knn_top1(a[f"{name}_embedding"], train["label"], b[f"{name}_embedding"], test["label"], k=5) == 1.0


def test_knn_monitor_logs_figures_and_warns_once_per_feature_set(caplog):
    labeled, logger = InMemoryLabeled(), RecordingLogger()
    monitor = KNNMonitor(labeled, k=5, temperature=0.07, every_n_epochs=1, seed=0)
    data = torch.utils.data.DataLoader(torch.zeros(4, 1), batch_size=1)
    trainer = pl.Trainer(max_epochs=3, accelerator="cpu", logger=logger, callbacks=[monitor], enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1)
    with caplog.at_level(logging.INFO, logger="avssl.callbacks.knn_monitor"):
        trainer.fit(FallingLoss(), train_dataloaders=data)

    assert labeled.loads == 2  # decoded once, when fitting started, for all three checks
    assert monitor.results["random_init"] == {"audio": 1.0, "video": 1.0, "joint": 1.0}
    assert set(monitor.results) == {"random_init", "epoch_1", "epoch_2", "epoch_3"}
    assert list(monitor.epoch_losses) == [1, 2, 3] and monitor.epoch_losses[3] < monitor.epoch_losses[1]
    knn = [(step, m) for step, m in logger.logged if "health/knn/audio_random_init" in m]
    assert [step for step, _ in knn] == [0, 4, 8, 12]
    assert set(knn[0][1]) == {f"health/knn/{s}_random_init" for s in ("audio", "video", "joint")}
    assert set(knn[-1][1]) == {f"health/knn/{s}_{what}" for s in ("audio", "video", "joint") for what in ("top1", "random_init")}
    assert knn[-1][1]["health/knn/video_top1"] == monitor.results["epoch_3"]["video"] < 1.0 - WORSE_MARGIN

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # epoch 1 has no earlier loss to compare with; epoch 2 warns for each set; epoch 3 repeats none
    assert len(warnings) == 3, warnings
    assert [w.split("the ")[1].split(" features")[0] for w in warnings] == ["audio", "video", "joint"]
    assert "after epoch 2" in warnings[1] and "against 100.0% at random init" in warnings[1]
    assert f"mean {monitor.epoch_losses[1]:.3f} over epoch 1, {monitor.epoch_losses[2]:.3f} over epoch 2" in warnings[1]
    assert "clip-specific cue" in warnings[1] and "docs/objectives.md" in warnings[1]
    assert "data.preprocessing.num_frames" in warnings[1] and "negatives=cross_modal" in warnings[1]
    assert sum("kNN top-1 (epoch_" in r.getMessage() for r in caplog.records) == 3


def test_knn_monitor_does_nothing_on_other_ranks_or_without_a_usable_split(caplog):
    other_rank, degenerate = InMemoryLabeled(), InMemoryLabeled(degenerate=True)
    with caplog.at_level(logging.INFO, logger="avssl.callbacks.knn_monitor"):
        for labeled, rank_zero in ((other_rank, False), (degenerate, True)):
            monitor, module = KNNMonitor(labeled, k=5), FallingLoss()
            trainer = SimpleNamespace(is_global_zero=rank_zero, current_epoch=0, global_step=1, loggers=[],
                                      progress_bar_callback=None)
            monitor.on_fit_start(trainer, module)
            monitor.on_train_epoch_start(trainer, module)
            monitor.on_train_batch_end(trainer, module, {"loss": torch.tensor(1.0)}, None, 0)
            monitor.on_train_epoch_end(trainer, module)
            assert not monitor.results and not monitor.epoch_losses
    assert other_rank.loads == 0  # rank > 0 decodes nothing
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == ["kNN monitor off: probe.data=<in memory>: only one class decoded"]
