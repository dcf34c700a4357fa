"""The streaming pretraining data: sharding over ranks and workers, epochs, resume, isolation."""

from __future__ import annotations

import io
import os
import tarfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import media
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

import datamodules.stream as stream_module
from datamodules.errors import ClipError
from datamodules.isolation import DecodeTimeout, DecoderCrashed, IsolatedDecoder
from datamodules.policies import DataPolicies
from datamodules.preprocessing import Preprocessing
from datamodules.pretrain import AVPretrainDataModule
from datamodules.sources import SourceConfig, open_source
from datamodules.stream import ClipStream, StreamSettings

PRE = Preprocessing(clip_seconds=0.5, num_frames=2, frame_size=32, num_mel_bins=32, audio_frames=48)
NUM_GOOD = 11


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stream")
    for i in range(NUM_GOOD):
        media.write_av_clip(root / f"clip {i:02d}.mp4", seconds=1.5, size=32, fps=8, tone_hz=300 + 40 * i)
    media.write_empty(root / "empty.mp4")
    media.write_text(root / "notes.mp4")
    return root


def _read_rank(root: Path, rank: int, world_size: int, num_workers: int, epoch: int, **settings: Any) -> list[dict]:
    stream = ClipStream(open_source(SourceConfig(path=str(root))), StreamSettings(
        preprocessing=PRE, batch_size=3, clips_per_video=2, num_workers=num_workers, rank=rank,
        world_size=world_size, **settings))
    stream.set_position(epoch)
    batches = list(DataLoader(stream, batch_size=None, num_workers=num_workers))
    assert len(batches) == len(stream)
    return batches


def _clips(batches: list[dict]) -> list[tuple[str, float]]:
    return [(Path(p).name, round(float(s), 3)) for b in batches for p, s in zip(b["meta"]["path"], b["meta"]["start_s"])]


def test_two_ranks_two_workers_read_every_clip_exactly_once(folder: Path) -> None:
    per_rank = [_read_rank(folder, rank, 2, 2, epoch=0) for rank in range(2)]
    assert len(per_rank[0]) == len(per_rank[1])  # DDP ranks step together
    batches = per_rank[0] + per_rank[1]
    clips = _clips(batches)
    assert len(clips) == len(set(clips)) == 2 * NUM_GOOD  # none repeated, none lost
    assert Counter(name for name, _ in clips) == {f"clip {i:02d}.mp4": 2 for i in range(NUM_GOOD)}
    seen = [Path(n).name for b in batches for n in b["meta"]["videos_seen"]]
    assert sorted(seen) == sorted([f"clip {i:02d}.mp4" for i in range(NUM_GOOD)] + ["empty.mp4", "notes.mp4"])
    skipped = {Path(s["path"]).name: s["reason"] for b in batches for s in b["meta"]["skipped"]}
    assert skipped == {"empty.mp4": "empty_file", "notes.mp4": "unreadable"}
    assert all(b["video"].shape[1:] == (3, 2, 32, 32) for b in batches if len(b["meta"]["path"]))


def test_shards_split_across_ranks_and_workers_give_every_sample_once(folder: Path, tmp_path: Path) -> None:
    video = (folder / "clip 00.mp4").read_bytes()
    for shard, size in enumerate([5, 2, 4]):  # uneven shards: some are split between readers
        with tarfile.open(tmp_path / f"train-{shard}.tar", "w") as tar:
            for i in range(size):
                info = tarfile.TarInfo(f"s{shard}_{i}.mp4")
                info.size = len(video)
                tar.addfile(info, io.BytesIO(video))
    names = []
    counts = []
    for rank in range(2):
        stream = ClipStream(open_source(SourceConfig(path=str(tmp_path / "train-{0..2}.tar"))), StreamSettings(
            preprocessing=PRE, batch_size=2, clips_per_video=2, num_workers=2, rank=rank, world_size=2))
        batches = list(DataLoader(stream, batch_size=None, num_workers=2))
        counts.append(len(batches))
        names += [name.rsplit(":", 1)[1] for batch in batches for name in batch["meta"]["path"]]
    assert counts[0] == counts[1] == len(stream)
    expected = [f"s{shard}_{i}" for shard, size in enumerate([5, 2, 4]) for i in range(size)]
    assert sorted(names) == sorted(expected * 2)  # 2 clips of every sample, none repeated


def test_a_shard_is_read_once_per_epoch_even_across_many_batches(folder: Path, tmp_path: Path) -> None:
    video = (folder / "clip 00.mp4").read_bytes()
    with tarfile.open(tmp_path / "one.tar", "w") as tar:
        for i in range(7):
            info = tarfile.TarInfo(f"s_{i}.mp4")
            info.size = len(video)
            tar.addfile(info, io.BytesIO(video))
    source = open_source(SourceConfig(path=str(tmp_path / "one.tar")))
    opened = []
    videos = source.videos
    source.videos = lambda group, skip=0: opened.append(skip) or videos(group, skip)
    stream = ClipStream(source, StreamSettings(preprocessing=PRE, batch_size=2))
    batches = list(DataLoader(stream, batch_size=None))
    assert len(batches) == 4 and sum(len(b["meta"]["path"]) for b in batches) == 7
    assert opened == [0]  # one pass over the tar for 4 windows
    stream.set_position(0, batches_done=2)  # a resume opens it once more, past the trained samples
    assert sum(len(b["meta"]["path"]) for b in DataLoader(stream, batch_size=None)) == 3
    assert opened == [0, 4]


