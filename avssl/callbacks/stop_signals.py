"""Ctrl-C and SIGTERM: a run stops from a well-defined state, says so once, and exits non-zero.

SIGTERM is what ``kill``, SLURM (time limit, preemption, ``scancel``), ``docker stop``, Kubernetes
and spot-instance reclaims send. It is handled exactly as Ctrl-C (SIGINT):

- During training (``on_train_start`` to ``on_train_end``) the first signal only asks the run to
  stop: `LastCheckpoint` saves ``last.ckpt`` at the end of the current step and stops training
  there (a decoder call, a logger's write or a save in progress is never cut). A second signal
  stops at once.
- Before training (data setup, the random-init probe) and after it (the final probe, the export)
  the signal stops the run at once: there is no step to finish, and ``last.ckpt`` is already saved.

Either way the run raises ``KeyboardInterrupt`` (Lightning's graceful-shutdown path), and
`received` says which signal it was (the CLI exits with 128 + its number: 130, 143).

Lightning installs its own SIGTERM handler when ``fit`` starts (it logs "Received SIGTERM" and ends
the run with exit code 0 at the next loop boundary, without a checkpoint): ``on_train_start`` puts
this one back, so there is one mechanism. Processes forked from the main one (DataLoader workers)
inherit the Python handler; there it does nothing, and the main process stops the run.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytorch_lightning as pl

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


def signal_name(signum: int) -> str:
    """How messages name a stop signal: ``Ctrl-C`` for SIGINT, else its name (``SIGTERM``)."""
    return _NAMES.get(signal.Signals(signum), signal.Signals(signum).name)


class StopSignals(pl.Callback):
    """Handles `STOP_SIGNALS` inside `installed` as the module docstring says.

    List it first among the Trainer's callbacks: its ``on_train_end`` must run before the final
    probe's, so that a signal received after the last step stops the run before the probe starts.

    Attributes:
        received: the first stop signal received (None: none yet).
    """

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._deferring = False
        self._announces = True
        self._pid = os.getpid()
        self._previous: dict[int, Any] = {}

    @contextmanager
    def installed(self) -> Iterator[StopSignals]:
        """Handles the signals inside the ``with`` block (only possible from the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        self._pid = os.getpid()
        self._previous = {signum: signal.signal(signum, self._handle) for signum in STOP_SIGNALS}
        try:
            yield self
        finally:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
            self._previous = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._previous:  # replaces the SIGTERM handler Lightning installed when fit started
            for signum in STOP_SIGNALS:
                signal.signal(signum, self._handle)
        self._deferring = True
        self._announces = trainer.is_global_zero  # under DDP every rank gets the signal; rank 0 says so

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._deferring = False
        if self.received is not None:  # asked after the last step (during an epoch's end): no probe
            raise KeyboardInterrupt

    def _handle(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid:
            return  # a forked DataLoader worker: the main process stops the run
        first = self.received is None
        if first:
            self.received = signal.Signals(signum)
        if first and self._deferring:
            if self._announces:
                name = signal_name(signum)
                # os.write: a signal handler must not take the locks of logging or buffered streams
                os.write(2, f"\n{name}: saving the checkpoint after this step, then stopping "
                            f"({name} again: stop at once)\n".encode())
            return
        self._deferring = False
        raise KeyboardInterrupt
