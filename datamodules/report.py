"""An account of the data a run used: files seen, clips used, files skipped and why.

The scan records what it finds in the main process. Clips that fail later, inside DataLoader
workers, come back in each batch as ``batch["meta"]["skipped"]``; the training loop passes them to
`DataReport.merge`. A report belongs to one process and is not shared between threads.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any


class DataReport:
    """Counts of files and clips, and every skipped file with its reason.

    Attributes:
        files_seen: video files the scan looked at.
        clips: clips the scan found usable (a clip that later fails to decode is counted here
            and also listed in `skipped`).
        skipped: ``{"path", "reason", "detail"}`` dicts, one per distinct (path, reason).

    Examples:
        >>> report = DataReport()
        >>> report.files_seen, report.clips = 3, 2
        >>> report.add_skip("a.mp4", "no_audio", "the container has no audio stream")
        >>> report.summary()
        '3 files seen, 2 clips used, 1 skipped (no_audio: 1)'
    """

    def __init__(self) -> None:
        self.files_seen = 0
        self.clips = 0
        self.skipped: list[dict[str, str]] = []
        self._keys: set[tuple[str, str]] = set()

    def add_skip(self, path: str, reason: str, detail: str) -> None:
        """Records a skipped file; a second skip with the same path and reason is ignored."""
        key = (str(path), reason)
        if key not in self._keys:
            self._keys.add(key)
            self.skipped.append({"path": str(path), "reason": reason, "detail": detail})

    def merge(self, skips: list[dict[str, str]]) -> None:
        """Records skips reported by DataLoader workers (``batch["meta"]["skipped"]``)."""
        for skip in skips:
            self.add_skip(skip["path"], skip["reason"], skip["detail"])

    def counts_by_reason(self) -> dict[str, int]:
        """Number of skips per reason, e.g. ``{"no_audio": 2, "unreadable": 1}``."""
        return dict(sorted(Counter(skip["reason"] for skip in self.skipped).items()))

    def summary(self) -> str:
        """One line for the log: files seen, clips used, skips grouped by reason."""
        line = f"{self.files_seen} files seen, {self.clips} clips used, {len(self.skipped)} skipped"
        if self.skipped:
            line += " (" + ", ".join(f"{r}: {n}" for r, n in self.counts_by_reason().items()) + ")"
        return line

    def to_dict(self) -> dict[str, Any]:
        """The content of data_report.json (format in docs/data.md)."""
        return {
            "files_seen": self.files_seen,
            "clips": self.clips,
            "skipped_count": len(self.skipped),
            "counts_by_reason": self.counts_by_reason(),
            "skipped": list(self.skipped),
        }

    def write_json(self, path: str | Path) -> None:
        """Writes `to_dict` as JSON atomically: a reader never sees a half-written file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(tmp, path)
