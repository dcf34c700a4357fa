"""Data for avssl: from video files to batches (see docs/data.md).

Importing the package is light; import the module you need:

* `datamodules.pretrain.AVPretrainDataModule`: unlabelled videos streamed from a folder, a
  manifest or WebDataset shards, for pretraining;
* `datamodules.labeled.LabeledClipDataModule`: class folders, for linear probes;
* `datamodules.demo.ensure_demo_clips`: the built-in synthetic demo set;
* `datamodules.clips.load_clip`: one clip of one file as model inputs;
* `datamodules.preprocessing.Preprocessing` and `datamodules.policies.DataPolicies`: the settings
  that make a clip, and what happens to files that cannot give a normal one;
* `datamodules.report.DataReport` and `datamodules.errors`: skipped files and their reasons.

Pretraining, in data-flow order: `sources` (`folder`, `manifest`, `shards`: groups of videos) ->
`epoch_plan` (which reader reads which videos, resume) -> `stream` (the IterableDataset) ->
`isolation` (a decoder process with a time limit) -> `sampling` (clip starts) -> `views` (views of a
clip, audio offsets) -> `decode` (decord frames) and `audio_decode` (PyAV audio by timestamps) ->
`video_transforms` and `audio_features`, with `augmentation` (``data.augment``, pretraining only)
-> `collate` (batch dict). Labelled data: `folder` -> `scan` (probe files, choose clips) ->
`clip_dataset` -> the same decoding, never augmented. `fbank_stats` computes normalisation
statistics of a source; `encode` writes mp4s for the demo and the tests.
"""
