"""The unlabelled data module for pretraining: every usable clip of a folder of videos."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from datamodules.clip_dataset import ClipDataset
from datamodules.collate import collate_clips
from datamodules.errors import NoUsableClipsError
from datamodules.folder import DEFAULT_EXTENSIONS, list_videos
from datamodules.preprocessing import Preprocessing
from datamodules.report import DataReport
from datamodules.scan import scan_files

log = logging.getLogger(__name__)


class AVPretrainDataModule(pl.LightningDataModule):
    """Clips from a folder of videos (searched recursively), for self-supervised pretraining.

    `setup` lists and scans the folder once; files that cannot give a clip are skipped and recorded
    in `report` (or, with ``strict=True``, stop the run). Batches follow the contract of
    `collate_clips`; clips that fail while loading are left out of their batch and listed in
    ``batch["meta"]["skipped"]`` (pass them to ``report.merge``), so a batch may hold fewer than
    ``batch_size`` samples, or none.

    Args:
        root: the folder of videos (``data.root``).
        preprocessing: clip length, frames and audio features.
        batch_size: clips per batch.
        num_workers: DataLoader worker processes (0 loads in the main process).
        strict: stop at the first bad file (at the scan, or when a clip fails to load) instead of
            skipping it.
        extensions: file name endings that count as videos (case-insensitive).
        seed: seeds the shuffling order.

    Attributes:
        report: files seen, clips used and files skipped, filled by `setup`.

    Raises:
        DataPathError: from `setup`, if ``root`` is not a folder.
        NoUsableClipsError: from `setup`, if no file gives a clip.
        StrictDataError: from `setup`, with ``strict=True``, for the first bad file.
    """

    def __init__(self, root: str, preprocessing: Preprocessing, batch_size: int, num_workers: int,
                 strict: bool = False, extensions: Sequence[str] = DEFAULT_EXTENSIONS,
                 seed: int = 0) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size={batch_size}: must be >= 1.")
        if num_workers < 0:
            raise ValueError(f"data.num_workers={num_workers}: must be >= 0 (0 loads in the main process).")
        self.root = root
        self.preprocessing = preprocessing
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.strict = strict
        self.extensions = tuple(extensions)
        self.seed = seed
        self.report = DataReport()
        self._clips: list[tuple[str, float]] | None = None

    def setup(self, stage: str | None = None) -> None:
        """Lists and scans the folder; later calls do nothing."""
        if self._clips is not None:
            return
        paths = list_videos(self.root, self.extensions)
        log.info("found %d video files under %s", len(paths), self.root)
        clips = scan_files(paths, self.preprocessing, self.report, self.strict)
        if not clips:
            raise NoUsableClipsError(self.root, self.report.files_seen,
                                     self.report.counts_by_reason(), self.extensions)
        log.info("pretraining data: %s", self.report.summary())
        self._clips = clips

    @property
    def num_clips(self) -> int:
        """Usable clips found by `setup`."""
        if self._clips is None:
            raise RuntimeError("call setup() before num_clips")
        return len(self._clips)

    def train_dataloader(self) -> DataLoader:
        """Shuffled (seeded) batches; the last partial batch is dropped when there are at least
        two full batches."""
        self.setup()
        entries = [(path, start, None) for path, start in self._clips]
        dataset = ClipDataset(entries, self.preprocessing, strict=self.strict)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(self.seed),
            drop_last=len(dataset) >= 2 * self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_clips,
        )
