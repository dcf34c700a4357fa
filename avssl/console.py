"""What an avssl command shows on the console: its log lines, and silence for Lightning's noise.

`configure_logging` sets up the log lines of avssl's entry points. On a terminal a progress bar
(Lightning's during training, `avssl.task_progress`'s during a probe) holds the current line
without a newline; a log record written there would be glued to its end, so records go through
``tqdm.write``, which clears the bars, writes the record on a line of its own and redraws them.

`quiet_lightning` silences messages Lightning prints on every run whatever the user does;
warnings and infos that ask the user to act are left alone. It is scoped to avssl's entry points
(a context manager), so a user's own Lightning code keeps its messages.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from tqdm import tqdm

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"

# the loggers Lightning gives a handler of their own at import (pytorch_lightning/__init__.py)
_LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning_fabric")

# Lightning logs its infos through these loggers (lightning_utilities' rank_zero_info)
_LIGHTNING_INFO_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero")

# infos: an advert for Lightning's cloud loggers, a note on when the schedule's length is computed,
# and its note on a KeyboardInterrupt, which avssl raises itself to stop on Ctrl-C or SIGTERM (and says so)
_SILENCED_INFO_PREFIXES = (
    "💡 Tip:",
    "Loading `train_dataloader` to estimate number of stepping batches",
    "\nDetected KeyboardInterrupt, attempting graceful shutdown",
)

# warnings (regular expressions matched at the message start)
_SILENCED_WARNINGS = (
    # Lightning 2.6's own pytree helper uses a class torch deprecated; nothing for a user to change
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # AVPretrainModule skips a batch of fewer than 2 usable clips on purpose (the data report says
    # which files failed); Lightning would warn once per run
    r"`training_step` returned `None`",
)


class BarAwareHandler(logging.StreamHandler):
    """A stream handler whose records start on a line of their own while tqdm bars are drawn.

    Only in the process that made it: a DataLoader worker forked with a copy of the bars writes
    plainly (taking tqdm's lock there could wait for a holder that was not forked).
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream if stream is not None else sys.stderr)
        self._pid = os.getpid()

    def emit(self, record: logging.LogRecord) -> None:
        if os.getpid() != self._pid or not getattr(tqdm, "_instances", None):
            super().emit(record)
            return
        try:
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # noqa: BLE001 (logging's contract: report through handleError, never raise)
            self.handleError(record)


def configure_logging(level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Sends log records of ``level`` and above to `stream` (default: stderr) through a `BarAwareHandler`.

    As ``logging.basicConfig``, it leaves a root logger that already has handlers (a caller's
    own logging setup, pytest's) alone. Lightning gives its loggers a plain stderr handler of
    their own when imported before any logging setup; that one is swapped for a `BarAwareHandler`
    too (its messages stay bare, as Lightning prints them).
    """
    handler = BarAwareHandler(stream)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
    for name in _LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if not logger.propagate:  # Lightning's own handler
            logger.handlers = [BarAwareHandler(stream)]


class _DropPrefixes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_SILENCED_INFO_PREFIXES)


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silences the messages listed above for the duration of the ``with`` block."""
    drop = _DropPrefixes()
    loggers = [logging.getLogger(name) for name in _LIGHTNING_INFO_LOGGERS]
    for logger in loggers:
        logger.addFilter(drop)
    try:
        with warnings.catch_warnings():
            for message in _SILENCED_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)
