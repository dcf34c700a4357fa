"""Training-health measures and the chance-value warning."""

import logging
import re
from types import SimpleNamespace

import pytest
import torch

from avssl.callbacks import ChanceMonitor
from avssl.config import OptimConfig
from avssl.objectives.contrastive import AVInfoNCE
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


def _module(temperature=0.1):
    objective = AVInfoNCE(temperature=temperature, gather_distributed=False, projection_dim=0)
    return SimpleNamespace(objectives={"av_infonce": objective})


def _step(monitor, step, value, chance=4.0, module=None):
    trainer = SimpleNamespace(global_step=step, is_global_zero=True)
    outputs = {"loss": None, "chance": {"av_infonce/infonce": (value, chance)}}
    monitor.on_train_batch_end(trainer, module or _module(), outputs, None, step)


def _warnings(monitor, value, chance=4.0, steps=100, module=None, caplog=None):
    with caplog.at_level(logging.WARNING, logger="avssl.callbacks.health"):
        for step in range(steps):
            _step(monitor, step, value, chance, module)
    return [r.getMessage() for r in caplog.records]


def test_chance_monitor_warns_once_naming_the_objective_and_what_to_check(caplog):
    warnings = _warnings(ChanceMonitor(patience_steps=30, tolerance=0.02, window=10), 3.99, caplog=caplog)
    assert len(warnings) == 1, warnings
    assert "objectives.av_infonce" in warnings[0] and "after 30 steps" in warnings[0]
    assert AVInfoNCE.stuck_hint in warnings[0]
    assert "3.990, only 0.2% below its chance value 4.000" in warnings[0]


def test_a_loss_above_chance_is_called_above_chance_not_at_it(caplog):
    # cav_mae_demo after 200 steps: the masked-pass InfoNCE at 5.33 against its chance value ln(57) = 4.04
    warnings = _warnings(ChanceMonitor(patience_steps=30, window=10), 5.33, chance=4.04, caplog=caplog)
    assert len(warnings) == 1, warnings
    assert "is 5.330, 31.9% above its chance value 4.040 after 30 steps" in warnings[0]
    assert "at its chance value" not in warnings[0] and "still at" not in warnings[0]


@pytest.mark.parametrize("temperature,lr,warmup", [(0.05, 5e-5, 0.0), (0.1, 1e-3, 1.0), (0.2, 1e-4, 2.0), (0.5, 3e-4, 0.5)])
def test_the_chance_warning_suggests_values_that_differ_from_the_run(temperature, lr, warmup, caplog):
    monitor = ChanceMonitor(patience_steps=30, window=10, optim=OptimConfig(lr=lr, warmup_epochs=warmup))
    warnings = _warnings(monitor, 5.33, chance=4.04, module=_module(temperature), caplog=caplog)
    suggested = dict(
        (key, (float(new), float(current)))
        for key, new, current in re.findall(r"(\S+)=(\S+) \(this run: ([^)]+)\)", warnings[0])
    )
    assert suggested["objectives.av_infonce.temperature"][1] == temperature
    assert suggested["optim.lr"][1] == lr and suggested["optim.warmup_epochs"][1] == warmup
    for key, (new, current) in suggested.items():
        assert new != current, (key, warnings[0])
    assert suggested["optim.lr"][0] < lr and suggested["optim.warmup_epochs"][0] > warmup


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
