"""Lightning messages that tell an avssl user nothing, silenced while a command runs.

Each entry is a message Lightning prints on every run whatever the user does; warnings and infos
that ask the user to act are left alone. Scoped to avssl's entry points (`quiet_lightning` is a
context manager), so a user's own Lightning code keeps its messages.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

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
