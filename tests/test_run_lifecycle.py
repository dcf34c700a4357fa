"""A run's life: checkpoints that survive kills, one directory per run, resume that means what it
says, Ctrl-C that saves, and one clear line for every bad checkpoint."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_pretrain_e2e import TINY

import avssl
from avssl.atomic_files import atomic_write, remove_partial_files
from avssl.export import export_encoder
from avssl.pretrain import main as pretrain_main
from datamodules.demo import render_demo_clips


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return render_demo_clips(tmp_path_factory.mktemp("demo"), num_unlabeled=24, clips_per_class=4, seed=3, size=32, seconds=1.0)


@pytest.fixture(scope="module")
def common(demo):
    """24 clips in batches of 8: 3 steps per epoch."""
    return [*TINY, f"data.root={demo.unlabeled}", "probe.enabled=false", "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def stopped(common, tmp_path_factory):
    """A run stopped by max_steps=5, inside its second epoch, with a save every 4 steps."""
    run_dir = tmp_path_factory.mktemp("runs") / "stopped"
    assert pretrain_main([*common, f"run.dir={run_dir}", "trainer.max_steps=5", "run.checkpoint_every_n_steps=4"]) == 0
    return run_dir


def _step(checkpoint: Path) -> int:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"]


def test_atomic_write_survives_a_kill_mid_write(tmp_path):
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"previous")
    writer = (
        "import sys, time\n"
        "from avssl.atomic_files import atomic_write\n"
        "with atomic_write(sys.argv[1]) as partial:\n"
        "    with open(partial, 'wb') as f:\n"
        "        while True:\n"
        "            f.write(b'x' * 65536); f.flush(); time.sleep(0.01)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", writer, str(target)])
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".last.ckpt.partial-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    proc.kill()
    proc.wait()
    assert target.read_bytes() == b"previous"
    leftovers = remove_partial_files(tmp_path)
    assert len(leftovers) == 1 and not leftovers[0].exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_atomic_write_keeps_the_previous_file_when_writing_fails(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError), atomic_write(target) as partial:
        partial.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_exports_get_the_users_file_mode(tmp_path, stopped):
    old = os.umask(0o022)
    try:
        model = avssl.load_backbone(stopped)
        out = export_encoder(model.encoder, model.preprocessing, tmp_path / "export")
    finally:
        os.umask(old)
    for name in ("model.safetensors", "config.yaml"):
        assert (out / name).stat().st_mode & 0o777 == 0o644, name
    assert (stopped / "checkpoints" / "last.ckpt").stat().st_mode & 0o044  # group/others may read it too


def test_the_checkpoint_holds_the_last_step_also_with_checkpoint_every_n_steps(stopped, capsys):
    checkpoint = stopped / "checkpoints" / "last.ckpt"
    assert _step(checkpoint) == 5  # saved every 4 steps, and at the last step
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["last.ckpt"]
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    exported = avssl.load_backbone(stopped).encoder.state_dict()
    assert all(torch.equal(exported[k], state[f"backbone.{k}"]) for k in exported)


def test_reusing_a_run_directory_without_resume_is_refused(stopped, common, capsys):
    before = sorted(p.name for p in (stopped / "checkpoints").iterdir())
    assert pretrain_main([*common, f"run.dir={stopped}", "trainer.max_steps=1"]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and f"run.resume={stopped / 'checkpoints' / 'last.ckpt'}" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in (stopped / "checkpoints").iterdir()) == before


def test_resume_without_run_dir_continues_in_the_runs_directory(stopped, common, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "copy"
    run_dir.mkdir()
    for name in ("config.yaml", "checkpoints/last.ckpt"):
        (run_dir / name).parent.mkdir(exist_ok=True)
        (run_dir / name).write_bytes((stopped / name).read_bytes())
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert pretrain_main([*common, f"run.resume={run_dir / 'checkpoints' / 'last.ckpt'}", "trainer.max_epochs=2"]) == 0
    out = capsys.readouterr().out
    assert f"run directory   {run_dir.resolve()}" in out and "(step 6)" in out  # the rest of epoch 1
    assert not (tmp_path / "runs").exists()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))


def test_resuming_inside_an_epoch_with_another_batch_size_is_refused(stopped, common, tmp_path, capsys):
    args = [*common, f"run.dir={tmp_path / 'run'}", f"run.resume={stopped / 'checkpoints' / 'last.ckpt'}", "data.batch_size=4"]
    assert pretrain_main(args) == 2
    err = capsys.readouterr().err
    assert "data.batch_size (checkpoint: 8, now: 4)" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("damage", ["truncated", "empty", "text", "other_model"])
def test_a_bad_checkpoint_is_one_line(stopped, common, tmp_path, capsys, damage):
    good = (stopped / "checkpoints" / "last.ckpt").read_bytes()
    bad = tmp_path / f"{damage}.ckpt"
    bad.write_bytes({"truncated": good[: len(good) // 2], "empty": b"", "text": b"not a checkpoint\n", "other_model": good}[damage])
    extra = ["backbone.embed_dim=64"] if damage == "other_model" else []
    assert pretrain_main([*common, f"run.dir={tmp_path / 'run'}", f"run.resume={bad}", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and "run.resume" in err, err
    assert not (tmp_path / "run").exists()


def test_ctrl_c_saves_the_checkpoint_and_prints_the_resume_command(common, tmp_path):
    run_dir = tmp_path / "run"
    args = [*common, f"run.dir={run_dir}", "trainer.max_epochs=100", "run.checkpoint_every_n_steps=1"]
    proc = subprocess.Popen([sys.executable, "-m", "avssl.pretrain", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not checkpoint.is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    step = _step(checkpoint)
    assert f"{checkpoint} holds step {step}" in err
    assert f"run.resume={checkpoint}" in err and "Traceback" not in err


def test_ddp_makes_one_run_directory_and_one_summary(common, tmp_path):
    ddp = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp", "trainer.max_steps=2"]
    done = subprocess.run([sys.executable, "-m", "avssl.pretrain", *common, *ddp], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1
    assert done.stdout.count("run directory") == 1
    assert (runs[0] / "checkpoints" / "last.ckpt").is_file() and (runs[0] / "export" / "model.safetensors").is_file()


def test_a_trainer_setting_lightning_refuses_is_one_line_and_leaves_no_run_directory(common, tmp_path, capsys):
    assert pretrain_main([*common, f"run.dir={tmp_path / 'run'}", "trainer.strategy=bogus"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "strategy" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
