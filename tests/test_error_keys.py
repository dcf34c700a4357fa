"""Data errors name the key or argument the user actually set: data.root or data.source.path in
pretraining, SOURCE for `python -m avssl.data stats`, data.source.extensions for the endings (the
probe's keys are tested in test_probe_split.py)."""

from __future__ import annotations

from pathlib import Path

import media
import pytest

from avssl.data.__main__ import main as data_main
from avssl.pretrain import main as pretrain_main

TINY = ["backbone.tower_width=4", "backbone.embed_dim=16", "data.preprocessing.clip_seconds=1.0",
        "data.preprocessing.num_mel_bins=16", "data.preprocessing.audio_frames=32",
        "data.preprocessing.frame_size=16", "data.preprocessing.num_frames=2", "data.num_workers=0",
        "probe.enabled=false", "trainer.enable_progress_bar=false"]


def _no_videos(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("no videos here")
    return folder


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_stats_names_its_source_argument(tmp_path: Path, capsys) -> None:
    assert data_main(["stats", str(tmp_path / "nowhere"), "--no-progress"]) == 2
    err = _error(capsys)
    assert f"SOURCE={tmp_path / 'nowhere'}: does not exist" in err and "data.source.path" not in err
    assert data_main(["stats", str(_no_videos(tmp_path / "empty")), "data.num_workers=0", "--no-progress"]) == 2
    err = _error(capsys)
    assert "point SOURCE at a folder of videos, or add the extension to data.source.extensions" in err
    assert "data.root" not in err and "data.extensions" not in err


@pytest.mark.parametrize("key", ["data.root", "data.source.path"])
def test_pretraining_names_the_key_that_set_the_folder(tmp_path: Path, capsys, key: str) -> None:
    run = f"run.dir={tmp_path / 'run'}"
    assert pretrain_main([*TINY, f"{key}={tmp_path / 'nowhere'}", run]) == 2
    err = _error(capsys)
    assert f"{key}={tmp_path / 'nowhere'}: does not exist" in err
    assert ({"data.root", "data.source.path"} - {key}).pop() not in err
    assert pretrain_main([*TINY, f"{key}={_no_videos(tmp_path / 'empty')}", run]) == 2
    err = _error(capsys)
    assert f"point {key} at a folder of videos, or add the extension to data.source.extensions" in err
    assert "data.extensions" not in err


def test_a_folder_whose_files_all_fail_names_the_source_key(tmp_path: Path, capsys) -> None:
    videos = tmp_path / "videos"
    media.write_av_clip(videos / "no_audio.mp4", size=16, fps=4, with_audio=False)
    media.write_text(videos / "text.mp4")
    args = [*TINY, f"data.source.path={videos}", "data.batch_size=2", f"run.dir={tmp_path / 'run'}"]
    assert pretrain_main(args) == 2
    err = _error(capsys)
    assert "point data.source.path at another folder" in err and "data.root" not in err
