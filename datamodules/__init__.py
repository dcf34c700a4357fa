"""Data for avssl: from video files to batches (see docs/data.md).

Importing the package is light; import the module you need:

* `datamodules.pretrain.AVPretrainDataModule`: unlabelled folder of videos, for pretraining;
* `datamodules.labeled.LabeledClipDataModule`: class folders, for linear probes;
* `datamodules.demo.ensure_demo_clips`: the built-in synthetic demo set;
* `datamodules.clips.load_clip`: one clip of one file as model inputs;
* `datamodules.preprocessing.Preprocessing`: the settings that make a clip;
* `datamodules.report.DataReport` and `datamodules.errors`: skipped files and their reasons.

The parts, in data-flow order: `folder` (find files) -> `scan` (probe them, choose clips) ->
`clip_dataset` (one clip per item) -> `decode` (decord) -> `video_transforms` and
`audio_features` -> `collate` (batch dict). `encode` writes mp4s for the demo and the tests.
"""