def test_each_epoch_reshuffles_the_same_clips(folder: Path) -> None:
    epochs = [_clips(_read_rank(folder, 0, 1, 0, epoch=e)) for e in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) and epochs[0] != epochs[1]
    assert epochs[0] == _clips(_read_rank(folder, 0, 1, 0, epoch=0))  # a function of (seed, epoch)


def test_random_sampling_draws_new_starts_each_epoch(folder: Path) -> None:
    starts = [set(_clips(_read_rank(folder, 0, 1, 0, epoch=e, sampling="random"))) for e in range(2)]
    assert len(starts[0]) == 2 * NUM_GOOD and starts[0] != starts[1]
    assert all(0.0 <= s <= 1.0 for _, s in starts[0])  # 1.5 s files, 0.5 s clips


class _Killed(Exception):
    """Stands in for a job killed mid-epoch."""


class _Recorder(pl.LightningModule):
    """Records the clips of every batch it trains on; fails on purpose at one step."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.fail_at = fail_at
        self.seen: list[tuple[str, float]] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if self.global_step == self.fail_at:
            raise _Killed
        self.seen += _clips([batch])
        return self.weight * 0.0 + self.weight.square()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(folder: Path, tmp: Path, module: _Recorder, ckpt_path: str | None = None) -> None:
    datamodule = AVPretrainDataModule(SourceConfig(path=str(folder)), StreamSettings(
        preprocessing=PRE, batch_size=3, clips_per_video=2, num_workers=2, sampling="random"))
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp,
                         callbacks=[ModelCheckpoint(dirpath=tmp, filename="last", every_n_train_steps=1)])
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)


def test_resume_mid_epoch_continues_without_repeating_clips(folder: Path, tmp_path: Path) -> None:
    full = _Recorder()
    _fit(folder, tmp_path / "full", full)
    interrupted = _Recorder(fail_at=13)  # 10 batches per epoch: the 4th batch of the second epoch
    with pytest.raises(_Killed):
        _fit(folder, tmp_path / "cut", interrupted)
    assert 0 < len(interrupted.seen) < len(full.seen)
    resumed = _Recorder()
    _fit(folder, tmp_path / "cut", resumed, ckpt_path=str(tmp_path / "cut" / "last.ckpt"))
    assert interrupted.seen + resumed.seen == full.seen


def _sleepy_decode(path: str, *args: Any) -> Any:
    if "clip 03" in path:
        time.sleep(30)
    if "clip 04" in path:
        os.abort()
    return _real_decode(path, *args)


_real_decode = stream_module.decode_video_clips


def test_a_hanging_or_crashing_decoder_skips_that_file_only(folder: Path, monkeypatch) -> None:
    monkeypatch.setattr(stream_module, "decode_video_clips", _sleepy_decode)
    started = time.perf_counter()
    batches = _read_rank(folder, 0, 1, 0, epoch=0, policies=DataPolicies(file_timeout_s=2.0))
    assert time.perf_counter() - started < 25
    skipped = {Path(s["path"]).name: s["reason"] for b in batches for s in b["meta"]["skipped"]}
    assert skipped["clip 03.mp4"] == "timeout" and skipped["clip 04.mp4"] == "decoder_crashed"
    assert len(_clips(batches)) == 2 * (NUM_GOOD - 2)


def test_isolated_decoder_survives_timeouts_and_crashes() -> None:
    decoder = IsolatedDecoder(timeout_s=1.0)
    with pytest.raises(DecodeTimeout):
        decoder.call(time.sleep, 5)
    assert decoder.call(pow, 2, 5) == 32
    with pytest.raises(DecoderCrashed, match="signal 6"):
        decoder.call(os.abort)
    with pytest.raises(ValueError):
        decoder.call(int, "x")
    assert decoder.call(pow, 3, 2) == 9
    decoder.close()


def _half_broken(path: str, *args: Any) -> Any:
    results = _real_decode(path, *args)
    if "clip 05" in path:
        results[1] = ClipError("decode_failed", "damaged", path)
    return results


def test_corrupt_policy_skip_drops_every_clip_of_a_failing_file(folder: Path, monkeypatch) -> None:
    monkeypatch.setattr(stream_module, "decode_video_clips", _half_broken)
    readable = _clips(_read_rank(folder, 0, 1, 0, epoch=0))
    skip = _clips(_read_rank(folder, 0, 1, 0, epoch=0, policies=DataPolicies(corrupt="skip")))
    assert Counter(n for n, _ in readable)["clip 05.mp4"] == 1
    assert Counter(n for n, _ in skip)["clip 05.mp4"] == 0
