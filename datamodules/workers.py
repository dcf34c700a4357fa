"""DataLoader worker processes ignore Ctrl-C and SIGTERM: the main process stops the run.

Ctrl-C reaches every process of the terminal's foreground group, and SLURM, systemd and
``kill -- -PGID`` signal every process of a job, workers included. Left to PyTorch, a worker runs
the handler it inherited from the main process (which would announce the stop once per worker) or
dies of SIGTERM, and the main process then fails at whatever line it is on with "DataLoader worker
... is killed by signal". Ignoring both, workers keep serving until the main process has saved its
checkpoint (`avssl.callbacks.StopSignals`) and shuts them down as at every epoch's end.
"""

from __future__ import annotations

import signal


def ignore_stop_signals(worker_id: int) -> None:
    """``worker_init_fn`` of the DataLoaders: the worker ignores SIGINT and SIGTERM (see the module docstring)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
