"""Bad input never crashes a run, is never silent, and good clips still come through."""

from __future__ import annotations

import json
from pathlib import Path

import media
import numpy as np
import pytest
import torch

from datamodules.clip_dataset import ClipDataset
from datamodules.collate import collate_clips
from datamodules.decode import clip_starts, probe_file, read_clip
from datamodules.errors import REASONS, ClipError, DataPathError, NoUsableClipsError, StrictDataError
from datamodules.folder import list_videos
from datamodules.preprocessing import Preprocessing
from datamodules.pretrain import AVPretrainDataModule
from datamodules.sources import SourceConfig
from datamodules.stream import StreamSettings
from datamodules.report import DataReport
from datamodules.scan import file_clip_starts, scan_files

PRE = Preprocessing(clip_seconds=1.0, num_frames=2, frame_size=16, num_mel_bins=32, audio_frames=64)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], dict[Path, str]]:
    """A folder with good clips (one nested, one upper-case .MP4), every kind of bad file, and a
    corrupt file that passes the scan but fails to decode."""
    root = tmp_path_factory.mktemp("zoo")
    good = [
        media.write_av_clip(root / "good_a.mp4", seconds=1.5),
        media.write_av_clip(root / "nested" / "good_b.MP4", seconds=1.0),
        media.write_av_clip(root / "good_c.mkv", seconds=0.75),  # shorter than a clip: padded
    ]
    bad = media.write_bad_files(root / "bad")
    source = media.write_av_clip(root.parent / f"{root.name}-source.mp4", seconds=1.0)
    bad[media.write_corrupted(source, root / "corrupt.mp4")] = "decode_failed"
    return root, good, bad


def _pretrain_module(root: Path, num_workers: int = 0, strict: bool = False) -> AVPretrainDataModule:
    return AVPretrainDataModule(SourceConfig(path=str(root)), StreamSettings(
        preprocessing=PRE, batch_size=2, num_workers=num_workers), strict=strict)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_pretrain_skips_bad_files_and_loads_good_ones(zoo, num_workers: int) -> None:
    root, good, bad = zoo
    module = _pretrain_module(root, num_workers)
    module.setup("fit")
    loaded: list[str] = []
    for batch in module.train_dataloader():
        module.report.add_batch(batch["meta"])
        b = len(batch["meta"]["path"])
        if b == 0:
            assert batch["video"].numel() == 0 and batch["audio"].numel() == 0
            continue
        assert batch["video"].shape == (b, 3, PRE.num_frames, PRE.frame_size, PRE.frame_size)
        assert batch["audio"].shape == (b, 1, PRE.audio_frames, PRE.num_mel_bins)
        assert batch["video"].dtype == batch["audio"].dtype == torch.float32
        assert torch.isfinite(batch["video"]).all() and torch.isfinite(batch["audio"]).all()
        assert batch["meta"]["start_s"].shape == (b,)
        assert "label" not in batch
        loaded += batch["meta"]["path"]
    assert sorted(loaded) == sorted(str(p) for p in good)
    reasons = {s["path"]: s["reason"] for s in module.report.skipped}
    assert reasons == {str(p): reason for p, reason in bad.items()}
    assert (module.report.files_seen, module.report.clips) == (len(good) + len(bad), len(good))


def test_every_bad_file_gives_its_reason_from_probe_or_read(zoo) -> None:
    _, _, bad = zoo
    for path, reason in bad.items():
        with pytest.raises(ClipError) as caught:
            read_clip(path, file_clip_starts(path, PRE)[0], PRE)
        assert caught.value.reason == reason, str(caught.value)
        assert caught.value.reason in REASONS
        # read_clip alone (as in a worker, without the scan) also fails cleanly.
        with pytest.raises(ClipError):
            read_clip(path, 0.0, PRE)


def test_dataset_returns_failure_items_instead_of_raising(zoo) -> None:
    _, good, bad = zoo
    entries = [(str(good[0]), 0.0, 3)] + [(str(p), 0.0, 3) for p in bad]
    items = [ClipDataset(entries, PRE)[i] for i in range(len(entries))]
    assert items[0]["label"] == 3 and items[0]["meta"] == {"path": str(good[0]), "start_s": 0.0, "video_id": 0,
                                                           "view": 0, "av_offset_s": 0.0}
    assert all(set(item) == {"skipped"} for item in items[1:])
    batch = collate_clips(items)
    assert batch["video"].shape[0] == 1 and batch["label"].tolist() == [3]
    assert len(batch["meta"]["skipped"]) == len(bad)


