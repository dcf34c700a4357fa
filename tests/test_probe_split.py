"""Degenerate labeled splits are refused, small ones warned about, skipped files listed where the
messages say: in the labeled data module, the probe CLI and pretraining's probe callback."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import media
import pytest

from avssl.backbones.registry import build_encoder
from avssl.config import load_config
from avssl.export import export_encoder
from avssl.pretrain import main as pretrain_main
from avssl.probe import main as probe_main
from datamodules.errors import DataSourceError, NoUsableClipsError
from datamodules.labeled import LabeledClipDataModule
from datamodules.report import DataReport
from datamodules.split_check import MIN_TEST_CLIPS

TINY = ["backbone.tower_width=4", "backbone.embed_dim=16", "data.preprocessing.clip_seconds=1.0",
        "data.preprocessing.num_mel_bins=16", "data.preprocessing.audio_frames=32",
        "data.preprocessing.frame_size=16", "data.preprocessing.num_frames=2", "data.num_workers=0"]
PRE = load_config(TINY).data.preprocessing


def write_class(folder: Path, good: int, broken: int = 0, corrupt: int = 0) -> None:
    """``good`` clips, ``broken`` text files named .mp4 (skipped by the scan) and ``corrupt``
    clips whose headers open but whose frames do not decode (skipped by the probe)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(good):
        media.write_av_clip(folder / f"good_{i}.mp4", size=16, fps=4)
    for i in range(broken):
        media.write_text(folder / f"broken_{i}.mp4")
    if corrupt:
        source = media.write_av_clip(folder.parent / f".{folder.name}_source.mp4", size=16, fps=4)
        for i in range(corrupt):
            media.write_corrupted(source, folder / f"corrupt_{i}.mp4", seed=i)
        source.unlink()


