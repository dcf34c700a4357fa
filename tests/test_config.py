"""Recipes, overrides and the errors a user gets for a bad one."""

import re
import subprocess
import sys

import pytest

from avssl.config import ConfigError, available_recipes, load_config


def test_shipped_recipes_load_and_resolve():
    assert {"default", "cav_mae"} <= set(available_recipes())
    spec = load_config(["recipe=cav_mae"]).backbone
    cav = load_config(["recipe=cav_mae"])
    resolved = spec.resolve(cav.data.preprocessing)
    assert (resolved.embed_dim, resolved.modality_specific_depth, resolved.shared_depth) == (768, 11, 1)
    assert cav.objectives["av_infonce"] == {"weight": 0.01, "temperature": 0.05, "pass_name": "masked",
                                            "direction": "v2a", "negatives": "cross_modal"}
    assert cav.passes["masked"].audio.ratio == cav.passes["masked"].video.ratio == 0.75


def test_overrides_apply_on_top_of_the_recipe(tmp_path):
    config = load_config(["data.root=/videos", "optim.lr=0.01", "objectives.av_infonce.temperature=0.2", "trainer.devices=2"])
    assert config.data.root == "/videos"
    assert config.optim.lr == 0.01
    assert config.objectives["av_infonce"]["temperature"] == 0.2
    assert config.trainer.devices == 2


def test_recipe_from_a_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("backbone: {size: small}\nobjectives: {av_infonce: {weight: 1.0}}\n")
    config = load_config([f"recipe={path}"])
    assert config.backbone.size == "small"
    assert config.recipe == "mine"


@pytest.mark.parametrize(
    "args,message",
    [
        (["data.rot=/x"], r"data.rot: unknown key.*Did you mean 'root'"),
        (["optim.lrr=1"], r"optim.lrr: unknown key.*Did you mean 'lr'"),
        (["data.batch_size=many"], r"data.batch_size"),
        (["passes.masked.audio.ratio=1.5"], r"passes.masked.audio.ratio=1.5: must be in \[0.0, 1.0\)"),
        (["passes.masked.video.strategy=blocks"], r"passes.masked.video.strategy=blocks: must be one of"),
        (["passes.masked.audio.strategy=tube"],
         r"passes.masked.audio.strategy=tube: must be one of \['random', 'time', 'frequency', 'time_frequency'\] \(tube is for video\)"),
        (["passes.extra.video.strategy=time_frequency"],
         r"passes.extra.video.strategy=time_frequency: must be one of \['random', 'tube'\] \(time, frequency and time_frequency are for audio\)"),
        (["optim.lr=-0.1"], r"optim.lr=-0.1: must be in \(0.0, 1000.0\]"),
        (["backbone.size=huge"], r"backbone.size=huge: must be one of \['tiny', 'small', 'base', 'large'\]"),
        (["recipe=cav_mea"], r"recipe=cav_mea: unknown recipe. Did you mean 'cav_mae'"),
        (["recipe=/nope/missing.yaml"], r"recipe=/nope/missing.yaml: no such file"),
        (["objectives.av_infonce.temprature=0.1"], r"objectives.av_infonce.temprature.*Did you mean 'temperature'"),
        (["objectives.contrastive.weight=1"], r"objectives.contrastive: unknown objective"),
        # the default recipe's CNN towers: the weight is checked before it decides anything
        (["objectives.masked_reconstruction.weight=abc"], r"objectives.masked_reconstruction.weight=abc: must be a number in \[0.0, 1000.0\] \(0 turns the objective off\)"),
        (["recipe=cav_mae_demo", "data.preprocessing.frame_size=70"], r"data.preprocessing.frame_size=70 is not divisible by backbone.video_patch\[1\]=16"),
        (["lr"], r"'lr': expected key=value"),
    ],
)
def test_bad_values_stop_with_one_message_naming_the_key(args, message):
    with pytest.raises(ConfigError, match=message):
        load_config(args)


def test_cli_reports_a_config_error_without_a_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "avssl.pretrain", "passes.masked.video.ratio=1.5", f"run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "passes.masked.video.ratio=1.5: must be in [0.0, 1.0)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_data_root_is_the_shorthand_for_a_folder_source():
    config = load_config(["data.root=/videos"])
    source = config.data.resolved_source()
    assert (source.kind, source.path) == ("folder", "/videos")
    manifest = load_config(["data.source.path=/lists/train.csv"]).data.resolved_source()
    assert (manifest.kind, manifest.path) == ("auto", "/lists/train.csv")
    assert load_config([]).data.resolved_source() is None  # the demo clips


