"""Objectives that compare views of a clip: the view helpers on the datamodule's row layout, and the
config-time check of an objective's `min_views` against ``data.views_per_video``."""

from __future__ import annotations

from pathlib import Path

import media
import pytest
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from avssl.config import ConfigError, load_config
from avssl.objectives import OBJECTIVES, Objective, ObjectiveOutput, register_objective
from avssl.objectives.views import by_view, same_video, views_in
from datamodules.collate import collate_clips
from datamodules.preprocessing import Preprocessing
from datamodules.sources import SourceConfig, open_source
from datamodules.stream import ClipStream, StreamSettings

PRE = Preprocessing(clip_seconds=0.5, num_frames=2, frame_size=16, num_mel_bins=16, audio_frames=24)


def _batch(video_ids: list[int], views: int) -> dict:
    """A collated batch of clips with the given video ids, each as `views` rows in the stream's order;
    row values encode (clip, view) as 10 * clip + view."""
    items = [{"video": torch.full((3, 1, 2, 2), 10.0 * clip + view), "audio": torch.zeros(1, 4, 4),
              "meta": {"path": f"v{vid}.mp4", "start_s": 0.0, "video_id": vid, "view": view, "av_offset_s": 0.0}}
             for clip, vid in enumerate(video_ids) for view in range(views)]
    return collate_clips(items)


@pytest.mark.parametrize("views", [1, 2, 3])
def test_by_view_gives_each_view_of_every_clip(views: int) -> None:
    batch = _batch([5, 2, 9, 2], views)
    assert views_in(batch["meta"]) == views
    grouped = by_view(batch["video"], views)  # (V, B, 3, 1, 2, 2)
    assert grouped.shape == (views, 4, 3, 1, 2, 2)
    for v in range(views):
        assert grouped[v, :, 0, 0, 0, 0].tolist() == [10.0 * c + v for c in range(4)]
        assert by_view(batch["meta"]["video_id"], views)[v].tolist() == [5, 2, 9, 2]
        assert by_view(batch["meta"]["view"], views)[v].tolist() == [v] * 4


def test_by_view_refuses_rows_that_are_not_whole_clips() -> None:
    with pytest.raises(ValueError, match="5 rows cannot hold whole clips of views=2"):
        by_view(torch.zeros(5, 3), 2)
    with pytest.raises(ValueError, match="views=0"):
        by_view(torch.zeros(4, 3), 0)


def test_an_empty_batch_has_one_view() -> None:
    assert views_in(collate_clips([])["meta"]) == 1


def test_same_video_marks_the_views_of_a_clip_and_other_clips_of_its_video() -> None:
    batch = _batch([5, 2, 5], views=2)  # rows: 5 5 2 2 5 5
    mask = same_video(batch["meta"])
    ids = [5, 5, 2, 2, 5, 5]
    assert mask.dtype == torch.bool and mask.shape == (6, 6)
    assert mask.tolist() == [[a == b for b in ids] for a in ids]
    assert mask.diagonal().all()


def test_the_helpers_follow_the_streamed_layout(tmp_path: Path) -> None:
    for i in range(3):
        media.write_av_clip(tmp_path / f"clip_{i}.mp4", seconds=1.5, size=16, fps=8, tone_hz=300 + 40 * i)
    stream = ClipStream(open_source(SourceConfig(path=str(tmp_path))),
                        StreamSettings(preprocessing=PRE, batch_size=2, views_per_video=2, sampling="random"))
    stream.set_position(0)
    batches = [b for b in DataLoader(stream, batch_size=None) if b["meta"]["path"]]
    assert batches
    for batch in batches:
        meta = batch["meta"]
        assert views_in(meta) == 2
        ids = by_view(meta["video_id"], 2)  # (2, B)
        assert torch.equal(ids[0], ids[1]) and by_view(meta["view"], 2).tolist() == [[0] * ids.shape[1], [1] * ids.shape[1]]
        starts = by_view(meta["start_s"], 2)
        assert not torch.equal(starts[0], starts[1])  # two views of a clip: their own seconds
        assert same_video(meta).sum().item() == 4 * ids.shape[1]  # each row: itself and its other view


class TwoViews(Objective):
    """A stand-in for a two-view objective (MAViL's, XKD's): the two views' video embeddings agree."""

    requires = frozenset({"video_embedding"})
    min_views = 2

    def __init__(self, pass_name: str = "unmasked") -> None:
        super().__init__()
        self.pass_names = (pass_name,)

    def forward(self, passes: dict[str, dict[str, Tensor]], batch: dict) -> ObjectiveOutput:
        first, second = by_view(passes[self.pass_names[0]]["video_embedding"], views_in(batch["meta"]))[:2]
        return ObjectiveOutput({"agreement": (first - second).pow(2).mean()})


@pytest.fixture
def two_views():
    register_objective("two_views")(TwoViews)
    yield "two_views"
    del OBJECTIVES["two_views"]


def test_a_two_view_objective_needs_two_views_per_video(two_views: str) -> None:
    args = ["recipe=default", f"objectives.{two_views}.weight=1.0"]
    with pytest.raises(ConfigError) as err:
        load_config([*args, "data.views_per_video=1"])
    message = str(err.value)
    assert message.startswith(f"objectives.{two_views} compares 2 views of each clip, but data.views_per_video=1")
    assert "set data.views_per_video=2" in message and "\n" not in message
    for views in (2, 3):
        assert load_config([*args, f"data.views_per_video={views}"]).data.views_per_video == views
    load_config([*args, "data.views_per_video=1", f"objectives.{two_views}.weight=0"])  # turned off: not checked


def test_one_view_objectives_accept_any_number_of_views() -> None:
    assert all(cls.min_views == 1 for name, cls in OBJECTIVES.items() if name != "two_views")
    assert load_config(["recipe=default", "data.views_per_video=2"]).data.views_per_video == 2
