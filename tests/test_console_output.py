"""What a user reads on the console: a smoke run that takes seconds, a progress bar on a terminal
that counts epochs as the log lines do, log lines that start on their own line, and the progress
of steps outside the training loop."""

import fcntl
import io
import logging
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest
from test_pretrain_e2e import TINY
from tqdm import tqdm

from avssl.console import BarAwareHandler
from avssl.task_progress import TaskProgress
from datamodules.demo import render_demo_clips


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return render_demo_clips(tmp_path_factory.mktemp("demo"), num_unlabeled=24, clips_per_class=4, seed=3, size=32, seconds=1.0)


def _run_on_a_terminal(args: list[str], cwd, timeout: float) -> tuple[int, str]:
    """Runs `args` with stdout and stderr on one pseudo-terminal (120 columns); its exit code and all it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, cwd=cwd)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 1.0)[0]:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the process closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        else:
            proc.kill()
        return proc.wait(timeout=30), b"".join(chunks).decode(errors="replace")
    finally:
        os.close(master)


def test_a_smoke_run_on_a_terminal_skips_the_probes_counts_epochs_from_1_and_logs_on_own_lines(demo, tmp_path):
    run_dir = tmp_path / "smoke"
    args = [*TINY, f"data.root={demo.unlabeled}", f"probe.data={demo.labeled}", f"run.dir={run_dir}",
            "trainer.fast_dev_run=true"]
    code, output = _run_on_a_terminal([sys.executable, "-m", "avssl.pretrain", *args], tmp_path, timeout=300)
    assert code == 0, output[-3000:]
    # the probes and the kNN monitor did not run, and the run says so
    assert not (run_dir / "probe.json").exists()
    assert "linear probe (" not in output and "kNN top-1" not in output
    assert "smoke run (trainer.fast_dev_run=True): the linear probes and the kNN monitor are skipped" in output
    assert "linear probe    none (smoke run" in output
    # the bar counts epochs as the log lines do
    assert "epoch 1/1" in output and "Epoch 0" not in output
    # every log record starts a line, none is glued to the end of the bar
    records = [m.start() for m in re.finditer(r"(INFO|WARNING|ERROR) [\w.]+: ", output)]
    assert records, output[-3000:]
    glued = [output[max(0, i - 60):i + 40] for i in records if i > 0 and output[i - 1] not in "\r\n"]
    assert not glued, glued


def test_a_log_record_written_while_a_bar_is_drawn_starts_on_its_own_line():
    stream = io.StringIO()
    handler = BarAwareHandler(stream)
    handler.setFormatter(logging.Formatter("INFO %(name)s: %(message)s"))
    logger = logging.getLogger("test_console_output.bar")
    logger.addHandler(handler)
    logger.propagate = False
    bar = tqdm(total=10, desc="epoch 1/1", file=stream)
    try:
        bar.update(3)
        logger.warning("data after epoch 1/1")
    finally:
        bar.close()
        logger.removeHandler(handler)
    written = stream.getvalue()
    at = written.index("INFO test_console_output.bar: data after epoch 1/1")
    assert written[at - 1] in "\r\n", repr(written)
    assert "epoch 1/1" in written[at + 10:], repr(written)  # the bar is drawn again below the record


def test_task_progress_logs_lines_when_not_a_terminal(caplog):
    with caplog.at_level(logging.INFO, logger="avssl.progress"):
        with TaskProgress("linear probe (pretrained): embedding clips", total=3, unit="clips", interval_s=0,
                          terminal=False) as progress:
            for _ in range(3):
                progress.update(1)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("linear probe (pretrained): embedding clips 1/3  ") and lines[0].endswith("clips/s")
    assert re.fullmatch(r"linear probe \(pretrained\): embedding clips 3/3 in \d+ s", lines[-1]), lines
    assert len(lines) == 4


def test_task_progress_is_silent_when_disabled_or_failed(caplog, capsys):
    with caplog.at_level(logging.INFO, logger="avssl.progress"):
        with TaskProgress("embedding", total=3, unit="clips", enabled=False, interval_s=0) as progress:
            progress.update(3)
        with pytest.raises(RuntimeError), TaskProgress("fitting", total=3, unit="fits", terminal=False) as progress:
            raise RuntimeError("a fit failed")
    assert not caplog.records  # no closing line claims a failed step finished
    assert not capsys.readouterr().out
