"""Broken exports and checkpoints: one line naming the file and what is wrong, exit code 2 from the CLIs."""

from __future__ import annotations

import re
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

import avssl
from avssl.backbones.registry import build_encoder
from avssl.config import load_config
from avssl.export import BACKBONE_PREFIX, encoder_from_checkpoint, export_encoder
from avssl.export import main as export_main
from avssl.pretrain import main as pretrain_main
from avssl.probe import main as probe_main

TINY = ["backbone.tower_width=4", "backbone.embed_dim=16", "data.preprocessing.num_mel_bins=16",
        "data.preprocessing.audio_frames=32", "data.preprocessing.frame_size=16", "data.preprocessing.num_frames=2"]


def _config(*overrides: str):
    return load_config([*TINY, *overrides])


def _encoder(config):
    return build_encoder(config.backbone.resolve(config.data.preprocessing))


@pytest.fixture()
def export(tmp_path: Path) -> Path:
    config = _config()
    return export_encoder(_encoder(config), config.data.preprocessing, tmp_path / "export")


def _checkpoint(path: Path, config, state: dict) -> Path:
    torch.save({"hyper_parameters": {"config": asdict(config)},
                "state_dict": {BACKBONE_PREFIX + k: v for k, v in state.items()}}, path)
    return path


@pytest.fixture()
def checkpoint(tmp_path: Path) -> Path:
    config = _config()
    return _checkpoint(tmp_path / "last.ckpt", config, _encoder(config).state_dict())


