"""The whole unlabeled set between rounds (XDC): one plain clip of every video through the pretraining
stream, embedded from a callback at an epoch's start, keyed by video_id, bad files skipped and reported."""

from __future__ import annotations

import datetime
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import media
import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
from pytorch_lightning.strategies import DDPStrategy

from avssl.config import load_config
from avssl.module import AVPretrainModule
from avssl.objectives.whole_set import SetEmbeddings, embed_whole_set, gather_set
from datamodules.augmentation import Augmentation, AudioAugmentation, VideoAugmentation
from datamodules.errors import StrictDataError
from datamodules.pretrain import AVPretrainDataModule
from datamodules.report import DataReport
from datamodules.sources import SourceConfig
from datamodules.stream import ClipStream, StreamSettings

PRE = ["data.preprocessing.clip_seconds=0.5", "data.preprocessing.num_frames=2", "data.preprocessing.frame_size=32",
       "data.preprocessing.num_mel_bins=32", "data.preprocessing.audio_frames=48", "data.preprocessing.crop=random"]
TINY = ["recipe=default", "backbone.tower_width=4", "backbone.embed_dim=16", "optim.warmup_epochs=0",
        "objectives.av_infonce.projection_dim=8", "objectives.av_infonce.projection_hidden_dim=16",
        "objectives.av_infonce.gather_distributed=false", *PRE]
GOOD = {f"clip_{i}.mp4": i + 1 for i in range(4)}  # sorted names: broken.mp4 is video 0, cut.mp4 video 5
BAD = {"broken.mp4", "cut.mp4"}
# What training does to clips, and the pass must not: several clips and views, random starts and crops, augmentation
TRAINING = dict(batch_size=2, clips_per_video=2, views_per_video=2, sampling="random", av_offset_s=(0.0, 0.25),
                augment=Augmentation(video=VideoAugmentation(brightness=0.4), audio=AudioAugmentation(gain_db=[-6.0, 6.0])))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("whole_set")
    for i, name in enumerate(GOOD):
        media.write_av_clip(root / name, seconds=1.5, size=32, fps=8, tone_hz=300 + 40 * i)
    media.write_random_bytes(root / "broken.mp4")  # garbage named .mp4
    media.write_truncated(root / "clip_0.mp4", root / "cut.mp4")  # an interrupted copy
    return root


def _settings(**changes) -> StreamSettings:
    return StreamSettings(**{"preprocessing": load_config(TINY).data.preprocessing, **TRAINING, **changes})


def _datamodule(root: Path, strict: bool = False, **changes) -> AVPretrainDataModule:
    return AVPretrainDataModule(SourceConfig(path=str(root)), _settings(**changes), strict=strict)


def _ids(batches: list[dict]) -> list[int]:
    return [int(v) for b in batches for v in b["meta"]["video_id"]]


def _skipped(batches: list[dict]) -> dict[str, str]:
    return {Path(s["path"]).name: s["reason"] for b in batches for s in b["meta"]["skipped"]}


def test_the_loader_gives_one_plain_centred_clip_per_good_video_and_skips_the_bad_ones(folder: Path) -> None:
    datamodule = _datamodule(folder)
    assert datamodule.num_videos == len(GOOD) + len(BAD)
    batches = list(datamodule.whole_set_dataloader())
    assert sorted(_ids(batches)) == sorted(GOOD.values())  # each good video once, one clip, one view
    assert all(b["meta"]["view"].eq(0).all() and b["meta"]["av_offset_s"].eq(0).all() for b in batches if b["meta"]["path"])
    assert set(_skipped(batches)) == BAD
    # exactly the clips of a plain stream: uniform (centred) start, centre crop, no augmentation
    plain = ClipStream(datamodule.source, _settings(clips_per_video=1, views_per_video=1, sampling="uniform",
                                                    av_offset_s=(0.0, 0.0), augment=Augmentation(),
                                                    preprocessing=replace(datamodule.settings.preprocessing, crop="center")))
    plain.set_position(0)
    expected = {int(vid): video for b in list(torch.utils.data.DataLoader(plain, batch_size=None))
                for vid, video in zip(b["meta"]["video_id"], b["video"])}
    got = {int(vid): video for b in batches for vid, video in zip(b["meta"]["video_id"], b["video"])}
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)
    again = {int(vid): video for b in list(datamodule.whole_set_dataloader())
             for vid, video in zip(b["meta"]["video_id"], b["video"])}
    assert all(torch.equal(again[k], got[k]) for k in got)  # the same clips in every round


def test_the_loader_splits_the_set_over_ranks_and_workers(folder: Path) -> None:
    per_rank = []
    for rank in range(2):
        datamodule = _datamodule(folder, num_workers=2)
        datamodule.trainer = SimpleNamespace(global_rank=rank, world_size=2)  # as a Trainer under DDP sets them
        per_rank.append(list(datamodule.whole_set_dataloader()))
    assert len(per_rank[0]) == len(per_rank[1])  # every rank yields as many batches: none waits for another
    ids = [vid for batches in per_rank for vid in _ids(batches)]
    assert sorted(ids) == sorted(GOOD.values())  # every good video read by exactly one (rank, worker)
    assert {name for batches in per_rank for name in _skipped(batches)} == BAD


