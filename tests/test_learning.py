"""The default recipe learns: its contrastive term falls clearly below its chance value.

Tiny demo clips (each class's sound is synchronised with its object's motion, so audio and video
share a signal) are pretrained on for 40 steps through the same entry point as the CLI; the
logged InfoNCE must end at least 1.0 below ln(2B - 1), the value of an objective that learns
nothing (the default of avssl 0.1 sat there), and the chance monitor must stay quiet.
"""

import logging
import statistics

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from avssl.config import load_config
from avssl.pretrain import run
from datamodules.demo import render_demo_clips


def logged(tensorboard_dir, tag):
    events = EventAccumulator(str(tensorboard_dir))
    events.Reload()
    return [e.value for e in events.Scalars(tag)]


def test_default_objective_leaves_its_chance_value_within_40_steps(tmp_path, caplog):
    clips = render_demo_clips(tmp_path / "demo", num_unlabeled=64, clips_per_class=0, seed=1, size=32)
    config = load_config([
        f"data.root={clips.unlabeled}", f"run.dir={tmp_path / 'run'}", "probe.enabled=false",
        "data.batch_size=16", "data.preprocessing.frame_size=32", "trainer.max_steps=40",
        "trainer.log_every_n_steps=2", "trainer.enable_progress_bar=false", "health.chance_patience_steps=30",
    ])
    with caplog.at_level(logging.WARNING, logger="avssl.callbacks.health"):
        result = run(config)
    losses = logged(result.run_dir / "tensorboard", "train/av_infonce/infonce")
    chance = logged(result.run_dir / "tensorboard", "health/av_infonce/infonce_chance")
    retrieval = logged(result.run_dir / "tensorboard", "health/av_infonce/retrieval_a2v")
    final, chance_value = statistics.mean(losses[-5:]), statistics.mean(chance[-5:])
    print(f"infonce {losses[0]:.3f} -> {final:.3f}, chance {chance_value:.3f}, retrieval a2v {retrieval[-1]:.2f}")
    assert final < chance_value - 1.0, (losses, chance_value)
    assert statistics.mean(retrieval[-5:]) > 0.5  # chance: 1/16
    assert not [r for r in caplog.records if "chance value" in r.getMessage()]
