"""An account of the data a run used: files seen, clips used, files skipped and why.

Streamed data (pretraining) is counted batch by batch: each batch's ``meta`` names the videos
first read in it, its clips and its failures, and the training loop passes it to
`DataReport.add_batch`. Scanned data (the labelled sets) is counted by the scan. A report belongs
to one process; under DDP the ranks' reports are combined with `DataReport.absorb`.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any


class DataReport:
    """Counts of files and clips, and every skipped file with its reason.

    Args:
        location: where this report can be read, as warnings about skipped files name it, e.g.
            ``"runs/x/data_report.json"`` or ``"probe.json ('skipped')"``.

    Attributes:
        files_seen: distinct video files read (streamed), or looked at by the scan.
        clips: clips produced (streamed: over all epochs), or found usable by the scan (a
            scanned clip that later fails to decode is counted here and also listed in `skipped`).
        skipped: ``{"path", "reason", "detail"}`` dicts, one per distinct (path, reason).
        location: as given.
        sections: reports of other data written inside this one under their name, e.g. the
            probe's labeled data as ``"probe"`` in a run's data_report.json.

    Examples:
        >>> report = DataReport()
        >>> report.files_seen, report.clips = 3, 2
        >>> report.add_skip("a.mp4", "no_audio", "the container has no audio stream")
        >>> report.summary()
        '3 files seen, 2 clips used, 1 skipped (no_audio: 1)'
    """

    def __init__(self, location: str = "data_report.json") -> None:
        self.location = location
        self.sections: dict[str, DataReport] = {}
        self._clear()

    def _clear(self) -> None:
        self.files_seen = 0
        self.clips = 0
        self.skipped: list[dict[str, str]] = []
        self._keys: set[tuple[str, str]] = set()
        self._videos: set[str] = set()

    def add_batch(self, meta: dict[str, Any]) -> None:
        """Counts a streamed batch: the videos first read in it, its clips and its failures."""
        new = set(meta["videos_seen"]) - self._videos
        self._videos |= new
        self.files_seen += len(new)
        self.clips += len(meta["path"])
        self.merge(meta["skipped"])

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

    def to_state(self) -> dict[str, Any]:
        """Everything needed to continue counting after a resume, or to combine DDP ranks."""
        return {"videos": sorted(self._videos), "clips": self.clips, "skipped": list(self.skipped)}

    def load_state(self, state: dict[str, Any]) -> None:
        """Replaces this report's counts with a saved `to_state`."""
        self._clear()
        self.absorb(state)

    def absorb(self, state: dict[str, Any]) -> None:
        """Adds another streamed report's `to_state` (another DDP rank's) to this one."""
        new = set(state["videos"]) - self._videos
        self._videos |= new
        self.files_seen += len(new)
        self.clips += state["clips"]
        self.merge(state["skipped"])

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
        """The content of data_report.json (format in docs/data.md), sections included."""
        return {
            "files_seen": self.files_seen,
            "clips": self.clips,
            "skipped_count": len(self.skipped),
            "counts_by_reason": self.counts_by_reason(),
            "skipped": list(self.skipped),
            **{name: section.to_dict() for name, section in self.sections.items()},
        }

    def write_json(self, path: str | Path) -> None:
        """Writes `to_dict` as JSON atomically: a reader never sees a half-written file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        # ensure_ascii: a name that is not valid UTF-8 is held as `os.fsdecode` gives it (each
        # undecodable byte a lone surrogate); JSON writes it as a \udcXX escape, which json.load
        # reads back, so os.fsencode(path) gives the file's bytes again (docs/data.md).
        tmp.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=True) + "\n", encoding="ascii")
        os.replace(tmp, path)
