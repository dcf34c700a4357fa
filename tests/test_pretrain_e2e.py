"""The user's path end to end on a tiny recipe: pretrain -> run directory -> export -> load -> probe."""

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import avssl
from avssl.export import encoder_from_checkpoint
from avssl.export import main as export_main
from avssl.pretrain import main as pretrain_main
from avssl.probe import main as probe_main
from datamodules.clips import load_clip
from datamodules.demo import render_demo_clips

TINY = [
    "recipe=cav_mae_demo",
    "data.num_workers=0",
    "data.batch_size=8",
    "data.preprocessing.clip_seconds=1.0",
    "data.preprocessing.num_frames=2",
    "data.preprocessing.frame_size=32",
    "data.preprocessing.num_mel_bins=32",
    "data.preprocessing.audio_frames=96",
    "backbone.embed_dim=32",
    "backbone.num_heads=2",
    "backbone.modality_specific_depth=1",
    "objectives.masked_reconstruction.decoder_dim=16",
    "objectives.masked_reconstruction.decoder_depth=1",
    "objectives.masked_reconstruction.decoder_heads=2",
    "trainer.max_epochs=2",
    "optim.warmup_epochs=0",
    "probe.batch_size=16",
    "health.knn_every_n_epochs=1",
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    clips = render_demo_clips(root, num_unlabeled=24, clips_per_class=4, seed=3, size=32, seconds=1.0)
    (clips.unlabeled / "broken.mp4").write_bytes(b"this is not a video")
    return clips


@pytest.fixture(scope="module")
def run(demo, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    code = pretrain_main([*TINY, f"data.root={demo.unlabeled}", f"probe.data={demo.labeled}", f"run.dir={run_dir}"])
    assert code == 0
    return run_dir


def test_run_directory_holds_everything(run, capsys):
    for name in ("config.yaml", "checkpoints/last.ckpt", "data_report.json", "probe.json", "export/model.safetensors", "export/config.yaml"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert "backbone:" in (run / "config.yaml").read_text()


def test_data_report_records_the_broken_file(run):
    report = json.loads((run / "data_report.json").read_text())
    assert report["files_seen"] == 25
    assert report["clips"] == 2 * 24  # clips trained on, over the 2 epochs
    assert [(Path(s["path"]).name, s["reason"]) for s in report["skipped"]] == [("broken.mp4", "unreadable")]


def test_probe_callback_reports_both_backbones(run):
    probe = json.loads((run / "probe.json").read_text())
    assert set(probe) == {"random_init", "pretrained"}
    for result in probe.values():
        for name in ("audio", "video", "joint"):
            assert 0.0 <= result[name]["top1"] <= 1.0
        assert result["train_clips"] + result["test_clips"] == 6 * 4


def test_knn_monitor_logs_each_epoch_next_to_its_random_init(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    for name in ("audio", "video", "joint"):
        assert len(events.Scalars(f"health/knn/{name}_top1")) == 2  # health.knn_every_n_epochs=1, 2 epochs
        assert f"health/knn/{name}_random_init" in scalars
        assert all(0.0 <= e.value <= 1.0 for e in events.Scalars(f"health/knn/{name}_top1"))


def test_checkpoint_is_data_and_export_reproduces_the_module_embeddings(run, tmp_path):
    ckpt = torch.load(run / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["config"]["backbone"]["embed_dim"] == 32
    encoder, preprocessing, _ = encoder_from_checkpoint(run / "checkpoints/last.ckpt")
    encoder.eval()
    loaded = avssl.load_backbone(run)  # a run directory resolves to its export/
    torch.manual_seed(0)
    audio = torch.randn(2, 1, preprocessing.audio_frames, preprocessing.num_mel_bins)
    video = torch.randn(2, 3, preprocessing.num_frames, preprocessing.frame_size, preprocessing.frame_size)
    torch.testing.assert_close(loaded.encode_audio(audio), encoder.encode_audio(audio))
    torch.testing.assert_close(loaded.encode_video(video), encoder.encode_video(video))
    torch.testing.assert_close(loaded.encode_joint(audio, video), encoder.encode_joint(audio, video))
    assert loaded.preprocessing == preprocessing


def test_export_cli_then_embed_file(run, demo, tmp_path, capsys):
    out = tmp_path / "exported"
    assert export_main([str(run / "checkpoints/last.ckpt"), "--out", str(out)]) == 0
    model = avssl.load_backbone(out)
    clip = next(demo.labeled.rglob("*.mp4"))
    emb = model.embed_file(clip)
    assert {k: tuple(v.shape) for k, v in emb.items()} == {"audio": (32,), "video": (32,), "joint": (32,)}
    # embed_file is the pretraining pipeline: decode the file's clip the same way and compare.
    from datamodules.scan import file_clip_starts

    start = file_clip_starts(clip, model.preprocessing)[0]
    sample = load_clip(clip, start, model.preprocessing)
    with torch.no_grad():
        expected = model.encode_video(sample["video"][None])[0]
    torch.testing.assert_close(emb["video"], expected)


def test_export_cli_errors_are_one_line(tmp_path, capsys):
    assert export_main([str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "x")]) == 2
    assert "missing.ckpt does not exist" in capsys.readouterr().err


def test_loading_an_export_needs_no_lightning(run):
    code = (
        "import sys, avssl; m = avssl.load_backbone(sys.argv[1]); "
        "bad = [n for n in sys.modules if n.split('.')[0] in ('pytorch_lightning', 'lightning')]; "
        "assert not bad, bad; print(m.embed_dim)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(run / "export")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "32"


def test_probe_cli_prints_a_table_and_writes_json(run, demo, tmp_path, capsys):
    out = tmp_path / "probe.json"
    assert probe_main([str(run), "--data", str(demo.labeled), "--out", str(out), "--num-workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert "audio" in printed and "video" in printed and "joint" in printed
    result = json.loads(out.read_text())
    assert result["init"] == "pretrained"
    assert result["train_clips"] + result["test_clips"] == 24 and result["skipped_clips"] == 0
    assert "logistic regression" in result["protocol"]
    # The callback probed the same weights with the same protocol and split.
    callback = json.loads((run / "probe.json").read_text())["pretrained"]
    for name in ("audio", "video", "joint"):
        assert result[name]["top1"] == pytest.approx(callback[name]["top1"])


def test_the_two_probe_cli_lines_of_the_readme_write_two_files_and_show_progress(run, demo, tmp_path, monkeypatch,
                                                                                 caplog):
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO):
        assert probe_main([str(run), "--data", str(demo.labeled), "--num-workers", "0"]) == 0
        assert probe_main([str(run), "--data", str(demo.labeled), "--random-init", "--num-workers", "0"]) == 0
    assert json.loads((tmp_path / "probe-tiny.json").read_text())["init"] == "pretrained"
    assert json.loads((tmp_path / "probe-tiny-random_init.json").read_text())["init"] == "random_init"
    assert not (tmp_path / "probe.json").exists()
    # each probe says what it probes when it starts, then how far it got (log lines: stdout is no terminal)
    lines = [r.getMessage() for r in caplog.records]
    for init in ("pretrained", "random_init"):
        assert any(line.startswith(f"linear probe ({init}): embedding 18 train and 6 test clips of --data=")
                   for line in lines), lines
        assert f"linear probe ({init}): embedding clips 24/24" in "\n".join(lines)
        assert f"linear probe ({init}): fitting logistic regressions 18/18" in "\n".join(lines)


def test_probe_cli_missing_data_is_a_clear_error(run, tmp_path, capsys):
    assert probe_main([str(run), "--data", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_folder_without_usable_clips_is_a_clear_error_with_a_report(tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "empty.mp4").write_bytes(b"")
    (videos / "notes.mov").write_text("not a video")
    run_dir = tmp_path / "run"
    assert pretrain_main([*TINY, f"data.root={videos}", "probe.enabled=false", f"run.dir={run_dir}"]) == 2
    err = capsys.readouterr().err
    assert "No usable clip" in err and "Traceback" not in err
    report = json.loads((run_dir / "data_report.json").read_text())
    assert report["counts_by_reason"] == {"empty_file": 1, "unreadable": 1}


def test_a_stopped_run_resumes_mid_epoch_from_a_manifest_without_losing_clips(demo, tmp_path):
    manifest = tmp_path / "train list.csv"
    rows = [f"{path},0,," for path in sorted(demo.unlabeled.iterdir())]
    manifest.write_text("path,start_s,end_s,label\n" + "\n".join(rows) + "\n")
    run_dir = tmp_path / "run"
    common = [*TINY, f"data.source.path={manifest}", "probe.enabled=false", f"run.dir={run_dir}",
              "run.checkpoint_every_n_steps=1"]
    assert pretrain_main([*common, "trainer.max_steps=3"]) == 0  # stops after 3 of the 4 batches of epoch 0
    first = json.loads((run_dir / "data_report.json").read_text())
    assert first["clips"] < 24
    assert pretrain_main([*common, f"run.resume={run_dir / 'checkpoints' / 'last.ckpt'}"]) == 0
    report = json.loads((run_dir / "data_report.json").read_text())
    assert report["files_seen"] == 25 and report["clips"] == 2 * 24  # each clip once per epoch
    assert report["counts_by_reason"] == {"unreadable": 1}


def test_resume_from_a_missing_checkpoint_is_a_clear_error(demo, tmp_path, capsys):
    args = [*TINY, f"data.root={demo.unlabeled}", "probe.enabled=false", f"run.dir={tmp_path / 'run'}",
            f"run.resume={tmp_path / 'nope.ckpt'}"]
    assert pretrain_main(args) == 2
    err = capsys.readouterr().err
    assert "run.resume" in err and "Traceback" not in err


def test_pretraining_can_start_from_an_export(run, demo, tmp_path, capsys):
    source = avssl.load_backbone(run / "export").encoder.state_dict()
    common = [*TINY, f"data.root={demo.unlabeled}", "probe.enabled=false", "trainer.max_steps=1",
              "optim.lr=1e-12", "optim.weight_decay=0"]
    started = tmp_path / "from-export"
    assert pretrain_main([*common, f"run.dir={started}", f"backbone.init_from={run / 'export'}"]) == 0
    fresh = tmp_path / "fresh"
    assert pretrain_main([*common, f"run.dir={fresh}"]) == 0
    for run_dir, same in ((started, True), (fresh, False)):
        weights = avssl.load_backbone(run_dir / "export").encoder.state_dict()
        close = all(torch.allclose(weights[k], source[k], atol=1e-6) for k in source)
        assert close == same, run_dir.name
    wider = [*common, f"run.dir={tmp_path / 'bad'}", f"backbone.init_from={run / 'export'}", "backbone.embed_dim=64"]
    assert pretrain_main(wider) == 2
    err = capsys.readouterr().err
    assert "embed_dim (export: 32, recipe: 64)" in err and "Traceback" not in err


def test_cnn_towers_pretrain_export_and_load(demo, tmp_path):
    run_dir = tmp_path / "cnn"
    args = [*TINY, f"data.root={demo.unlabeled}", "probe.enabled=false", f"run.dir={run_dir}", "trainer.max_steps=2",
            "backbone.kind=cnn", "backbone.audio_tower=l3_vgg", "objectives.masked_reconstruction.weight=0",
            "objectives.av_infonce.pass_name=unmasked"]
    assert pretrain_main(args) == 0
    model = avssl.load_backbone(run_dir / "export")
    assert type(model.encoder).__name__ == "CNNAudioVisualEncoder" and model.embed_dim == 32
    embedding = model.embed_file(next(demo.unlabeled.glob("clip_*.mp4")))
    assert embedding["audio"].shape == embedding["video"].shape == (32,)


def test_cnn_backbone_with_masked_reconstruction_is_a_config_error(capsys):
    assert pretrain_main([*TINY, "backbone.kind=cnn"]) == 2
    assert "objectives.masked_reconstruction reads" in capsys.readouterr().err


def test_accumulation_and_batch_limits_size_the_schedule_in_optimizer_steps(demo, tmp_path):
    run_dir = tmp_path / "accumulate"
    # 3 batches of 8 per epoch, limited to 2, accumulated by 2: one optimizer step per epoch
    args = [*TINY, f"data.root={demo.unlabeled}", "probe.enabled=false", f"run.dir={run_dir}",
            "trainer.limit_train_batches=2", "trainer.accumulate_grad_batches=2", "optim.scheduler=cosine",
            "optim.warmup_epochs=1"]
    assert pretrain_main(args) == 0
    ckpt = torch.load(run_dir / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2
    schedule = ckpt["lr_schedulers"][0]  # lightly's CosineWarmupScheduler counts optimizer steps
    assert (schedule["warmup_epochs"], schedule["max_epochs"]) == (1, 2)


def test_fast_dev_run_is_a_smoke_run_that_still_exports(demo, tmp_path, capsys, caplog):
    run_dir = tmp_path / "smoke"
    args = [*TINY, f"data.root={demo.unlabeled}", f"probe.data={demo.labeled}", f"run.dir={run_dir}",
            "trainer.fast_dev_run=true", "trainer.enable_progress_bar=false"]
    with caplog.at_level(logging.INFO):
        assert pretrain_main(args) == 0
    out = capsys.readouterr().out
    assert "smoke run       trainer.fast_dev_run=True" in out
    assert "checkpoint      none (smoke run" in out
    # a smoke run takes seconds: neither probe nor the kNN monitor runs, and the summary says so
    assert "linear probe    none (smoke run" in out and "linear probe top-1" not in out
    assert not (run_dir / "probe.json").exists()
    assert not [r for r in caplog.records if r.name.startswith(("avssl.evaluation", "avssl.callbacks.linear_probe", "avssl.callbacks.knn"))]
    assert avssl.load_backbone(run_dir / "export").embed_dim == 32
    assert not (run_dir / "checkpoints" / "last.ckpt").exists()
    assert not [r for r in caplog.records if r.name == "avssl.progress"]  # enable_progress_bar=false: no progress


def test_piped_output_has_progress_lines_and_no_lightning_noise(demo, tmp_path):
    # batch size 23 of 24 clips: the epoch's second batch has one clip and is skipped (training_step -> None)
    args = [*TINY, f"data.root={demo.unlabeled}", "probe.enabled=false", f"run.dir={tmp_path / 'run'}",
            "data.batch_size=23", "trainer.max_epochs=1"]
    proc = subprocess.run([sys.executable, "-m", "avssl.pretrain", *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    output = proc.stdout + proc.stderr
    assert "\r" not in output  # no progress-bar redraws in a log file
    for noise in ("Tip:", "litlogger", "LeafSpec", "returned `None`", "to estimate number of stepping batches"):
        assert noise not in output, noise
    assert re.search(r"INFO avssl.progress: epoch 1/1  batch 2/2  step \d+  train/loss=\S+  [\d.]+ batches/s", proc.stderr)
