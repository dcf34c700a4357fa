"""Resume that means what it says: a changed optimizer setting is refused, a longer run follows the
schedule of its new length, and a data folder that changed under a run is noticed."""

import logging
import shutil
from pathlib import Path

import pytest
import torch
from lightly.utils.scheduler import cosine_schedule
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_pretrain_e2e import TINY

import avssl
from avssl.backbones.registry import build_encoder
from avssl.config import load_config
from avssl.export import BACKBONE_PREFIX, export_encoder
from avssl.pretrain import main as pretrain_main
from datamodules.demo import render_demo_clips

LR = 1e-3  # optim.lr of recipe cav_mae_demo; its schedule is cosine down to final_lr_ratio=0.001


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """24 clips in batches of 8: 3 steps per epoch."""
    return render_demo_clips(tmp_path_factory.mktemp("demo"), num_unlabeled=24, clips_per_class=1, seed=3, size=32,
                             seconds=1.0).unlabeled


@pytest.fixture(scope="module")
def common(videos):
    return [*TINY, f"data.root={videos}", "probe.enabled=false", "health.knn_every_n_epochs=0",
            "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1"]


@pytest.fixture(scope="module")
def epoch_end(common, tmp_path_factory):
    """A run stopped by max_steps=3 at the end of its first epoch (its cosine spans 2 x 3 steps)."""
    run_dir = tmp_path_factory.mktemp("runs") / "epoch_end"
    assert pretrain_main([*common, f"run.dir={run_dir}", "trainer.max_steps=3"]) == 0
    return run_dir


@pytest.fixture
def one_more_video(videos):
    """The data folder with one video added for the length of a test."""
    added = videos / "added.mp4"
    shutil.copy(sorted(videos.glob("*.mp4"))[0], added)
    yield added
    added.unlink()


def _logged_lr(run_dir: Path) -> dict[int, float]:
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {e.step: e.value for e in events.Scalars("lr-AdamW")}


def test_a_changed_optim_setting_is_refused_in_one_line(epoch_end, common, capsys):
    config = (epoch_end / "config.yaml").read_text()
    args = [*common, f"run.dir={epoch_end}", f"run.resume={epoch_end / 'checkpoints' / 'last.ckpt'}", "optim.lr=0.5"]
    assert pretrain_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"optim.lr=0.5 (checkpoint: {LR})" in err and "backbone.init_from=" in err
    assert (epoch_end / "config.yaml").read_text() == config  # the record still says what ran


def test_backbone_init_from_never_replaces_the_state_a_run_resumes(epoch_end, common, tmp_path):
    config = load_config(common)
    torch.manual_seed(1)  # weights that are neither the checkpoint's nor the run's random initialisation
    export = export_encoder(build_encoder(config.backbone.resolve(config.data.preprocessing)),
                            config.data.preprocessing, tmp_path / "export")
    run_dir = tmp_path / "resumed"
    args = [*common, f"run.dir={run_dir}", f"run.resume={epoch_end / 'checkpoints' / 'last.ckpt'}",
            f"backbone.init_from={export}", "trainer.max_steps=3"]  # the checkpoint's step: nothing more to train
    assert pretrain_main(args) == 0
    state = torch.load(epoch_end / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    resumed = avssl.load_backbone(run_dir / "export").encoder.state_dict()
    assert all(torch.equal(resumed[k], state[BACKBONE_PREFIX + k]) for k in resumed)
    start = avssl.load_backbone(export).encoder.state_dict()
    assert not any(torch.equal(resumed[k], start[k]) for k in resumed if resumed[k].is_floating_point() and resumed[k].std() > 0)


def test_a_longer_run_follows_the_cosine_of_its_new_length(epoch_end, common, tmp_path):
    run_dir = tmp_path / "longer"
    args = [*common, f"run.dir={run_dir}", f"run.resume={epoch_end / 'checkpoints' / 'last.ckpt'}",
            "trainer.max_epochs=4", "trainer.max_steps=8"]
    assert pretrain_main(args) == 0
    logged = _logged_lr(run_dir)
    assert sorted(logged) == [3, 4, 5, 6, 7]
    for step, lr in logged.items():  # as if the run had been started with max_steps=8
        assert lr == pytest.approx(LR * cosine_schedule(step, 8, 1.0, 0.001), rel=1e-4), (step, logged)
    assert "max_steps: 8" in (run_dir / "config.yaml").read_text()


def test_resuming_inside_an_epoch_after_the_folder_changed_is_refused(common, videos, tmp_path, capsys, request):
    run_dir = tmp_path / "run"
    assert pretrain_main([*common, f"run.dir={run_dir}", "trainer.max_steps=1"]) == 0
    request.getfixturevalue("one_more_video")
    capsys.readouterr()
    args = [*common, f"run.dir={run_dir}", f"run.resume={run_dir / 'checkpoints' / 'last.ckpt'}", "trainer.max_steps=2"]
    assert pretrain_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"the files of data.root={videos} changed since the checkpoint (25 videos now, 24 then)" in err
    assert "epoch end" in err


def test_resuming_at_an_epoch_end_after_the_folder_changed_plans_from_the_new_folder(
        epoch_end, common, one_more_video, tmp_path, caplog):
    run_dir = tmp_path / "run"
    args = [*common, f"run.dir={run_dir}", f"run.resume={epoch_end / 'checkpoints' / 'last.ckpt'}",
            "trainer.max_steps=4"]
    with caplog.at_level(logging.INFO, logger="datamodules.pretrain"):
        assert pretrain_main(args) == 0
    changed = [r.getMessage() for r in caplog.records if "changed since the checkpoint" in r.getMessage()]
    assert changed == [f"the files of data.root={one_more_video.parent} changed since the checkpoint (25 videos "
                       "now, 24 then); the next epoch is planned from it as it is now"]
