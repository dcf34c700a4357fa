"""Every number a user can configure has a declared range, and nan/inf are refused at config time."""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import types
import typing
from typing import Any, Union

import pytest

from avssl.backbones.spec import BackboneSpec
from avssl.config import ConfigError, PretrainConfig, available_recipes, load_config
from avssl.objectives.registry import OBJECTIVES
from avssl.pretrain import main as pretrain_main

NUMBERS = (int, float)


def _strip(annotation: Any) -> tuple[Any, bool]:
    """(the annotation without Optional / list, whether it was a list)."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is list:
        return typing.get_args(annotation)[0], True
    return annotation, False


def _fields(cls: type, path: str = "") -> list[tuple[str, Any, dataclasses.Field]]:
    """(key, annotation, field) of every leaf field below the dataclass `cls`, following dicts of dataclasses."""
    hints = typing.get_type_hints(cls)
    found = []
    for f in dataclasses.fields(cls):
        key = f"{path}.{f.name}" if path else f.name
        annotation = hints[f.name]
        if typing.get_origin(annotation) is dict:
            annotation = typing.get_args(annotation)[1]
            key = f"{key}.NAME"
        inner, _ = _strip(annotation)
        if dataclasses.is_dataclass(inner):
            found += _fields(inner, key)
        else:
            found.append((key, annotation, f))
    return found


# objectives.NAME holds an objective's arguments: their ranges are the objective's (next test)
SCHEMA = [entry for entry in _fields(PretrainConfig) + _fields(BackboneSpec, "export.backbone") if entry[0] != "objectives.NAME"]


@pytest.mark.parametrize("key, annotation, f", SCHEMA, ids=[key for key, _, _ in SCHEMA])
def test_every_numeric_field_declares_a_finite_range(key: str, annotation: Any, f: dataclasses.Field) -> None:
    inner, _ = _strip(annotation)
    if inner is Any:  # a number or a word (trainer.devices, limit_train_batches): checked by a function
        assert "check" in f.metadata, f"{key} takes any value but declares no check"
    if inner in NUMBERS:
        assert "range" in f.metadata, f"{key} is a number without a declared range (avssl.schema.in_range)"
    if "range" in f.metadata:
        assert all(math.isfinite(bound) for bound in f.metadata["range"]), key


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_numeric_objective_parameter_declares_a_range(name: str) -> None:
    cls = OBJECTIVES[name]
    hints = typing.get_type_hints(cls.__init__)
    numeric = [p for p in inspect.signature(cls.__init__).parameters if _strip(hints.get(p))[0] in NUMBERS]
    assert numeric, name
    assert set(numeric) <= set(cls.parameter_ranges), f"{name}: no range for {set(numeric) - set(cls.parameter_ranges)}"


def _float_keys() -> list[str]:
    keys = [key for key, annotation, _ in _fields(PretrainConfig) if _strip(annotation) == (float, False)]
    return [key.replace("passes.NAME", "passes.masked") for key in keys]


@pytest.mark.parametrize("key", _float_keys())
def test_inf_is_refused_for_every_float_key(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}=inf: must be a finite number"):
        load_config([f"{key}=inf"])


@pytest.mark.parametrize("value", ["nan", "-inf"])
@pytest.mark.parametrize("key", ["optim.lr", "data.preprocessing.clip_seconds", "trainer.gradient_clip_val"])
def test_nan_and_minus_inf_are_refused(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}={value}: must be a finite number"):
        load_config([f"{key}={value}"])


@pytest.mark.parametrize("value, shown", [(".nan", "nan"), (".inf", "inf"), ("-.inf", "-inf")])
@pytest.mark.parametrize("key", ["objectives.av_infonce.temperature", "objectives.av_infonce.weight"])
def test_non_finite_objective_arguments_are_refused(key: str, value: str, shown: str) -> None:
    # an objective's arguments are free-form YAML: "inf" is a word there (refused as not a float), .inf a float
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}={shown}: must be a finite number"):
        load_config([f"{key}={value}"])


@pytest.mark.parametrize("key", ["optim.betas", "data.av_offset_s", "data.augment.audio.gain_db"])
def test_non_finite_numbers_are_refused_in_lists(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}=\[.*inf.*\]: .*finite"):
        load_config([f"{key}=[0.5, inf]"])


@pytest.mark.parametrize(
    "override, message",
    [
        # each was accepted and failed later: an OverflowError traceback, every file "decode_failed",
        # a thousand worker processes, a clip of 31 years
        ("trainer.limit_train_batches=0", "must be a count in [1, 1_000_000_000_000] (e.g. 100) or a fraction in (0.0, 1.0]"),
        ("data.preprocessing.audio_frames=100000000", "must be in [1, 100_000]"),
        ("data.num_workers=1000", "must be in [0, 256] (DataLoader processes: about one per CPU core"),
        ("data.preprocessing.clip_seconds=1e9", "must be in (0.0, 600.0]"),
        ("trainer.limit_train_batches=0.0", "or a fraction in (0.0, 1.0] (e.g. 0.25); 0 would train on no batch"),
        ("trainer.max_steps=0", "must be -1 (no step limit) or in [1, 1_000_000_000_000]"),
        ("trainer.devices=0", "must be auto, -1 (all) or a count in [1, 1024]"),
        ("run.seed=-1", "must be in [0, 4_294_967_295]"),
        ("optim.lr=1e6", "must be in (0.0, 1000.0]"),
        ("backbone.embed_dim=1000000", "must be in [1, 16_384]"),
        ("backbone.modality_specific_depth=100000", "must be in [0, 64]"),
        ("objectives.av_infonce.projection_dim=1000000000", "must be in [0, 65_536]"),
        ("objectives.av_infonce.weight=1e9", "must be in [0.0, 1000.0] (0 turns the objective off)"),
    ],
)
def test_out_of_range_values_name_the_key_and_the_range(override: str, message: str) -> None:
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}=\S+: .*{re.escape(message)}.*\({re.escape(key)}=\.\.\.\)"):
        load_config([override])


def test_one_clip_larger_than_memory_allows_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"data.preprocessing: one clip would take 3\.0 GiB .* at most 1 GiB"):
        load_config(["data.preprocessing.num_frames=256", "data.preprocessing.frame_size=1024"])


def test_a_position_table_too_large_to_build_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"backbone: 131_072 audio tokens per clip x embed_dim 768"):
        load_config(["recipe=cav_mae", "backbone.audio_patch=[1,1]"])


@pytest.mark.parametrize("recipe", available_recipes())
def test_shipped_recipes_are_within_every_range(recipe: str) -> None:
    load_config([f"recipe={recipe}"])


def test_the_cli_refuses_inf_in_one_line_before_any_work(tmp_path, capsys) -> None:
    assert pretrain_main(["optim.lr=inf", f"run.dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert "optim.lr=inf: must be a finite number in (0.0, 1000.0]" in err
    assert not (tmp_path / "run").exists()
