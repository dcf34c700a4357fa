"""Clip identity (meta.video_id), several views of one file per batch, and audio offset views."""

from __future__ import annotations

import io
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

import media
import pytest
import torch
from torch.utils.data import DataLoader

from avssl.config import ConfigError, load_config
from datamodules.clip_dataset import ClipDataset
from datamodules.collate import collate_clips
from datamodules.preprocessing import Preprocessing
from datamodules.sources import SourceConfig, open_source
from datamodules.stream import ClipStream, StreamSettings

PRE = Preprocessing(clip_seconds=0.5, num_frames=2, frame_size=32, num_mel_bins=32, audio_frames=48)
# Chirp clips: 4 s at 8 fps; 1 s clips whose 2 frames sit at 0.25 s and 0.75 s into the clip.
CHIRP_PRE = Preprocessing(clip_seconds=1.0, num_frames=2, frame_size=16, num_mel_bins=32, audio_frames=100)
CHIRP_FPS = 8
NUM_FILES = 7


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("views")
    for i in range(NUM_FILES):
        media.write_av_clip(root / f"clip_{i}.mp4", seconds=1.5, size=32, fps=8, tone_hz=300 + 40 * i)
    media.write_empty(root / "broken.mp4")  # has an id too: it is part of the source's order
    return root