def test_strict_data_stops_the_pass_at_the_first_bad_file(folder: Path) -> None:
    with pytest.raises(StrictDataError, match="data.strict=false"):
        list(_datamodule(folder, strict=True).whole_set_dataloader())


class Round(pl.Callback):
    """What an XDC-style objective's callback does at an epoch's start: embed the whole set."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: AVPretrainModule) -> None:
        buffers = {k: v.clone() for k, v in pl_module.backbone.state_dict().items()}
        backbone = pl_module.backbone
        self.result = embed_whole_set(trainer, lambda b: {"audio": backbone.encode_audio(b["audio"]),
                                                          "video": backbone.encode_video(b["video"])})
        self.training_after = pl_module.training
        self.untouched = all(torch.equal(v, backbone.state_dict()[k]) for k, v in buffers.items())
        pl_module.eval()  # the reference: the same weights' eval-mode embeddings of the plain clips
        with torch.no_grad():
            self.direct = {int(v): e for b in trainer.datamodule.whole_set_dataloader() if b["meta"]["path"]
                           for v, e in zip(b["meta"]["video_id"], backbone.encode_audio(b["audio"]))}
        pl_module.train()


def test_a_callback_gets_one_embedding_per_good_video_keyed_by_video_id(folder: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = AVPretrainModule(load_config(TINY))
    datamodule = _datamodule(folder)
    round_ = Round()
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                         callbacks=[round_])
    trainer.fit(module, datamodule=datamodule)
    result: SetEmbeddings = round_.result
    assert result.video_ids.tolist() == sorted(GOOD.values()) and result.num_videos == len(GOOD) + len(BAD)
    dim = module.backbone.embed_dim
    assert result.embeddings["audio"].shape == result.embeddings["video"].shape == (len(GOOD), dim)
    assert torch.isfinite(result.embeddings["audio"]).all()
    assert result.rows(torch.tensor([0, 1, 5, 4, 2])).tolist() == [-1, 0, -1, 3, 1]  # skipped videos: -1
    assert {Path(s["path"]).name for s in result.report.skipped} == BAD
    assert result.report.clips == len(GOOD) and result.report.files_seen == len(GOOD) + len(BAD)
    assert datamodule.report.sections["whole_set"] is result.report  # written into data_report.json
    assert round_.training_after and round_.untouched  # eval mode in the pass (BN statistics kept), then training again
    # the rows are the eval-mode embeddings of the plain clips, in video_id order
    torch.testing.assert_close(result.embeddings["audio"], torch.stack([round_.direct[v] for v in sorted(round_.direct)]))


def test_without_the_pretraining_datamodule_the_error_says_what_to_pass() -> None:
    trainer = SimpleNamespace(datamodule=None)
    with pytest.raises(RuntimeError, match=r"fit with datamodule=AVPretrainDataModule"):
        embed_whole_set(trainer, lambda batch: {})


WORLD = 2


def _gather_worker(rank: int, init_file: str, out_dir: str) -> None:
    torch_dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                                  timeout=datetime.timedelta(seconds=60))
    try:
        trainer = SimpleNamespace(world_size=WORLD, strategy=DDPStrategy())
        report = DataReport()
        if rank == 0:  # three videos embedded, one skipped
            ids, embeddings = torch.tensor([7, 2, 4]), {"audio": torch.tensor([[7.0, 7.5], [2.0, 2.5], [4.0, 4.5]])}
            report.add_batch({"videos_seen": ["a", "b", "c", "d"], "path": ["a", "b", "c"],
                              "skipped": [{"path": "d", "reason": "unreadable", "detail": "x"}]})
        else:  # every video of this rank failed
            ids, embeddings = torch.empty(0, dtype=torch.long), {}
            report.add_batch({"videos_seen": ["e"], "path": [], "skipped": [{"path": "e", "reason": "no_audio", "detail": "y"}]})
        torch.save(gather_set(trainer, ids, embeddings, report), f"{out_dir}/{rank}.pt")
    finally:
        torch_dist.destroy_process_group()


def test_ranks_with_different_numbers_of_rows_gather_everything_on_every_rank(tmp_path: Path) -> None:
    mp.spawn(_gather_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        ids, embeddings, report = torch.load(tmp_path / f"{rank}.pt", weights_only=False)
        assert ids.tolist() == [2, 4, 7]
        assert embeddings["audio"].tolist() == [[2.0, 2.5], [4.0, 4.5], [7.0, 7.5]]
        assert report.files_seen == 5 and report.clips == 3 and report.counts_by_reason() == {"no_audio": 1, "unreadable": 1}
