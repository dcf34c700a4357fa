"""A map-style dataset of clips: (file, start time, optional label) entries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch.utils.data import Dataset

from datamodules.clips import load_clip
from datamodules.errors import ClipError, StrictDataError
from datamodules.policies import DataPolicies
from datamodules.preprocessing import Preprocessing

ClipEntry = tuple[str, float, int | None]  # (path, start_s, label)


class ClipDataset(Dataset):
    """Loads one clip per index; a file that fails gives a failure item, not an exception.

    Use with `collate_clips`, which drops failures from the batch and reports them.

    Args:
        entries: ``(path, start_s, label)`` per clip; ``label`` is None for unlabelled data.
        preprocessing: decoding and feature settings.
        strict: raise `StrictDataError` for a clip that fails instead of returning a failure item
            (from a DataLoader worker, PyTorch re-raises it as a RuntimeError with its message).
        policies: how files without audio or shorter than a clip are read (see `read_clip`).

    Examples:
        >>> dataset = ClipDataset([("missing.mp4", 0.0, None)], Preprocessing())
        >>> dataset[0]["skipped"]["reason"]
        'unreadable'
    """

    def __init__(self, entries: Sequence[ClipEntry], preprocessing: Preprocessing,
                 strict: bool = False, policies: DataPolicies = DataPolicies()) -> None:
        self.entries = list(entries)
        # video_id: a file's position among the distinct files of the entries, in their order
        self._video_ids: dict[str, int] = {}
        for path, _, _ in self.entries:
            self._video_ids.setdefault(path, len(self._video_ids))
        self.preprocessing = preprocessing
        self.strict = strict
        self.policies = policies

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Returns ``{"video", "audio", "meta": {"path", "start_s", "video_id", "view", "av_offset_s"},
        "label"?}`` (one synchronous view per clip: ``view`` 0, ``av_offset_s`` 0) or, if the file
        fails, ``{"skipped": {"path", "reason", "detail"}}``."""
        path, start_s, label = self.entries[index]
        try:
            item: dict[str, Any] = load_clip(path, start_s, self.preprocessing, self.policies)
        except ClipError as err:
            if self.strict:
                raise StrictDataError(err.reason, err.detail, path) from err
            return {"skipped": {"path": path, "reason": err.reason, "detail": err.detail}}
        item["meta"] = {"path": path, "start_s": start_s, "video_id": self._video_ids[path], "view": 0,
                        "av_offset_s": 0.0}
        if label is not None:
            item["label"] = label
        return item
