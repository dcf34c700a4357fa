"""File names that are not valid UTF-8: Linux names are bytes, and a good video must not be lost
(or crash a user's call) because of its name."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import media
import pytest

import avssl
from avssl.backbones.registry import build_encoder
from avssl.backbones.spec import BackboneSpec
from avssl.export import export_encoder
from datamodules.preprocessing import Preprocessing
from datamodules.pretrain import AVPretrainDataModule
from datamodules.report import DataReport
from datamodules.sources import SourceConfig
from datamodules.stream import StreamSettings

PRE = Preprocessing(clip_seconds=1.0, num_frames=2, frame_size=32, num_mel_bins=32, audio_frames=96)


def non_utf8_name(folder: Path, raw: bytes) -> str:
    """The path of ``folder / raw`` as Python's file functions give it (`os.fsdecode`)."""
    return os.fsdecode(os.fsencode(folder) + b"/" + raw)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A good clip named ``clip_\\xff.mp4`` and a text file named ``broken_\\xfe.mp4``."""
    root = tmp_path_factory.mktemp("names")
    source = media.write_av_clip(root.parent / f"{root.name}-source.mp4", seconds=2.0)
    shutil.copy(source, non_utf8_name(root, b"clip_\xff.mp4"))
    media.write_text(Path(non_utf8_name(root, b"broken_\xfe.mp4")))
    return root


def test_a_non_utf8_name_is_streamed_and_reported(folder: Path, tmp_path: Path) -> None:
    good, broken = non_utf8_name(folder, b"clip_\xff.mp4"), non_utf8_name(folder, b"broken_\xfe.mp4")
    module = AVPretrainDataModule(SourceConfig(path=str(folder)), StreamSettings(
        preprocessing=PRE, batch_size=4, clips_per_video=2))
    module.setup("fit")
    report = DataReport()
    for batch in module.train_dataloader():
        report.add_batch(batch["meta"])
    assert report.clips == 2 and report.files_seen == 2
    assert [(s["path"], s["reason"]) for s in report.skipped] == [(broken, "unreadable")]

    out = tmp_path / "data_report.json"
    report.write_json(out)
    written = out.read_bytes()
    written.decode("ascii")  # undecodable bytes are \udcXX escapes: the file is plain JSON text
    path = json.loads(written)["skipped"][0]["path"]
    assert os.fsencode(path) == os.fsencode(folder) + b"/broken_\xfe.mp4"


@pytest.mark.parametrize("as_bytes", [False, True])
def test_embed_file_on_a_non_utf8_name(folder: Path, tmp_path: Path, as_bytes: bool) -> None:
    spec = BackboneSpec(embed_dim=16, num_heads=2, modality_specific_depth=1, shared_depth=1,
                        audio_frames=PRE.audio_frames, num_mel_bins=PRE.num_mel_bins,
                        num_frames=PRE.num_frames, frame_size=PRE.frame_size)
    model = avssl.load_backbone(export_encoder(build_encoder(spec), PRE, tmp_path / "export"))
    path = non_utf8_name(folder, b"clip_\xff.mp4")
    embedding = model.embed_file(os.fsencode(path) if as_bytes else path)
    assert {k: tuple(v.shape) for k, v in embedding.items()} == {"audio": (16,), "video": (16,), "joint": (16,)}
