"""The labelled data module for linear probes: class folders, split into train and test.

Two layouts are accepted (docs/data.md)::

    root/<class>/**/*.mp4                      one pool, split here (seeded, stratified by class)
    root/train/<class>/...  +  root/test/...   given split (``val/`` is used when there is no
                                               ``test/``)

Class names are the sorted class folder names; a clip's label is its class's index.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from datamodules.clip_dataset import ClipDataset, ClipEntry
from datamodules.collate import collate_clips
from datamodules.errors import DataPathError, DataSourceError, NoUsableClipsError
from datamodules.folder import DEFAULT_EXTENSIONS, list_videos
from datamodules.policies import DataPolicies
from datamodules.preprocessing import Preprocessing
from datamodules.report import DataReport
from datamodules.scan import scan_files
from datamodules.split_check import check_split, warn_if_small
from datamodules.workers import ignore_stop_signals

log = logging.getLogger(__name__)


def class_folders(folder: Path) -> list[str]:
    """The sorted names of the visible sub-folders of ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def stratified_split(entries: Sequence[ClipEntry], test_fraction: float,
                     seed: int) -> tuple[list[ClipEntry], list[ClipEntry]]:
    """Splits clips into train and test by file, class by class.

    Each class sends ``round(test_fraction * files)`` of its files to test, but at least one
    and never all of them when it has two or more files; a class with one file stays in train.
    All clips of a file go to the same side.

    Args:
        entries: ``(path, start_s, label)`` clips.
        test_fraction: share of each class's files that go to test.
        seed: makes the split reproducible.

    Returns:
        ``(train, test)`` entries, each in the order of ``entries``.
    """
    files_by_label: dict[int, list[str]] = {}
    for path, _, label in entries:
        files = files_by_label.setdefault(label, [])
        if path not in files:
            files.append(path)
    rng = random.Random(seed)
    test_files: set[str] = set()
    for label in sorted(files_by_label):
        files = sorted(files_by_label[label])
        rng.shuffle(files)
        count = min(max(round(test_fraction * len(files)), 1), len(files) - 1)
        test_files.update(files[:count])
    train = [e for e in entries if e[0] not in test_files]
    test = [e for e in entries if e[0] in test_files]
    return train, test


