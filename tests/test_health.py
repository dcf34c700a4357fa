"""Training-health measures and the chance-value warning."""

import logging
from types import SimpleNamespace

import pytest
import torch

from avssl.callbacks import ChanceMonitor
from avssl.objectives.health import embedding_std, retrieval_top1


@pytest.mark.parametrize("batch,dim", [(4, 8), (32, 128)])
def test_retrieval_is_one_for_identical_embeddings(batch, dim):
    z = torch.randn(batch, dim)
    assert retrieval_top1(z, z).item() == 1.0
    assert retrieval_top1(z, 3.0 * z).item() == 1.0  # cosine: scale does not matter


def test_retrieval_of_shuffled_embeddings_is_about_chance():
    torch.manual_seed(0)
    batch = 16
    trials = [retrieval_top1(torch.randn(batch, 32), torch.randn(batch, 32)).item() for _ in range(400)]
    assert sum(trials) / len(trials) == pytest.approx(1 / batch, abs=0.015)
    z = torch.randn(batch, 32)
    assert retrieval_top1(z, z.roll(1, dims=0)).item() == 0.0


def test_retrieval_rejects_unpaired_shapes():
    with pytest.raises(ValueError, match=r"query \(4, 8\) and keys \(3, 8\)"):
        retrieval_top1(torch.randn(4, 8), torch.randn(3, 8))


def test_embedding_std_is_zero_when_collapsed_and_about_one_over_sqrt_d_when_spread():
    assert embedding_std(torch.ones(16, 64) * 5.0).item() == 0.0
    torch.manual_seed(0)
    assert embedding_std(torch.randn(4096, 64)).item() == pytest.approx(64**-0.5, rel=0.05)


def _step(monitor, step, value, chance=4.0):
    trainer = SimpleNamespace(global_step=step, is_global_zero=True)
    module = SimpleNamespace(objectives={"av_infonce": SimpleNamespace(stuck_hint="try a lower optim.lr")})
    monitor.on_train_batch_end(trainer, module, {"loss": None, "chance": {"av_infonce/infonce": (value, chance)}}, None, step)


def test_chance_monitor_warns_once_naming_the_objective_and_what_to_try(caplog):
    monitor = ChanceMonitor(patience_steps=30, tolerance=0.02, window=10)
    with caplog.at_level(logging.WARNING, logger="avssl.callbacks.health"):
        for step in range(100):
            _step(monitor, step, 3.99)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings
    assert "objectives.av_infonce" in warnings[0] and "after 30 steps" in warnings[0]
    assert "try a lower optim.lr" in warnings[0]


def test_chance_monitor_is_quiet_when_the_loss_leaves_chance_or_before_patience(caplog):
    learning, early = ChanceMonitor(patience_steps=30, window=10), ChanceMonitor(patience_steps=500, window=10)
    with caplog.at_level(logging.WARNING, logger="avssl.callbacks.health"):
        for step in range(100):
            _step(learning, step, 4.0 - step * 0.05)
            _step(early, step, 4.0)
    assert not caplog.records


def test_chance_monitor_rejects_bad_settings():
    with pytest.raises(ValueError, match="tolerance=1.5"):
        ChanceMonitor(tolerance=1.5)