@pytest.fixture(scope="module")
def chirps(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("chirps")
    for i in range(3):
        media.write_chirp_clip(root / f"chirp_{i}.mp4", seconds=4.0, fps=CHIRP_FPS)
    return root


def _stream(root: Path | str, **settings: Any) -> ClipStream:
    options = dict(preprocessing=PRE, batch_size=3)
    options.update(settings)
    return ClipStream(open_source(SourceConfig(path=str(root))), StreamSettings(**options))


def _read(stream: ClipStream, epoch: int, batches_done: int = 0) -> list[dict]:
    stream.set_position(epoch, batches_done)
    return list(DataLoader(stream, batch_size=None, num_workers=stream.settings.num_workers))


def _rows(batches: list[dict]) -> list[tuple[str, int, int, float, float]]:
    """(file name, video_id, view, start_s, av_offset_s) of every row, in order."""
    return [(Path(path).name, int(vid), int(view), round(float(start), 4), round(float(offset), 4))
            for b in batches
            for path, vid, view, start, offset in zip(b["meta"]["path"], b["meta"]["video_id"], b["meta"]["view"],
                                                      b["meta"]["start_s"], b["meta"]["av_offset_s"])]


# --- video_id ------------------------------------------------------------------------------------


def test_video_id_is_the_position_in_the_sorted_folder_and_the_same_every_epoch(folder: Path) -> None:
    stream = _stream(folder, clips_per_video=2, sampling="random")
    epochs = [_read(stream, epoch) for epoch in range(2)]
    assert all(b["meta"]["video_id"].dtype == torch.long for b in epochs[0])
    ids = [{name: vid for name, vid, *_ in _rows(batches)} for batches in epochs]
    # broken.mp4 sorts first and holds id 0 though it gives no clip
    assert ids[0] == ids[1] == {f"clip_{i}.mp4": i + 1 for i in range(NUM_FILES)}
    assert _rows(epochs[0]) != _rows(epochs[1])  # a new order and new starts, the same identities


def test_a_resumed_stream_gives_the_same_ids_views_and_offsets(folder: Path) -> None:
    settings = dict(clips_per_video=2, views_per_video=2, av_offset_s=(-0.5, 0.5), sampling="random",
                    num_workers=2)
    full = _read(_stream(folder, **settings), epoch=1)
    resumed = _read(_stream(folder, **settings), epoch=1, batches_done=3)  # a new stream, as after a restart
    assert len(full) > 4 and _rows(resumed) == _rows(full[3:])
    for a, b in zip(resumed, full[3:]):
        assert torch.equal(a["video"], b["video"]) and torch.equal(a["audio"], b["audio"])


def test_shard_samples_are_numbered_shard_by_shard(folder: Path, tmp_path: Path) -> None:
    video = (folder / "clip_0.mp4").read_bytes()
    sizes = [3, 2]
    for shard, size in enumerate(sizes):
        with tarfile.open(tmp_path / f"s-{shard}.tar", "w") as tar:
            for i in range(size):
                info = tarfile.TarInfo(f"k{shard}_{i}.mp4")
                info.size = len(video)
                tar.addfile(info, io.BytesIO(video))
    batches = _read(_stream(tmp_path / "s-{0..1}.tar", batch_size=2), epoch=0)
    ids = {name.rsplit(":", 1)[1]: vid for name, vid, *_ in _rows(batches)}
    assert ids == {"k0_0": 0, "k0_1": 1, "k0_2": 2, "k1_0": 3, "k1_1": 4}  # keys: "<shard>:<sample key>"


def test_labeled_clips_carry_the_position_of_their_file(folder: Path) -> None:
    a, b = str(folder / "clip_0.mp4"), str(folder / "clip_1.mp4")
    dataset = ClipDataset([(a, 0.0, 0), (a, 0.5, 0), (b, 0.0, 1)], PRE)
    batch = collate_clips([dataset[i] for i in range(3)])
    assert batch["meta"]["video_id"].tolist() == [0, 0, 1]
    assert batch["meta"]["view"].tolist() == [0, 0, 0] and batch["meta"]["av_offset_s"].tolist() == [0.0] * 3


# --- views_per_video -----------------------------------------------------------------------------


@pytest.mark.parametrize("clips_per_video", [1, 2])
def test_views_of_a_clip_share_a_batch_and_the_plan_stays_exact(folder: Path, clips_per_video: int) -> None:
    views = 2
    stream = _stream(folder, clips_per_video=clips_per_video, views_per_video=views, sampling="random")
    plain = _stream(folder, clips_per_video=clips_per_video)
    batches = _read(stream, epoch=0)
    assert len(batches) == len(stream) == len(plain)  # views add rows to a batch, not batches
    for batch in batches:
        meta = batch["meta"]
        assert len(meta["path"]) <= 3 * views and batch["video"].shape[0] == len(meta["path"])
        # consecutive rows (video_id, view 0), (video_id, view 1): a clip's views side by side
        assert meta["view"].tolist() == [0, 1] * (len(meta["path"]) // views)
        assert torch.equal(meta["video_id"][0::2], meta["video_id"][1::2])
    rows = _rows(batches)
    assert Counter(name for name, *_ in rows) == {f"clip_{i}.mp4": clips_per_video * views for i in range(NUM_FILES)}
    assert len({(name, start) for name, _, _, start, _ in rows}) == len(rows)  # views at different seconds
    seen = [Path(n).name for b in batches for n in b["meta"]["videos_seen"]]
    assert sorted(seen) == sorted([f"clip_{i}.mp4" for i in range(NUM_FILES)] + ["broken.mp4"])


# --- av_offset_s ---------------------------------------------------------------------------------


def _measured(batch: dict) -> list[tuple[float, float]]:
    """Per row: (video window start from the frames' grey levels, audio window start from the chirp)."""
    pre = CHIRP_PRE
    mean = torch.tensor(pre.video_mean)[:, None, None, None]
    std = torch.tensor(pre.video_std)[:, None, None, None]
    starts = []
    for video, waveform in zip(batch["video"], batch["waveform"]):
        pixels = ((video * std + mean) * 255).permute(1, 2, 3, 0).numpy()  # (T, S, S, 3)
        first = media.grey_level(pixels[0])  # the frame shown 0.25 s into the clip
        video_start = (first + 0.5) / CHIRP_FPS - pre.clip_seconds / pre.num_frames / 2
        starts.append((video_start, media.chirp_start_s(waveform.numpy(), pre.sample_rate)))
    return starts


@pytest.mark.parametrize("offsets", [(-1.5, 1.5), (0.0, 0.0)], ids=["offset", "sync"])
def test_audio_of_each_view_is_shifted_by_its_recorded_offset(chirps: Path, offsets: tuple[float, float]) -> None:
    stream = _stream(chirps, preprocessing=CHIRP_PRE, batch_size=2, views_per_video=2, av_offset_s=offsets,
                     sampling="random", audio_features_on="device")
    recorded = []
    for epoch in range(2):
        for batch in _read(stream, epoch):
            assert not batch["meta"]["skipped"]
            for (video_s, audio_s), start, offset in zip(_measured(batch), batch["meta"]["start_s"].tolist(),
                                                         batch["meta"]["av_offset_s"].tolist()):
                assert abs(video_s - start) <= 0.5 / CHIRP_FPS + 1e-3  # the frames sit where start_s says
                assert abs(audio_s - (start + offset)) < 0.01  # the audio sits where the offset says
                assert abs((audio_s - video_s) - offset) <= 1 / CHIRP_FPS  # measured offset: within a frame
                assert 0.0 <= audio_s and audio_s + CHIRP_PRE.clip_seconds <= 4.0 + 0.01  # inside the file
                recorded.append(offset)
    assert len(recorded) == 2 * 3 * 2 and all(offsets[0] <= o <= offsets[1] for o in recorded)
    if offsets == (0.0, 0.0):
        assert set(recorded) == {0.0}
    else:
        assert min(recorded) < -0.2 and max(recorded) > 0.2  # both signs are drawn


def test_offsets_are_seeded_by_seed_and_epoch(chirps: Path) -> None:
    def offsets(seed: int, epoch: int) -> list[tuple[str, float, float]]:
        stream = _stream(chirps, preprocessing=CHIRP_PRE, batch_size=2, av_offset_s=(-1.0, 1.0), seed=seed)
        return sorted((name, start, offset) for name, _, _, start, offset in _rows(_read(stream, epoch)))

    assert offsets(0, 0) == offsets(0, 0)
    assert offsets(0, 0) != offsets(0, 1) and offsets(0, 0) != offsets(1, 0)


def test_an_offset_range_the_file_cannot_honour_skips_it_with_the_key_to_change(chirps: Path) -> None:
    # a centred 1 s clip of a 4 s file allows offsets of -1.5 to 1.5 s
    stream = _stream(chirps, preprocessing=CHIRP_PRE, batch_size=3, av_offset_s=(2.5, 3.0))
    (batch,) = _read(stream, epoch=0)
    assert batch["meta"]["path"] == [] and len(batch["meta"]["skipped"]) == 3
    for skip in batch["meta"]["skipped"]:
        assert skip["reason"] == "too_short" and "\n" not in skip["detail"]
        assert "data.av_offset_s" in skip["detail"] and "1.50 s" in skip["detail"]


@pytest.mark.parametrize("override, message", [
    ("data.av_offset_s=[1.0,-1.0]", "data.av_offset_s=[1.0, -1.0]: min 1.0 is above max -1.0"),
    ("data.av_offset_s=[0.5]", "data.av_offset_s=[0.5]: must be [min, max]"),
    ("data.views_per_video=0", "data.views_per_video=0: must be in [1, 64]"),
])
def test_bad_view_settings_are_one_config_error_naming_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config([override])
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_a_stream_built_in_code_refuses_bad_view_settings(folder: Path) -> None:
    with pytest.raises(ValueError, match="av_offset_s=\\[0.5, 0.1\\]: min 0.5 is above max 0.1"):
        _stream(folder, av_offset_s=(0.5, 0.1))
    with pytest.raises(ValueError, match="views_per_video=0: must be >= 1"):
        _stream(folder, views_per_video=0)

