"""One run per directory: a run claims its directory for as long as it runs, a directory that cannot
be made is one line, and a run that fails before training leaves no empty folder behind."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_pretrain_e2e import TINY

from avssl.pretrain import main as pretrain_main
from avssl.run_dir import RunDirectory, claim_run_directory
from datamodules.demo import render_demo_clips


@pytest.fixture(scope="module")
def common(tmp_path_factory):
    videos = render_demo_clips(tmp_path_factory.mktemp("demo"), num_unlabeled=24, clips_per_class=1, seed=3, size=32,
                               seconds=1.0).unlabeled
    return [*TINY, f"data.root={videos}", "probe.enabled=false", "health.knn_every_n_epochs=0",
            "trainer.enable_progress_bar=false"]


def test_a_second_run_on_a_directory_in_use_is_refused(common, tmp_path, capsys):
    run_dir = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "avssl.pretrain", *common, f"run.dir={run_dir}",
                              "trainer.max_epochs=1000"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "config.yaml").is_file() and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.1)
        assert first.poll() is None, first.communicate()[1][-2000:]
        assert pretrain_main([*common, f"run.dir={run_dir}", "trainer.max_steps=1"]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"avssl.pretrain: error: run.dir={run_dir} is in use by another run (pid {first.pid}); "
                       "wait for it to end, or choose another run.dir.")
    finally:
        first.kill()
        first.wait()
    with claim_run_directory(RunDirectory(run_dir)) as claimed:  # a killed run holds nothing
        assert claimed.path == run_dir


def test_fresh_run_directories_of_the_same_second_are_two(tmp_path):
    fresh = RunDirectory(tmp_path / "runs" / "default-20250101-120000", fresh=True)
    with claim_run_directory(fresh) as first, claim_run_directory(fresh) as second:
        assert first.path == fresh.path and second.path == fresh.path.with_name(f"{fresh.path.name}-2")


@pytest.mark.parametrize("where", ["/proc/avssl-run", "a_file/run", "a_file"])
def test_a_run_dir_that_cannot_be_made_is_one_line(common, tmp_path, capsys, where):
    (tmp_path / "a_file").write_text("not a folder\n")
    run_dir = where if where.startswith("/") else str(tmp_path / where)
    if where.startswith("/proc") and not Path("/proc").is_dir():
        pytest.skip("no /proc here")
    assert pretrain_main([*common, f"run.dir={run_dir}", "trainer.max_steps=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"avssl.pretrain: error: run.dir={run_dir}: "), err


def test_a_run_that_fails_before_training_leaves_no_folder(common, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert pretrain_main([*common, "data.root=/nonexistent", "trainer.max_steps=1"]) == 2
    assert "data.root=/nonexistent: does not exist" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_batch_fraction_that_leaves_no_batch_of_this_data_is_one_line(common, tmp_path, capsys):
    # 24 clips in batches of 8: 3 batches, of which 0.1 is none. Only the data tells, so it is refused
    # when training starts, not when the config is loaded.
    assert pretrain_main([*common, f"run.dir={tmp_path / 'run'}", "trainer.limit_train_batches=0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("avssl.pretrain: error: trainer: Lightning refused these settings:") and "limit_train_batches" in err
    assert not (tmp_path / "run").exists()