@pytest.mark.parametrize(
    "args, message",
    [
        (["data.root=/a", "data.source.path=/b"], "give one of them"),
        (["data.preprocessing.fps=2", "data.preprocessing.num_frames=8"], "longer than clip_seconds"),
        (["data.policies.no_audio=zeros"], "data.policies.no_audio=zeros: must be one of ['skip', 'silence']"),
        (["data.policies.file_timeout_s=0"], "data.policies.file_timeout_s=0"),
        (["data.clip_sampling=dense"], "must be one of ['uniform', 'random']"),
        (["data.source.kind=s3"], "data.source.kind=s3"),
        (["data.source.extention=.mp4"], "Did you mean 'extensions'?"),
        (["data.preprocessing.crop=left"], "must be one of ['center', 'random']"),
    ],
)
def test_bad_data_settings_name_the_key(args, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(args)


@pytest.mark.parametrize(
    "args, message",
    [
        (["optim.betas=[0.9]"], "optim.betas=[0.9]: must be a list of 2 values, got 1"),
        (["optim.betas=[2,3]"], "optim.betas=[2.0, 3.0]: element 0 (2.0) must be in [0.0, 1.0)"),
        (["optim.betas=[0.9"], "'optim.betas=[0.9': the value is not valid YAML"),
        (["trainer.accelerator=tpux"], "trainer.accelerator=tpux: unknown accelerator; must be one of ['auto', 'cpu', 'cuda', 'gpu'"),
        (["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches=0: must be in [1, 10_000]"),
        (["trainer.limit_train_batches=1.5"], "trainer.limit_train_batches=1.5: must be a count in [1, 1_000_000_000_000] (e.g. 100) or a fraction in (0.0, 1.0]"),
        (["trainer.limit_train_batches=-3"], "trainer.limit_train_batches=-3: must be a count in [1, "),
        (["trainer.limit_train_batches=all"], "trainer.limit_train_batches=all: must be a count in [1, "),
        (["trainer.fast_dev_run=-1"], "trainer.fast_dev_run=-1: must be true, false or a number of batches in [0, 10_000]"),
        (["trainer.fast_dev_run=0.5"], "trainer.fast_dev_run=0.5: must be true, false or a number of batches"),
        (["trainer.deterministic=maybe"], "trainer.deterministic=maybe: must be one of [False, True, 'warn']"),
    ],
)
def test_bad_optimizer_and_trainer_settings_name_the_key(args, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(args)


def test_precision_is_checked_against_what_lightning_accepts():
    with pytest.raises(ConfigError, match=r"trainer.precision=bogus: must be one of \[.*'bf16-mixed'.*'32-true'"):
        load_config(["trainer.precision=bogus"])
    for value in ("16-mixed", "bf16-mixed", "32", "64-true"):
        assert load_config([f"trainer.precision={value}"]).trainer.precision == value


@pytest.fixture
def no_gpu(monkeypatch):
    from pytorch_lightning.accelerators import CUDAAccelerator, MPSAccelerator

    monkeypatch.setattr(CUDAAccelerator, "is_available", staticmethod(lambda: False))
    monkeypatch.setattr(MPSAccelerator, "is_available", staticmethod(lambda: False))


@pytest.mark.parametrize("accelerator", ["gpu", "cuda"])
def test_a_gpu_accelerator_without_a_gpu_is_a_config_error(no_gpu, accelerator):
    with pytest.raises(ConfigError, match=re.escape(
            f"trainer.accelerator={accelerator}: no GPU was found on this machine; use trainer.accelerator=cpu or "
            "trainer.accelerator=auto")):
        load_config([f"trainer.accelerator={accelerator}"])
    assert load_config(["trainer.accelerator=cpu"]).trainer.accelerator == "cpu"


def test_trainer_keys_for_accumulation_limits_smoke_runs_and_determinism():
    defaults = load_config([]).trainer
    assert (defaults.accumulate_grad_batches, defaults.limit_train_batches, defaults.fast_dev_run,
            defaults.deterministic) == (1, None, False, False)
    t = load_config(["trainer.accumulate_grad_batches=4", "trainer.limit_train_batches=0.25",
                     "trainer.fast_dev_run=3", "trainer.deterministic=warn"]).trainer
    assert (t.accumulate_grad_batches, t.limit_train_batches, t.fast_dev_run, t.deterministic) == (4, 0.25, 3, "warn")
    assert load_config(["trainer.limit_train_batches=10"]).trainer.limit_train_batches == 10
    assert load_config(["trainer.fast_dev_run=true"]).trainer.fast_dev_run is True


def test_a_recipe_that_is_not_valid_yaml_names_the_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("backbone:\n  size: small\n  audio_patch: [16, 16\nobjectives: {av_infonce: {weight: 1.0}}\n")
    with pytest.raises(ConfigError, match=re.escape(f"recipe={path}: not valid YAML (line 4, column 11: ")):
        load_config([f"recipe={path}"])
    path.write_text("- backbone\n- objectives\n")
    with pytest.raises(ConfigError, match="a recipe is a mapping of sections"):
        load_config([f"recipe={path}"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["recipe=BAD_YAML"], "not valid YAML"),
        (["optim.betas=[0.9]"], "optim.betas=[0.9]: must be a list of 2 values"),
        (["trainer.precision=bogus"], "trainer.precision=bogus: must be one of"),
        (["trainer.accelerator=gpu"], "no GPU was found on this machine"),
        (["objectives.av_infonce.temperature=abc"], "objectives.av_infonce.temperature=abc: must be a float (e.g. 0.05)"),
        (["objectives.av_infonce.temperature=-1"], "objectives.av_infonce.temperature=-1: must be in (0.0, 100.0]"),
        (["passes.masked.audio.strategy=tube"], "passes.masked.audio.strategy=tube: must be one of"),
        (["--bogus"], "--bogus: unknown option"),
        (["--list-recipes", "--print-config"], "give one of them at a time"),
    ],
)
def test_cli_user_errors_are_one_line_exit_2_and_leave_no_run_directory(no_gpu, tmp_path, capsys, monkeypatch, args, message):
    from avssl.pretrain import main

    monkeypatch.chdir(tmp_path)  # a default run directory would go to ./runs
    bad = tmp_path / "bad.yaml"
    bad.write_text("objectives: {av_infonce: {weight: 1.0}\n")
    args = [arg.replace("BAD_YAML", str(bad)) for arg in args]
    assert main([*args, f"run.dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_cli_help_lists_the_config_sections_from_the_schema_and_the_docs(capsys, flag):
    from dataclasses import fields

    from avssl.config import PretrainConfig
    from avssl.pretrain import main

    assert main([flag]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m avssl.pretrain")
    for section in fields(PretrainConfig):
        line = next(line for line in out.splitlines() if line.strip().startswith(section.name + " "))
        assert len(line.split()) > 3 and "(" + section.name not in line, line  # a description, not a signature
    for text in ("--list-recipes", "--list-presets", "--print-config", "docs/recipes.md", "docs/getting-started.md"):
        assert text in out


def test_cli_lists_recipes_and_backbone_presets(capsys):
    import avssl
    from avssl.pretrain import main

    assert main(["--list-recipes"]) == 0
    out = capsys.readouterr().out
    for name in available_recipes():
        assert re.search(rf"^  {name} +\S", out, re.MULTILINE), name
    assert main(["--list-presets"]) == 0
    out = capsys.readouterr().out
    for name in ("tiny", "base", "strided_conv", "xkd_base", "mbt_tiny", "r2plus1d18_resnet18"):
        assert re.search(rf"^  {name} +\S", out, re.MULTILINE), name
    assert avssl.list_recipes("cav_mae*") == ["cav_mae", "cav_mae_demo"]
    assert avssl.list_backbones("xkd_*") == ["xkd_tiny", "xkd_small", "xkd_base", "xkd_large"]
    assert "strided_conv" in avssl.list_backbones()


def test_cli_prints_the_resolved_config_and_creates_nothing(tmp_path, capsys, monkeypatch):
    from omegaconf import OmegaConf

    from avssl.pretrain import main

    monkeypatch.chdir(tmp_path)
    assert main(["--print-config", "recipe=cav_mae", "optim.lr=0.001", "trainer.accumulate_grad_batches=4"]) == 0
    printed = OmegaConf.create(capsys.readouterr().out)
    assert printed.recipe == "cav_mae" and printed.optim.lr == 0.001 and printed.trainer.accumulate_grad_batches == 4
    assert printed.backbone.size == "base" and "masked_reconstruction" in printed.objectives
    assert list(tmp_path.iterdir()) == []
    assert main(["--print-config", "optim.lr=-1"]) == 2
    assert "optim.lr=-1" in capsys.readouterr().err


def test_config_error_has_one_definition_importable_without_the_config_schema():
    code = ("import sys; from avssl.errors import ConfigError; import avssl.objectives.registry as r; "
            "assert r.ConfigError is ConfigError; assert 'avssl.config' not in sys.modules; "
            "import avssl.config; assert avssl.config.ConfigError is ConfigError")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize(
    "args, message",
    [
        (["objectives.av_infonce.temperature=abc"], "objectives.av_infonce.temperature=abc: must be a float (e.g. 0.05)"),
        (["objectives.av_infonce.temperature=true"], "objectives.av_infonce.temperature=true: must be a float"),
        (["objectives.av_infonce.projection_dim=1.5"], "objectives.av_infonce.projection_dim=1.5: must be an integer (e.g. 128)"),
        (["objectives.av_infonce.projection_dim=null"], "objectives.av_infonce.projection_dim=null: must be an integer"),
        (["objectives.av_infonce.gather_distributed=1"], "objectives.av_infonce.gather_distributed=1: must be true or false"),
        (["recipe=cav_mae_demo", "objectives.masked_reconstruction.norm_pix_loss=yes please"],
         "objectives.masked_reconstruction.norm_pix_loss=yes please: must be true or false"),
        # values the objective's __init__ rejects are found by load_config too, before any work
        (["objectives.av_infonce.projection_dim=-1"], "objectives.av_infonce.projection_dim=-1: must be in [0, 65_536]"),
        (["recipe=cav_mae_demo", "objectives.masked_reconstruction.decoder_dim=30"], "decoder_dim=30 must be divisible by decoder_heads=4"),
    ],
)
def test_objective_settings_are_type_checked_and_validated_by_load_config(args, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(args)


def test_objective_settings_accept_an_integer_for_a_float_and_skip_objectives_turned_off():
    assert load_config(["objectives.av_infonce.temperature=1"]).objectives["av_infonce"]["temperature"] == 1
    # off: not built, as in the module (masked reconstruction cannot be built on CNN towers)
    load_config(["objectives.masked_reconstruction.weight=0"])


def _spec(args):
    config = load_config(args)
    return config.backbone.resolve(config.data.preprocessing)


def test_backbone_preset_selects_any_registered_preset_then_fields_override_it(tmp_path):
    from dataclasses import replace

    from avssl.backbones.registry import preset_spec

    inputs = dict(audio_frames=192, num_mel_bins=64, num_frames=8, frame_size=64)  # from data.preprocessing
    demo = ["data.preprocessing.num_mel_bins=64", "data.preprocessing.audio_frames=192", "data.preprocessing.num_frames=8",
            "data.preprocessing.frame_size=64", "data.preprocessing.clip_seconds=2.0"]
    assert _spec([*demo, "backbone.preset=xkd_tiny", "backbone.embed_dim=64"]) == preset_spec("xkd_tiny", embed_dim=64, **inputs)
    assert _spec([*demo, "backbone.preset=mbt_small"]) == preset_spec("mbt_small", **inputs)
    assert _spec([*demo, "backbone.preset=strided_conv", "backbone.tower_width=8"]) == preset_spec("strided_conv", tower_width=8, **inputs)
    recipe = tmp_path / "xkd.yaml"
    recipe.write_text("backbone: {preset: xkd_tiny, drop_path: 0.1}\nobjectives: {av_infonce: {weight: 1.0}}\n")
    spec = _spec([f"recipe={recipe}", *demo])
    assert spec == replace(preset_spec("xkd_tiny", **inputs), drop_path=0.1)
    # without a preset: backbone.size (default base) of the cav_mae layout, as before presets existed
    assert _spec([*demo, "backbone.preset=null", "backbone.size=small", "backbone.kind=shared"]) == preset_spec("shared_small", **inputs)
    assert _spec(["recipe=cav_mae"]) == preset_spec("cav_mae_base")  # CAV-MAE's inputs are BackboneSpec's defaults
    # the default recipe's backbone is a preset, so another one from the command line is that preset alone
    assert _spec(["backbone.preset=xkd_tiny"]) == preset_spec("xkd_tiny", audio_frames=192, num_mel_bins=64, num_frames=4, frame_size=64)
    # a recipe's size agrees with a preset of that size
    assert _spec(["recipe=cav_mae_demo", "backbone.preset=xkd_tiny"]).cls_token is True


@pytest.mark.parametrize(
    "args, message",
    [
        (["backbone.preset=xkd_huge"], "backbone.preset=xkd_huge: must be one of ['cav_mae_tiny'"),
        (["backbone.size=small"], "backbone.preset=strided_conv and backbone.size=small"),  # the default recipe's preset
        (["recipe=cav_mae", "backbone.preset=xkd_small"], "backbone.preset=xkd_small and backbone.size=base: the preset sets its own size; keep one of them (backbone.size=null"),
        (["backbone.preset=xkd_base", "backbone.shared_depth=-1"], "backbone.shared_depth=-1: must be in [0, 64]"),
        (["backbone.preset=xkd_base", "backbone.pos_embed=rope"], "backbone.pos_embed=rope: must be one of ['sincos', 'learned']"),
        (["backbone.preset=xkd_base", "backbone.video_patch=[2,16,16]", "data.preprocessing.num_frames=3"],
         "data.preprocessing.num_frames=3 is not divisible by backbone.video_patch[0]=2"),
    ],
)
def test_bad_backbone_presets_and_overrides_name_the_key(args, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(args)


def test_every_backbone_field_is_declared_once_in_the_spec_and_overridable():
    from dataclasses import fields

    from avssl.backbone_config import INPUT_FIELDS, BackboneConfig
    from avssl.backbones.spec import BackboneSpec

    spec_fields = [f.name for f in fields(BackboneSpec)]
    assert [f.name for f in fields(BackboneConfig)] == ["preset", "size", "init_from",
                                                        *[name for name in spec_fields if name not in INPUT_FIELDS]]
    assert all(f.default is None for f in fields(BackboneConfig))  # None: the preset's value
    assert {f.name for f in fields(BackboneConfig) if "check" in f.metadata} - {"preset", "size"} <= set(spec_fields)


def test_a_checkpoint_config_with_the_backbone_keys_of_before_presets_still_loads():
    from avssl.backbones.registry import preset_spec
    from avssl.config import from_dict

    # the backbone section as checkpoints stored it before backbone.preset existed (recipe=cav_mae_demo)
    stored = {"size": "tiny", "embed_dim": None, "num_heads": None, "modality_specific_depth": None, "shared_depth": None,
              "mlp_ratio": 4.0, "qkv_bias": True, "norm_eps": 1e-5, "audio_patch": [16, 16], "video_patch": [2, 16, 16],
              "kind": "cav_mae", "drop_path": 0.0, "layer_scale_init": None, "attention": "sdpa", "audio_patch_stride": None,
              "cls_token": False, "pos_embed": "sincos", "num_bottlenecks": 4, "init_from": None,
              "video_tower": "r2plus1d_18", "audio_tower": "resnet18", "tower_width": 32}
    config = from_dict({"backbone": stored, "data": {"preprocessing": {"num_frames": 8, "frame_size": 64, "num_mel_bins": 64,
                                                                        "audio_frames": 192, "clip_seconds": 2.0}}})
    assert config.backbone.resolve(config.data.preprocessing) == preset_spec(
        "cav_mae_tiny", video_patch=[2, 16, 16], num_frames=8, frame_size=64, num_mel_bins=64, audio_frames=192)
    assert _spec(["recipe=cav_mae_demo"]) == config.backbone.resolve(config.data.preprocessing)


def test_cli_prints_a_config_with_a_backbone_preset(capsys):
    from omegaconf import OmegaConf

    from avssl.pretrain import main

    assert main(["--print-config", "backbone.preset=strided_conv", "backbone.embed_dim=64"]) == 0
    printed = OmegaConf.create(capsys.readouterr().out)
    assert (printed.backbone.preset, printed.backbone.embed_dim, printed.backbone.size) == ("strided_conv", 64, None)
    assert load_config([f"{k}={v}" for k, v in [("backbone.preset", "strided_conv"), ("backbone.embed_dim", 64)]]).backbone == \
        load_config(["recipe=default", "backbone.preset=strided_conv", "backbone.embed_dim=64"]).backbone
