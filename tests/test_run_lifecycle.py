"""A run's life: checkpoints that survive kills, one directory per run, resume that means what it
says, Ctrl-C and SIGTERM that save, divergence that stops and keeps the last finite state, and one
clear line for every bad checkpoint."""

import os
import shlex
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
from avssl.objectives import OBJECTIVES, Objective, ObjectiveOutput, register_objective
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


def _start(args: list[str]) -> subprocess.Popen:
    """``python -m avssl.pretrain`` in its own process group, as a terminal's foreground job or a SLURM job step."""
    return subprocess.Popen([sys.executable, "-m", "avssl.pretrain", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for(ready, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not ready() and proc.poll() is None:
        assert time.monotonic() < deadline, "the run never got there"
        time.sleep(0.02)
    assert proc.poll() is None, proc.communicate()[1][-3000:]


def _noise(err: str) -> list[str]:
    """Messages a stopped run must not print: tracebacks and Lightning's own SIGTERM and interrupt notes."""
    return [m for m in ("Traceback", "Received SIGTERM", "Detected KeyboardInterrupt", "killed by signal") if m in err]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl_c", "sigterm"])
def test_a_stop_signal_saves_at_the_end_of_the_step_exits_128_plus_it_and_resumes(common, tmp_path, signum):
    """To the whole process group (a terminal's Ctrl-C, SLURM), DataLoader workers included, while
    checkpoints are being written every step; SIGTERM's run uses run.resume=auto, as a requeued job does."""
    run_dir = tmp_path / "run"
    resume = ["run.resume=auto"] if signum == signal.SIGTERM else []
    proc = _start([*common, f"run.dir={run_dir}", "trainer.max_epochs=100", "run.checkpoint_every_n_steps=1",
                   "data.num_workers=2", *resume])
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    _wait_for(checkpoint.is_file, proc)
    writing = time.monotonic() + 5
    _wait_for(lambda: list(checkpoint.parent.glob(".last.ckpt.partial-*")) or time.monotonic() > writing, proc)
    os.killpg(proc.pid, signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err[-3000:]
    name = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
    assert err.count(f"{name}: saving the checkpoint after this step, then stopping") == 1, err
    assert not _noise(err), err[-3000:]
    step = _step(checkpoint)
    assert f"interrupted ({name}); {checkpoint} holds step {step}. Resume with:" in err
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["last.ckpt"]
    assert not (run_dir / "export").exists()
    command = shlex.split(err.split("Resume with:\n")[1].strip().splitlines()[0])
    assert command[:3] == ["python", "-m", "avssl.pretrain"]
    if signum == signal.SIGTERM:  # the same command continues the run, for two more steps
        assert command[-1] == "run.resume=auto"
        done = subprocess.run([sys.executable, *command[1:], f"trainer.max_steps={step + 2}"],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"(step {step + 2})" in done.stdout and (run_dir / "export" / "model.safetensors").is_file()
    else:
        assert command[-1] == f"run.resume={checkpoint}"


# SIGTERM delivered to the run by its own checkpoint writer, after the new checkpoint is on disk
# as a partial file and before it replaces last.ckpt: the moment a kill must not damage.
_SIGTERM_DURING_THE_SECOND_SAVE = """
import os, signal, sys
import torch
from avssl.pretrain import main

write = torch.save
partial_writes = []

def write_then_sigterm(obj, path, *args, **kwargs):
    write(obj, path, *args, **kwargs)
    if ".partial-" in str(path):
        partial_writes.append(path)
        if len(partial_writes) == 2:
            os.kill(os.getpid(), signal.SIGTERM)

torch.save = write_then_sigterm
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_during_a_checkpoint_write_finishes_the_write_then_stops_at_the_next_step(common, tmp_path):
    run_dir = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", _SIGTERM_DURING_THE_SECOND_SAVE, *common, f"run.dir={run_dir}",
                           "trainer.max_epochs=100", "run.checkpoint_every_n_steps=1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 143, done.stderr[-3000:]
    assert done.stderr.count("SIGTERM: saving the checkpoint after this step, then stopping") == 1, done.stderr
    assert not _noise(done.stderr), done.stderr[-3000:]
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["last.ckpt"]  # no partial file left behind
    assert _step(checkpoint) == 3  # saved at step 2 while the signal came, then at the end of step 3
    assert f"{checkpoint} holds step 3. Resume with:" in done.stderr


def test_sigterm_before_training_is_one_line_and_exit_143(common, demo, tmp_path):
    """During data setup or the random-init probe (``docker stop``: the main process only)."""
    run_dir = tmp_path / "run"
    proc = _start([*common, f"run.dir={run_dir}", "probe.enabled=true", f"probe.data={demo.labeled}"])
    _wait_for((run_dir / "config.yaml").is_file, proc)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert err.strip().splitlines()[-1] == ("avssl.pretrain: interrupted (SIGTERM) before the first training step; "
                                            "nothing was saved.")
    assert not _noise(err) and "saving the checkpoint" not in err, err[-3000:]
    assert not (run_dir / "checkpoints" / "last.ckpt").exists()


def test_ctrl_c_during_the_final_probe_stops_it_and_keeps_the_checkpoint(common, demo, tmp_path):
    run_dir = tmp_path / "run"
    proc = _start([*common, f"run.dir={run_dir}", "trainer.max_steps=2", "probe.enabled=true",
                   f"probe.data={demo.labeled}", "probe.random_init_baseline=false", "data.num_workers=1"])
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    _wait_for(checkpoint.is_file, proc)  # saved at the last step; the probe comes next
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert f"interrupted (Ctrl-C); {checkpoint} holds step 2. Resume with:" in err
    assert err.count("saving the checkpoint after this step") <= 1 and not _noise(err), err[-3000:]
    assert _step(checkpoint) == 2
    assert not (run_dir / "probe.json").exists() and not (run_dir / "export").exists()


class _Diverging(Objective):
    """A loss term that turns NaN at `at_step` (``loss``), or stays finite with a NaN gradient (``gradient``)."""

    requires = frozenset({"audio_embedding"})

    def __init__(self, at_step: int = 3, how: str = "loss", pass_name: str = "masked") -> None:
        super().__init__()
        self.at_step, self.how, self.pass_names = at_step, how, (pass_name,)
        self.calls = 0

    def forward(self, passes, batch):
        self.calls += 1
        value = passes[self.pass_names[0]]["audio_embedding"].mean()
        if self.calls >= self.at_step:
            value = value * float("nan") if self.how == "loss" else torch.sqrt(value - value)  # d sqrt(0) = inf * 0
        return ObjectiveOutput(losses={"term": value})


@pytest.fixture
def diverging():
    register_objective("test_diverging")(_Diverging)
    yield "test_diverging"
    del OBJECTIVES["test_diverging"]


@pytest.mark.parametrize("how, named", [("loss", "the loss term test_diverging/term is nan"),
                                        ("gradient", "the parameter backbone.")])
def test_a_diverging_run_stops_at_once_and_saves_and_exports_nothing_non_finite(common, tmp_path, capsys, diverging,
                                                                                how, named):
    run_dir = tmp_path / "run"
    args = [*common, f"run.dir={run_dir}", "run.checkpoint_every_n_steps=1", f"objectives.{diverging}.how={how}"]
    assert pretrain_main(args) == 3
    err = capsys.readouterr().err.strip()
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"training diverged at step 3: {named}" in err
    assert f"{checkpoint} keeps step 2, the last finite state" in err
    assert "optim.lr" in err and "trainer.gradient_clip_val=1.0" in err
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert state["global_step"] == 2 and all(t.isfinite().all() for t in state["state_dict"].values())
    assert not (run_dir / "export").exists()


def test_resume_auto_needs_run_dir(common, capsys):
    assert pretrain_main([*common, "run.resume=auto"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "run.resume=auto" in err and "run.dir" in err


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


def test_sigterm_to_every_rank_of_a_ddp_run_saves_once_and_exits_143(common, tmp_path):
    """As SLURM does at a time limit: SIGTERM to every process of the job, both ranks and their workers."""
    run_dir = tmp_path / "run"
    proc = _start([*common, f"run.dir={run_dir}", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp",
                   "trainer.max_epochs=100", "run.checkpoint_every_n_steps=1"])
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    _wait_for(checkpoint.is_file, proc, timeout=300)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 143, err[-3000:]
    assert not _noise(err), err[-3000:]
    assert err.count("SIGTERM: saving the checkpoint after this step, then stopping") == 1, err[-3000:]
    step = _step(checkpoint)
    assert err.count(f"interrupted (SIGTERM); {checkpoint} holds step {step}. Resume with:") == 1, err[-3000:]
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["last.ckpt"]
