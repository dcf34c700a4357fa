"""Progress of a long step outside Lightning's training loop, e.g. a probe's embedding pass and fits.

As during training (`avssl.callbacks.progress`): on a terminal a tqdm bar, which disappears when
the step ends; otherwise (a log file, a batch job, CI) a log line every ``interval_s`` seconds
and one when the step ends::

    INFO avssl.progress: linear probe (pretrained): embedding clips 120/480  4.1 clips/s
    INFO avssl.progress: linear probe (pretrained): embedding clips 480/480 in 96 s
"""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType

from tqdm import tqdm

log = logging.getLogger("avssl.progress")


class TaskProgress:
    """Counts `total` units of one step and shows how far it got.

    Args:
        description: what the step does, e.g. ``linear probe (pretrained): embedding clips``.
        total: units the step takes.
        unit: what a unit is, e.g. ``clips`` (shown with the rate).
        enabled: False shows nothing (e.g. ``trainer.enable_progress_bar=false``).
        interval_s: seconds between two log lines (log lines only).
        terminal: draw a bar (True) or log lines (False); None: a bar when stdout is a terminal.

    Raises:
        ValueError: for a negative total or ``interval_s`` < 0.

    Examples:
        >>> with TaskProgress("embedding clips", total=2, unit="clips", enabled=False) as progress:
        ...     progress.update(2)
    """

    def __init__(self, description: str, total: int, unit: str, enabled: bool = True, interval_s: float = 30.0,
                 terminal: bool | None = None) -> None:
        if total < 0 or interval_s < 0:
            raise ValueError(f"total={total}, interval_s={interval_s}: need total >= 0 and interval_s >= 0")
        self.description = description
        self.total = total
        self.unit = unit
        self.interval_s = interval_s
        self.done = 0
        self._enabled = enabled
        self._started = self._since_time = time.monotonic()
        self._since_done = 0
        terminal = sys.stdout.isatty() if terminal is None else terminal
        self._bar = (tqdm(total=total, desc=description, unit=unit, file=sys.stdout, leave=False,
                          dynamic_ncols=True) if enabled and terminal else None)

    def update(self, n: int = 1) -> None:
        """Counts `n` more units done."""
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self._enabled and time.monotonic() - self._since_time >= self.interval_s:
            now = time.monotonic()
            rate = (self.done - self._since_done) / max(now - self._since_time, 1e-9)
            self._since_done, self._since_time = self.done, now
            log.info("%s %d/%d  %.1f %s/s", self.description, self.done, self.total, rate, self.unit)

    def close(self) -> None:
        """Ends the step: removes the bar, or logs how long the step took."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._enabled:
            log.info("%s %d/%d in %.0f s", self.description, self.done, self.total, time.monotonic() - self._started)
            self._enabled = False

    def __enter__(self) -> TaskProgress:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if error is not None:
            self._enabled = False  # the step did not finish: no closing line
        self.close()