class LabeledClipDataModule(pl.LightningDataModule):
    """Labelled clips from class folders, for linear probes and other evaluations.

    Both loaders keep a fixed order (no shuffling), so features extracted twice line up.

    Args:
        root: the labelled folder (one of the layouts in the module docstring).
        preprocessing: must match the backbone's pretraining preprocessing; frames are always
            centre-cropped here (``crop="random"`` is for training only).
        batch_size: clips per batch.
        num_workers: DataLoader worker processes.
        test_fraction: share of each class's files held out for test, when ``root`` is not
            already split into ``train/`` and ``test/`` (or ``val/``).
        seed: seeds the split.
        extensions: file name endings that count as videos (case-insensitive).
        strict: stop at the first bad file (at the scan, or when a clip fails to load) instead of
            skipping it.
        key: the config key or option that set ``root``, named in errors.
        policies: which files without audio or shorter than a clip are kept, and how they are read.
        extensions_key: the config key or option that sets ``extensions``, named in errors (None:
            the caller offers none).
        report: where skipped files are recorded; its ``location`` is what warnings and errors
            point to, so pass one that says where the caller writes it (default: a fresh one).

    Attributes:
        report: one report over both splits, filled by `setup` (and by `linear_probe` with the
            clips that fail to decode).

    Raises:
        DataPathError: from `setup`, if ``root`` is not a folder.
        DataSourceError: from `setup`, if there are fewer than 2 class folders, the train and
            test folders have different classes, or the usable clips make a split a probe cannot
            use (`check_split`: fewer than 2 classes in a split, a class only in test).
        NoUsableClipsError: from `setup`, if a split folder has no usable clip.
    """

    def __init__(self, root: str, preprocessing: Preprocessing, batch_size: int, num_workers: int,
                 test_fraction: float = 0.3, seed: int = 0,
                 extensions: Sequence[str] = DEFAULT_EXTENSIONS, strict: bool = False,
                 key: str = "data.root", policies: DataPolicies = DataPolicies(),
                 extensions_key: str | None = "data.source.extensions",
                 report: DataReport | None = None) -> None:
        super().__init__()
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction={test_fraction}: must be in (0, 1), e.g. 0.3.")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be >= 1.")
        self.root = Path(root)
        self.preprocessing = replace(preprocessing, crop="center")  # evaluation: no random crops
        self.policies = policies
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.test_fraction = test_fraction
        self.seed = seed
        self.extensions = tuple(extensions)
        self.strict = strict
        self.key = key
        self.extensions_key = extensions_key
        self.report = report if report is not None else DataReport(location="the labeled data module's report")
        self.class_names: list[str] = []
        self._train: list[ClipEntry] | None = None
        self._test: list[ClipEntry] = []

    def setup(self, stage: str | None = None) -> None:
        """Finds the classes, scans the files and splits them; later calls do nothing."""
        if self._train is not None:
            return
        if not self.root.is_dir():
            raise DataPathError(self.root, self.key,
                                problem="is not a folder" if self.root.exists() else "does not exist")
        subfolders = class_folders(self.root)
        held_out = next((name for name in ("test", "val") if name in subfolders), None)
        if "train" in subfolders and held_out:
            train, test = self._given_split(held_out)
        elif "train" in subfolders or held_out:
            found, missing = ("train/", "test/ or val/") if held_out is None else (f"{held_out}/", "train/")
            raise DataSourceError(f"{self.source}: has {found} but not {missing}; give both splits, or "
                                  "put the class folders directly under it to have them split.")
        else:
            train, test = self._pooled_split()
        self.check_split([label for _, _, label in train], [label for _, _, label in test])
        warn_if_small([label for _, _, label in test], self.class_names, self.source)
        log.info("labelled data: %d classes, %d train and %d test clips; %s", len(self.class_names),
                 len(train), len(test), self.report.summary())
        self._train, self._test = train, test

    def _given_split(self, held_out: str) -> tuple[list[ClipEntry], list[ClipEntry]]:
        self.class_names = self._classes_of(self.root / "train")
        test_classes = self._classes_of(self.root / held_out)
        if test_classes != self.class_names:
            raise DataSourceError(
                f"{self.source}: train/ and {held_out}/ must hold the same class folders; only in "
                f"train/: {sorted(set(self.class_names) - set(test_classes))}, only in "
                f"{held_out}/: {sorted(set(test_classes) - set(self.class_names))}. Rename or add "
                "folders so that both splits have the same classes.")
        log.info("labelled data: using the given split train/ and %s/", held_out)
        return self._scan(self.root / "train"), self._scan(self.root / held_out)

    def _pooled_split(self) -> tuple[list[ClipEntry], list[ClipEntry]]:
        self.class_names = self._classes_of(self.root)
        train, test = stratified_split(self._scan(self.root), self.test_fraction, self.seed)
        if not test:
            raise DataSourceError(
                f"{self.source}: no class has 2 usable files, so nothing can be held out for test "
                f"(skipped files are listed in {self.report.location}); add files, or give a split "
                "as train/ and test/ folders.")
        log.info("labelled data: split by class with test_fraction=%s, seed=%d",
                 self.test_fraction, self.seed)
        return train, test

    def _classes_of(self, folder: Path) -> list[str]:
        names = class_folders(folder)
        if len(names) < 2:
            raise DataSourceError(
                f"{self.source}: found {len(names)} class folder(s) {names} in {folder}; a labelled "
                "folder needs at least 2, one per class (e.g. root/dog/*.mp4, root/cat/*.mp4).")
        return names

    def _scan(self, folder: Path) -> list[ClipEntry]:
        """Scans every class folder under ``folder``; raises if none gives a clip."""
        files_before, skips_before = self.report.files_seen, len(self.report.skipped)
        entries: list[ClipEntry] = []
        for label, name in enumerate(self.class_names):
            paths = list_videos(folder / name, self.extensions, key=self.key)
            clips = scan_files(paths, self.preprocessing, self.report, self.strict, self.policies)
            if not clips:
                log.warning("class %r has no usable clip in %s", name, folder / name)
            entries += [(path, start, label) for path, start in clips]
        if not entries:
            skips = Counter(s["reason"] for s in self.report.skipped[skips_before:])
            raise NoUsableClipsError(folder, self.report.files_seen - files_before, skips,
                                     self.extensions, key=self.key, extensions_key=self.extensions_key)
        return entries

    @property
    def source(self) -> str:
        """The labeled folder as the user set it, for messages, e.g. ``"probe.data=/labeled"``."""
        return f"{self.key}={self.root}"

    def check_split(self, train_labels: Sequence[int], test_labels: Sequence[int]) -> None:
        """`check_split` of these labels (of the scanned clips, or of those that decoded).

        Raises:
            DataSourceError: the split is one a linear probe cannot give a meaningful figure on.
        """
        check_split(train_labels, test_labels, self.class_names, self.source, self.report.location)

    @property
    def num_train(self) -> int:
        """Clips in the train split."""
        return len(self._require_setup())

    @property
    def num_test(self) -> int:
        """Clips in the test split."""
        self._require_setup()
        return len(self._test)

    def _require_setup(self) -> list[ClipEntry]:
        if self._train is None:
            raise RuntimeError("call setup() first")
        return self._train

    def train_dataloader(self) -> DataLoader:
        """Train clips in a fixed order."""
        self.setup()
        return self._loader(self._train)

    def test_dataloader(self) -> DataLoader:
        """Test clips in a fixed order."""
        self.setup()
        return self._loader(self._test)

    def _loader(self, entries: list[ClipEntry]) -> DataLoader:
        return DataLoader(
            ClipDataset(entries, self.preprocessing, strict=self.strict, policies=self.policies),
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_clips,
            worker_init_fn=ignore_stop_signals,
        )