def test_folder_of_only_bad_files_gives_no_clip_and_counts_them(zoo) -> None:
    root, _, bad = zoo
    module = _pretrain_module(root / "bad")
    for batch in module.train_dataloader():
        module.report.add_batch(batch["meta"])
    assert module.report.clips == 0 and module.report.files_seen == len(bad) - 1  # corrupt.mp4 is elsewhere
    assert module.report.counts_by_reason() == {"empty_file": 1, "no_audio": 1, "no_video": 1,
                                               "too_short": 1, "unreadable": 3}


def test_empty_folder_is_an_error_that_names_the_extensions(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no videos here")
    with pytest.raises(NoUsableClipsError, match=r"no video file \(\.mp4"):
        _pretrain_module(tmp_path).setup()


def test_missing_folder_names_the_path_and_the_config_key(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataPathError, match="data.source.path") as caught:
        _pretrain_module(missing).setup()
    assert str(missing) in str(caught.value)
    assert isinstance(caught.value, FileNotFoundError)
    with pytest.raises(DataPathError, match="not a folder"):
        list_videos(media.write_text(tmp_path / "file.mp4"))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_strict_mode_stops_at_the_first_bad_file_and_names_it(zoo, num_workers: int) -> None:
    root, _, bad = zoo
    module = _pretrain_module(root, num_workers, strict=True)
    with pytest.raises(StrictDataError) as caught:
        for _ in module.train_dataloader():
            pass
    assert isinstance(caught.value, ClipError)
    assert caught.value.path in {str(p) for p in bad}
    assert caught.value.path in str(caught.value)
    assert "data.strict=false" in str(caught.value)


def test_strict_dataset_raises_for_a_clip_that_fails_to_load(zoo) -> None:
    _, _, bad = zoo
    corrupt = next(str(p) for p, reason in bad.items() if reason == "decode_failed")
    with pytest.raises(StrictDataError, match="data.strict=false") as caught:
        ClipDataset([(corrupt, 0.0, None)], PRE, strict=True)[0]
    assert caught.value.reason == "decode_failed" and caught.value.path == corrupt


def test_list_videos_is_recursive_sorted_case_insensitive_and_skips_hidden(tmp_path: Path) -> None:
    for name in ["b.mp4", "a.MKV", "sub/c.webm", "notes.txt", "sound.m4a", ".hidden.mp4",
                 ".cache/d.mp4", "sub/.e.mp4"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in list_videos(tmp_path)]
    assert found == ["a.MKV", "b.mp4", "sub/c.webm"]
    assert [p.name for p in list_videos(tmp_path, extensions=[".M4A"])] == ["sound.m4a"]


def test_scan_files_counts_files_and_clips(zoo) -> None:
    _, good, bad = zoo
    report = DataReport()
    clips = scan_files(good + list(bad), PRE, report, strict=False)
    assert [path for path, _ in clips] == [str(p) for p in good] + [str(p) for p, r in bad.items()
                                                                   if r == "decode_failed"]
    assert report.files_seen == len(good) + len(bad) and report.clips == len(clips)
    assert clips[0][1] == pytest.approx(0.25)  # a 1.5 s file: the centred 1 s clip starts at 0.25 s
    assert clips[2][1] == 0.0  # a 0.75 s file: one clip from 0 s


def test_report_deduplicates_groups_and_writes_json_atomically(tmp_path: Path) -> None:
    report = DataReport()
    report.files_seen, report.clips = 4, 2
    report.add_skip("a.mp4", "no_audio", "no audio stream")
    report.merge([{"path": "a.mp4", "reason": "no_audio", "detail": "again"},
                  {"path": "b.mp4", "reason": "unreadable", "detail": "garbage"},
                  {"path": "c.mp4", "reason": "no_audio", "detail": "no audio stream"}])
    assert len(report.skipped) == 3
    assert report.counts_by_reason() == {"no_audio": 2, "unreadable": 1}
    assert report.summary() == "4 files seen, 2 clips used, 3 skipped (no_audio: 2, unreadable: 1)"
    out = tmp_path / "run" / "data_report.json"
    report.write_json(out)
    assert json.loads(out.read_text()) == report.to_dict()
    assert report.to_dict()["skipped"][1] == {"path": "b.mp4", "reason": "unreadable", "detail": "garbage"}
    assert [p.name for p in out.parent.iterdir()] == ["data_report.json"]  # no temporary left


def test_clip_error_rejects_unknown_reasons_and_reads_as_a_sentence() -> None:
    err = ClipError("too_short", "0.2 s", path="x.mp4")
    assert str(err) == f"x.mp4: {REASONS['too_short']} (0.2 s)"
    with pytest.raises(ValueError, match="unknown skip reason"):
        ClipError("broken", "?")


def test_collate_of_only_failures_is_an_empty_batch() -> None:
    failure = {"skipped": {"path": "x.mp4", "reason": "unreadable", "detail": "?"}}
    batch = collate_clips([failure, failure])
    assert batch["video"].numel() == 0 and batch["audio"].numel() == 0 and "label" not in batch
    assert batch["meta"]["path"] == [] and batch["meta"]["start_s"].shape == (0,)
    assert batch["meta"]["video_id"].shape == (0,) and batch["meta"]["video_id"].dtype == torch.long
    assert len(batch["meta"]["skipped"]) == 2


def test_probe_file_and_clip_starts(tmp_path: Path) -> None:
    path = media.write_av_clip(tmp_path / "three.mp4", seconds=3.0, size=40)
    info = probe_file(path)
    assert (info.path, info.num_frames, info.fps, info.width, info.height) == (str(path), 24, 8.0, 40, 40)
    assert info.duration_s == pytest.approx(3.0) and info.has_audio
    assert clip_starts(info, Preprocessing(clip_seconds=1.0)) == [pytest.approx(1.0)]  # centred
    assert clip_starts(info, Preprocessing(clip_seconds=5.0)) == [0.0]  # padded: 3 s of a 5 s clip
    with pytest.raises(ClipError, match="half of clip_seconds=10.0") as caught:
        clip_starts(info, Preprocessing(clip_seconds=10.0))
    assert caught.value.reason == "too_short"


def test_read_clip_samples_the_right_frames_and_aligns_a_delayed_audio_track(tmp_path: Path) -> None:
    # Video: frame t has grey level 8 t (8 fps, 3 s). Audio: a click at 1.0 s of audio time, the
    # audio stream starting 0.25 s after the video, so the click is at 1.25 s of video time.
    path = media.write_av_clip(tmp_path / "delayed.mp4", seconds=3.0, click_at_s=1.0,
                               audio_start_s=0.25)
    pre = Preprocessing(clip_seconds=2.0, num_frames=4)
    frames, waveform = read_clip(path, 0.5, pre)
    assert frames.shape == (4, 32, 32, 3) and frames.dtype == torch.uint8
    # Times 0.75, 1.25, 1.75, 2.25 s -> frames 6, 10, 14, 18.
    assert [media.grey_level(f.numpy()) for f in frames] == [6, 10, 14, 18]
    # The frame shown at each time: times 1/6, 1/2, 5/6 s are frames 1.3, 4, 6.7 -> 1, 4, 6.
    three, _ = read_clip(path, 0.0, Preprocessing(clip_seconds=1.0, num_frames=3))
    assert [media.grey_level(f.numpy()) for f in three] == [1, 4, 6]
    assert waveform.shape == (32000,) and waveform.dtype == torch.float32
    click = int(np.argmax(np.abs(waveform.numpy()) > 0.3))
    assert abs(click - round((1.25 - 0.5) * 16000)) < 0.005 * 16000  # within 5 ms


def test_read_clip_pads_a_short_file_and_spreads_its_frames(tmp_path: Path) -> None:
    path = media.write_av_clip(tmp_path / "short.mp4", seconds=0.75)  # 6 frames
    frames, waveform = read_clip(path, 0.0, Preprocessing(clip_seconds=1.0, num_frames=3))
    assert [media.grey_level(f.numpy()) for f in frames] == [1, 3, 5]  # times 0.125, 0.375, 0.625
    audio = waveform.numpy()
    assert np.abs(audio[: 12000 - 1024]).max() > 0.2  # the tone (AAC may fade its last frame)
    assert np.all(audio[12000 + 1024:] == 0.0)  # zero padding after the file ends