def _one_line_error(capsys, *parts: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    for part in parts:
        assert part in err, err
    return err


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_a_truncated_weights_file_names_the_file(export: Path) -> None:
    _truncate(export / "model.safetensors")
    with pytest.raises(ValueError, match=r"model\.safetensors is truncated or not a safetensors file .*re-export") as caught:
        avssl.load_backbone(export)
    assert "\n" not in str(caught.value)


def test_weights_that_do_not_fit_config_yaml_name_the_shapes(export: Path) -> None:
    meta = yaml.safe_load((export / "config.yaml").read_text())
    meta["backbone"]["embed_dim"] = 24
    (export / "config.yaml").write_text(yaml.safe_dump(meta))
    with pytest.raises(ValueError, match=r"model\.safetensors: weights do not match config\.yaml: .*shape mismatch for "
                                         r"\S+: checkpoint \[\d+(, \d+)*\] vs config \[\d+(, \d+)*\]") as caught:
        avssl.load_backbone(export)
    assert "\n" not in str(caught.value)


def test_missing_and_unexpected_keys_are_counted(export: Path) -> None:
    state = load_file(export / "model.safetensors")
    dropped = sorted(state)[:3]
    for key in dropped:
        del state[key]
    state["extra.weight"] = torch.zeros(2)
    save_file(state, export / "model.safetensors")
    with pytest.raises(ValueError, match=r"3 missing keys \(e\.g\. .*\); 1 unexpected key \(e\.g\. extra\.weight\)") as caught:
        avssl.load_backbone(export)
    assert all(key in str(caught.value) for key in dropped)


def test_the_probe_cli_turns_a_broken_export_into_one_line(export: Path, tmp_path: Path, capsys) -> None:
    _truncate(export / "model.safetensors")
    assert probe_main([str(export), "--data", str(tmp_path), "--out", str(tmp_path / "p.json")]) == 2
    _one_line_error(capsys, "avssl.probe: error:", "model.safetensors is truncated")


def test_init_from_a_broken_export_is_a_config_error(export: Path, tmp_path: Path, capsys) -> None:
    _truncate(export / "model.safetensors")
    assert pretrain_main([*TINY, f"backbone.init_from={export}", f"run.dir={tmp_path / 'run'}"]) == 2
    _one_line_error(capsys, "backbone.init_from=", "model.safetensors is truncated")


@pytest.mark.parametrize("damage", ["empty", "truncated", "text"])
def test_a_damaged_checkpoint_is_one_line_from_both_clis(checkpoint: Path, tmp_path: Path, capsys, damage: str) -> None:
    if damage == "empty":
        checkpoint.write_bytes(b"")
    elif damage == "truncated":
        _truncate(checkpoint)
    else:
        checkpoint.write_text("not a checkpoint")
    assert export_main([str(checkpoint), "--out", str(tmp_path / "out")]) == 2
    _one_line_error(capsys, "avssl.export: error:", str(checkpoint), "could not be read as a PyTorch checkpoint")
    assert probe_main([str(checkpoint), "--data", str(tmp_path), "--out", str(tmp_path / "p.json")]) == 2
    _one_line_error(capsys, "avssl.probe: error:", str(checkpoint))


def test_a_checkpoint_whose_weights_do_not_fit_its_config(tmp_path: Path, capsys) -> None:
    wrong = _checkpoint(tmp_path / "wrong.ckpt", _config("backbone.embed_dim=24"), _encoder(_config()).state_dict())
    with pytest.raises(ValueError, match=r"wrong\.ckpt: weights do not match the config in its hyper_parameters: "
                                         r".*shape mismatch"):
        encoder_from_checkpoint(wrong)
    assert export_main([str(wrong), "--out", str(tmp_path / "out")]) == 2
    _one_line_error(capsys, "avssl.export: error:", "wrong.ckpt: weights do not match")
    no_backbone = _checkpoint(tmp_path / "empty_state.ckpt", _config(), {})
    assert export_main([str(no_backbone), "--out", str(tmp_path / "out")]) == 2
    _one_line_error(capsys, "empty_state.ckpt: weights do not match", "missing keys")


def test_a_good_checkpoint_and_export_still_load(checkpoint: Path, export: Path) -> None:
    encoder, _, _ = encoder_from_checkpoint(checkpoint)
    assert avssl.load_backbone(export).embed_dim == encoder.embed_dim == 16


TRANSFORMER = ["backbone.preset=cav_mae_tiny", "backbone.num_heads=2"]


@pytest.fixture()
def transformer_export(tmp_path: Path) -> Path:
    config = _config(*TRANSFORMER)
    return export_encoder(_encoder(config), config.data.preprocessing, tmp_path / "transformer")


def _inflate(export: Path, **backbone) -> None:
    meta = yaml.safe_load((export / "config.yaml").read_text())
    meta["backbone"].update(backbone)
    (export / "config.yaml").write_text(yaml.safe_dump(meta))


def _load_quickly(export: Path, seconds: float = 2.0) -> str:
    """The one-line error of loading `export`, which must come before anything is allocated."""
    start = time.monotonic()
    with pytest.raises(ValueError) as caught:
        avssl.load_backbone(export)
    assert time.monotonic() - start < seconds
    assert "\n" not in str(caught.value)
    return str(caught.value)


@pytest.mark.parametrize("field, value, message", [
    ("embed_dim", 1_000_000, "backbone.embed_dim=1000000: must be in [1, 16_384]"),
    ("modality_specific_depth", 100_000, "backbone.modality_specific_depth=100000: must be in [0, 64]"),
])
def test_a_config_yaml_with_out_of_range_sizes_is_refused_before_building(transformer_export: Path, field: str, value,
                                                                          message: str) -> None:
    _inflate(transformer_export, **{field: value})
    err = _load_quickly(transformer_export)
    assert err.startswith(str(transformer_export / "config.yaml")) and message in err and "re-export" in err, err


def test_a_position_table_too_large_for_the_config_is_refused_before_building(transformer_export: Path) -> None:
    _inflate(transformer_export, audio_frames=100_000, num_mel_bins=512, audio_patch=[1, 1])
    err = _load_quickly(transformer_export)
    assert "51_200_000 audio tokens per clip" in err and "re-export" in err, err


def test_an_inflated_config_within_range_fails_on_the_weights_header_without_allocating(transformer_export: Path,
                                                                                       tmp_path: Path, capsys) -> None:
    # 155 GB of float32 parameters if built: the header's shapes are compared first, on the meta device
    _inflate(transformer_export, embed_dim=8192, modality_specific_depth=24, shared_depth=0)
    err = _load_quickly(transformer_export, seconds=3.0)
    assert err.startswith(f"{transformer_export / 'model.safetensors'}: weights do not match config.yaml: "), err
    assert re.search(r"shape mismatch for \S+: checkpoint \[\d+(, \d+)*\] vs config \[\d+(, \d+)*\]", err), err
    assert "does it belong to another model? Restore it, or re-export" in err
    start = time.monotonic()
    assert probe_main([str(transformer_export), "--data", str(tmp_path), "--out", str(tmp_path / "p.json")]) == 2
    _one_line_error(capsys, "avssl.probe: error:", "weights do not match config.yaml")
    assert time.monotonic() - start < 3.0


def test_an_inflated_checkpoint_config_fails_on_its_weights_without_allocating(tmp_path: Path, capsys) -> None:
    state = _encoder(_config(*TRANSFORMER)).state_dict()
    inflated = _checkpoint(tmp_path / "inflated.ckpt", _config(*TRANSFORMER), state)
    ckpt = torch.load(inflated, weights_only=True)
    ckpt["hyper_parameters"]["config"]["backbone"].update(embed_dim=8192, modality_specific_depth=24)
    torch.save(ckpt, inflated)
    start = time.monotonic()
    assert export_main([str(inflated), "--out", str(tmp_path / "out")]) == 2
    _one_line_error(capsys, "avssl.export: error:", "inflated.ckpt: weights do not match the config in its hyper_parameters")
    assert time.monotonic() - start < 3.0
    ckpt["hyper_parameters"]["config"]["backbone"].update(embed_dim=10**6)
    torch.save(ckpt, inflated)
    assert export_main([str(inflated), "--out", str(tmp_path / "out")]) == 2
    _one_line_error(capsys, "backbone.embed_dim=1000000: must be in [1, 16_384]")
