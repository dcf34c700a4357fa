"""The labelled data module: layouts, stratified split, fixed order and its errors."""

from __future__ import annotations

from pathlib import Path

import media
import pytest
import torch

from datamodules.errors import DataPathError
from datamodules.labeled import LabeledClipDataModule, stratified_split
from datamodules.preprocessing import Preprocessing

PRE = Preprocessing(clip_seconds=1.0, num_frames=1, frame_size=16, num_mel_bins=16, audio_frames=32)


def write_classes(root: Path, counts: dict[str, int]) -> None:
    for name, count in counts.items():
        for i in range(count):
            media.write_av_clip(root / name / f"{name}_{i}.mp4", seconds=1.0, fps=4)


@pytest.fixture(scope="module")
def pooled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder-per-class: 3 classes of 4, 5 and 2 clips, plus one bad file in a class."""
    root = tmp_path_factory.mktemp("pooled")
    write_classes(root, {"cat": 4, "dog": 5, "owl": 2})
    media.write_text(root / "dog" / "broken.mp4")
    return root


def module(root: Path, **kwargs) -> LabeledClipDataModule:
    dm = LabeledClipDataModule(str(root), PRE, batch_size=3, num_workers=0, **kwargs)
    dm.setup()
    return dm


def paths_and_labels(loader) -> list[tuple[str, int]]:
    pairs = []
    for batch in loader:
        assert batch["label"].dtype == torch.long
        assert batch["video"].shape[1:] == (3, 1, 16, 16) and batch["audio"].shape[1:] == (1, 32, 16)
        pairs += zip(batch["meta"]["path"], batch["label"].tolist())
    return pairs


def test_folder_per_class_is_split_stratified(pooled: Path) -> None:
    dm = module(pooled)
    assert dm.class_names == ["cat", "dog", "owl"]
    # round(0.3 n) to test, at least 1 and at most n - 1: cat 4 -> 1, dog 5 -> 2 (round(1.5)), owl 2 -> 1.
    assert (dm.num_train, dm.num_test) == (7, 4)
    test = paths_and_labels(dm.test_dataloader())
    train = paths_and_labels(dm.train_dataloader())
    assert sorted({label for _, label in test}) == [0, 1, 2]  # every class is in test
    assert not {p for p, _ in test} & {p for p, _ in train}
    for path, label in train + test:
        assert Path(path).parent.name == dm.class_names[label]
    assert dm.report.files_seen == 12 and dm.report.clips == 11
    assert dm.report.counts_by_reason() == {"unreadable": 1}


def test_split_and_order_are_deterministic(pooled: Path) -> None:
    first, second = module(pooled, seed=3), module(pooled, seed=3)
    assert paths_and_labels(first.test_dataloader()) == paths_and_labels(second.test_dataloader())
    assert paths_and_labels(first.train_dataloader()) == paths_and_labels(first.train_dataloader())
    other = module(pooled, seed=4)
    assert paths_and_labels(other.test_dataloader()) != paths_and_labels(first.test_dataloader())


def test_given_train_and_val_folders_are_used(tmp_path: Path) -> None:
    write_classes(tmp_path / "train", {"a": 3, "b": 2})
    write_classes(tmp_path / "val", {"a": 1, "b": 1})
    dm = module(tmp_path)
    assert dm.class_names == ["a", "b"] and (dm.num_train, dm.num_test) == (5, 2)
    assert all("/val/" in path for path, _ in paths_and_labels(dm.test_dataloader()))


def test_test_folder_is_preferred_to_val(tmp_path: Path) -> None:
    for split in ("train", "val", "test"):
        write_classes(tmp_path / split, {"a": 1, "b": 1})
    dm = module(tmp_path)
    assert all("/test/" in path for path, _ in paths_and_labels(dm.test_dataloader()))


def test_class_mismatch_between_splits_names_the_classes(tmp_path: Path) -> None:
    write_classes(tmp_path / "train", {"a": 1, "b": 1})
    write_classes(tmp_path / "test", {"a": 1, "c": 1})
    with pytest.raises(ValueError, match=r"only in train/: \['b'\], only in test/: \['c'\]"):
        module(tmp_path)


def test_train_without_test_folder_is_an_error(tmp_path: Path) -> None:
    write_classes(tmp_path / "train", {"a": 1, "b": 1})
    with pytest.raises(ValueError, match="has train/ but not test/ or val/"):
        module(tmp_path)


@pytest.mark.parametrize("classes", [{}, {"only": 2}])
def test_fewer_than_two_classes_is_an_error(tmp_path: Path, classes: dict[str, int]) -> None:
    write_classes(tmp_path, classes)
    media.write_av_clip(tmp_path / "loose.mp4")
    with pytest.raises(ValueError, match=f"found {len(classes)} class folder"):
        module(tmp_path)


def test_missing_root_is_a_data_path_error(tmp_path: Path) -> None:
    with pytest.raises(DataPathError, match="data.root"):
        module(tmp_path / "missing")
    with pytest.raises(DataPathError, match="probe.data="):
        module(tmp_path / "missing", key="probe.data")


def test_stratified_split_counts() -> None:
    sizes = {0: 1, 1: 2, 2: 3, 3: 10, 4: 7}
    entries = [(f"{label}_{i}.mp4", 0.0, label) for label, n in sizes.items() for i in range(n)]
    train, test = stratified_split(entries, test_fraction=0.3, seed=0)
    assert [sum(1 for e in test if e[2] == label) for label in sizes] == [0, 1, 1, 3, 2]
    assert sorted(train + test) == sorted(entries)
    assert stratified_split(entries, 0.3, seed=0) == (train, test)


def test_stratified_split_keeps_the_clips_of_a_file_together() -> None:
    entries = [(f"f{i}.mp4", start, i % 2) for i in range(6) for start in (0.0, 5.0)]
    train, test = stratified_split(entries, test_fraction=0.5, seed=1)
    assert not {p for p, _, _ in train} & {p for p, _, _ in test}
    assert len(test) == 8  # round(0.5 * 3) = 2 of each class's 3 files, 2 clips each