@pytest.fixture(scope="module")
def one_class_usable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two class folders; every clip of ``dog`` is broken."""
    root = tmp_path_factory.mktemp("one_class_usable")
    write_class(root / "cat", good=4)
    write_class(root / "dog", good=0, broken=3)
    return root


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = load_config(TINY)
    encoder = build_encoder(config.backbone.resolve(config.data.preprocessing))
    return export_encoder(encoder, config.data.preprocessing, tmp_path_factory.mktemp("export"))


def _module(root: Path, **kwargs) -> LabeledClipDataModule:
    return LabeledClipDataModule(str(root), PRE, batch_size=4, num_workers=0, **kwargs)


def test_a_class_whose_clips_are_all_broken_leaves_one_class_and_is_refused(one_class_usable: Path) -> None:
    report = DataReport(location="probe.json ('skipped')")
    module = _module(one_class_usable, key="probe.data", report=report)
    with pytest.raises(DataSourceError) as caught:
        module.setup()
    message = str(caught.value)
    assert message.startswith(f"probe.data={one_class_usable}: the train split has usable clips of 1 class(es) (cat)")
    assert "no usable train clip for: dog" in message and "probe.json ('skipped')" in message
    assert "\n" not in message
    assert sorted(Path(s["path"]).name for s in report.skipped) == ["broken_0.mp4", "broken_1.mp4", "broken_2.mp4"]


def test_a_class_only_in_test_is_refused(tmp_path: Path) -> None:
    write_class(tmp_path / "train" / "a", good=2)
    write_class(tmp_path / "train" / "b", good=2)
    write_class(tmp_path / "train" / "c", good=0, broken=1)
    for name in ("a", "b", "c"):
        write_class(tmp_path / "test" / name, good=1)
    with pytest.raises(DataSourceError, match=r"class\(es\) c have test clips but no usable train clip"):
        _module(tmp_path).setup()


def test_a_small_test_split_is_a_warning_that_names_the_minimum(tmp_path: Path, caplog) -> None:
    write_class(tmp_path / "a", good=3, broken=1)
    write_class(tmp_path / "b", good=3)
    module = _module(tmp_path, key="--data", report=DataReport(location="out.json ('skipped')"))
    with caplog.at_level(logging.WARNING):
        module.setup()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"--data={tmp_path}: the test split has only 2 clips (a: 1, b: 1), fewer than {MIN_TEST_CLIPS}" in w
               for w in warnings), warnings
    # The scan's summary of skipped files points to where this caller lists them, not data_report.json.
    assert any("listed with its reason in out.json ('skipped')" in w for w in warnings), warnings
    assert not any("data_report.json" in w for w in warnings), warnings


def test_the_probe_cli_refuses_a_degenerate_split_and_writes_the_skipped_files(one_class_usable: Path, export: Path,
                                                                               tmp_path: Path, capsys) -> None:
    out = tmp_path / "probe.json"
    assert probe_main([str(export), "--data", str(one_class_usable), "--out", str(out), "--num-workers", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("avssl.probe: error: --data=") and "\n" not in err, err
    assert "100.0%" not in err
    written = json.loads(out.read_text())
    assert written["skipped_clips"] == 3 and {s["reason"] for s in written["skipped"]} == {"unreadable"}


def test_files_that_fail_to_decode_can_leave_a_split_degenerate_at_probe_time(tmp_path: Path, export: Path,
                                                                             capsys) -> None:
    write_class(tmp_path / "data" / "cat", good=3)
    write_class(tmp_path / "data" / "dog", good=0, corrupt=3)
    out = tmp_path / "probe.json"
    assert probe_main([str(export), "--data", str(tmp_path / "data"), "--out", str(out), "--num-workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "the train split has usable clips of 1 class(es) (cat)" in err
    reasons = {Path(s["path"]).name: s["reason"] for s in json.loads(out.read_text())["skipped"]}
    assert set(reasons.values()) == {"decode_failed"} and len(reasons) == 3


def _unlabeled(root: Path) -> Path:
    for i in range(4):
        media.write_av_clip(root / f"clip_{i}.mp4", size=16, fps=4)
    return root


def test_pretraining_refuses_degenerate_probe_data_before_training(one_class_usable: Path, tmp_path: Path,
                                                                   capsys) -> None:
    run_dir = tmp_path / "run"
    args = [*TINY, f"data.root={_unlabeled(tmp_path / 'videos')}", f"probe.data={one_class_usable}", f"run.dir={run_dir}"]
    assert pretrain_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"avssl.pretrain: error: probe.data={one_class_usable}:") and "\n" not in err, err
    assert "data_report.json (its 'probe' section)" in err
    assert not (run_dir / "checkpoints").exists()  # refused before any training
    probe_section = json.loads((run_dir / "data_report.json").read_text())["probe"]
    assert probe_section["files_seen"] == 7 and probe_section["counts_by_reason"] == {"unreadable": 3}


def test_pretraining_keeps_its_export_when_the_probe_data_turns_out_degenerate(tmp_path: Path, caplog) -> None:
    labeled = tmp_path / "labeled"
    write_class(labeled / "cat", good=3)
    write_class(labeled / "dog", good=0, corrupt=3)  # passes the scan, fails to decode in the probe
    run_dir = tmp_path / "run"
    args = [*TINY, f"data.root={_unlabeled(tmp_path / 'videos')}", f"probe.data={labeled}", f"run.dir={run_dir}",
            "trainer.max_steps=1", "data.batch_size=2", "trainer.enable_progress_bar=false"]
    with caplog.at_level(logging.ERROR):
        assert pretrain_main(args) == 0
    assert (run_dir / "export" / "model.safetensors").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(m.startswith("linear probe (random_init) not run: probe.data=") for m in errors), errors
    assert any(m.startswith("linear probe (pretrained) not run: probe.data=") for m in errors), errors
    probe_section = json.loads((run_dir / "data_report.json").read_text())["probe"]
    assert probe_section["counts_by_reason"] == {"decode_failed": 3}


def test_no_usable_probe_clip_names_the_probe_key_not_data_root(tmp_path: Path, export: Path, capsys) -> None:
    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
        (tmp_path / "data" / name / "clip.avi.txt").write_text("not a video")
    assert probe_main([str(export), "--data", str(tmp_path / "data"), "--out", str(tmp_path / "p.json")]) == 2
    err = capsys.readouterr().err
    assert "point --data at a folder of videos, or add the extension to --extensions" in err
    assert "data.root" not in err and "data.extensions" not in err
    for name in ("a", "b"):
        write_class(tmp_path / "data" / name, good=0, broken=1)
    with pytest.raises(NoUsableClipsError) as caught:
        _module(tmp_path / "data", key="probe.data").setup()
    assert "point probe.data at another folder" in str(caught.value) and "data.root" not in str(caught.value)
