"""Clips/s of the pretraining datamodule against bare decord decoding of the same frames and samples.

    python bench/data_throughput.py [--videos 48] [--repeats 5] [--workers 2] [--preset cav_mae]

Renders (once, cached under ``--cache``) a corpus of 10 s videos shaped like AudioSet/VGGSound
downloads: 320x240 H.264 at 25 fps with 44.1 kHz stereo AAC. Then, in the same process and
alternating, it times

* **datamodule**: `ClipStream` in a DataLoader with ``--workers`` workers: isolated decoder process,
  decord frames, PyAV audio placed by timestamps, resampling, kaldi fbank, resize/crop/normalise,
  batching, report records;
* **bare decord**: a DataLoader with the same workers that only decodes, with decord, exactly the
  frames (`decode.frame_indices`) and the audio samples (``AudioReader(sample_rate, mono=True)``,
  the same sample range) of the same clips, and returns the arrays.

Each full pass over the corpus is one repeat; the script prints median and spread (min-max) of
clips/s for both, their ratio, and clips/s per worker core (to size the CPU count for a GPU), and
writes the figures as JSON next to this script (``results/``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import av
import decord
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.audio_features import log_mel_fbank
from datamodules.decode import clip_starts, frame_indices, probe_file
from datamodules.policies import DataPolicies
from datamodules.preprocessing import Preprocessing
from datamodules.sources import SourceConfig, open_source
from datamodules.stream import ClipStream, StreamSettings

PRESETS = {
    # CAV-MAE: 10 s of audio (128 x 1024 fbank), one 224 px frame.
    "cav_mae": Preprocessing(),
    # MAViL / video-heavy: 8 frames at 2 fps over 4 s, 224 px; 4 s of audio.
    "frames8": Preprocessing(clip_seconds=4.0, num_frames=8, fps=2.0, audio_frames=400),
}


def render_corpus(folder: Path, count: int, seconds: float = 10.0) -> list[Path]:
    """``count`` 320x240 25 fps H.264 + 44.1 kHz stereo AAC mp4 files (kept between runs)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    rng = np.random.default_rng(0)
    for i in range(count):
        path = folder / f"video_{i:04d}.mp4"
        paths.append(path)
        if path.exists():
            continue
        tmp = path.with_suffix(".part.mp4")
        with av.open(str(tmp), "w") as container:
            video = container.add_stream("libx264", rate=25)
            video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
            video.options = {"preset": "medium", "threads": "2"}
            audio = container.add_stream("aac", rate=44100)
            audio.layout = "stereo"
            y, x = np.mgrid[0:240, 0:320]
            for t in range(round(seconds * 25)):
                phase = t / 25 * (1 + i % 5)
                base = 128 + 100 * np.sin(x / 23 + phase) * np.cos(y / 17 - phase)
                noise = rng.integers(0, 24, size=(240, 320))
                frame = np.clip(base + noise, 0, 255).astype(np.uint8)
                rgb = np.stack([frame, np.roll(frame, 7 * i, axis=1), 255 - frame], axis=-1)
                video_frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                video_frame.pts = t
                container.mux(video.encode(video_frame))
            samples = np.arange(round(seconds * 44100)) / 44100
            wave = 0.2 * np.sin(2 * np.pi * (200 + 50 * i) * samples) + 0.02 * rng.standard_normal(samples.size)
            stereo = np.stack([wave, np.roll(wave, 100)]).astype(np.float32)
            for start in range(0, samples.size, 1024):
                chunk = np.ascontiguousarray(stereo[:, start:start + 1024])
                audio_frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                audio_frame.sample_rate, audio_frame.pts = 44100, start
                container.mux(audio.encode(audio_frame))
            container.mux(video.encode(None))
            container.mux(audio.encode(None))
        tmp.rename(path)
    return paths


class BareDecord(Dataset):
    """Decodes only, with decord: the given frames and the given audio samples of each clip."""

    def __init__(self, plans: list[tuple[str, list[int], int, int]], sample_rate: int) -> None:
        self.plans = plans
        self.sample_rate = sample_rate

    def __len__(self) -> int:
        return len(self.plans)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        path, frames, first, last = self.plans[index]
        video = decord.VideoReader(path, num_threads=1).get_batch(frames).asnumpy()
        audio = decord.AudioReader(path, sample_rate=self.sample_rate, mono=True)[first:last].asnumpy()
        return video, audio


def clip_plans(paths: list[Path], pre: Preprocessing) -> list[tuple[str, list[int], int, int]]:
    """The frames and audio sample range the datamodule decodes for each file (epoch 0, uniform)."""
    plans = []
    for path in paths:
        info = probe_file(path)
        (start,) = clip_starts(info, pre)
        first = round(start * pre.sample_rate)
        plans.append((str(path), frame_indices(info, start, pre, DataPolicies()), first,
                      first + round(pre.clip_seconds * pre.sample_rate)))
    return plans


def time_datamodule(folder: Path, pre: Preprocessing, workers: int) -> tuple[float, int]:
    stream = ClipStream(open_source(SourceConfig(path=str(folder))),
                        StreamSettings(preprocessing=pre, batch_size=16, num_workers=workers))
    started = time.perf_counter()
    clips = sum(len(batch["meta"]["path"]) for batch in DataLoader(stream, batch_size=None, num_workers=workers))
    return time.perf_counter() - started, clips


def time_bare(plans: list[tuple[str, list[int], int, int]], pre: Preprocessing, workers: int) -> tuple[float, int]:
    loader = DataLoader(BareDecord(plans, pre.sample_rate), batch_size=None, num_workers=workers)
    started = time.perf_counter()
    clips = sum(1 for _ in loader)
    return time.perf_counter() - started, clips


def fbank_ms(pre: Preprocessing, repeats: int = 20) -> float:
    """Median milliseconds of one clip's fbank on this CPU (one thread, as in a worker)."""
    waveform = torch.randn(round(pre.clip_seconds * pre.sample_rate)) * 0.1
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        log_mel_fbank(waveform, pre)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def summary(rates: list[float]) -> dict[str, float]:
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cav_mae")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("AVSSL_CACHE_DIR", Path.home() / ".cache/avssl")) / "bench-corpus")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pre = PRESETS[args.preset]
    paths = render_corpus(args.cache, args.videos)
    plans = clip_plans(paths, pre)
    datamodule_rates, bare_rates = [], []
    for repeat in range(args.repeats):
        seconds, clips = time_datamodule(args.cache, pre, args.workers)
        assert clips == len(paths), f"the datamodule gave {clips} clips for {len(paths)} files"
        datamodule_rates.append(clips / seconds)
        seconds, clips = time_bare(plans, pre, args.workers)
        bare_rates.append(clips / seconds)
        print(f"repeat {repeat}: datamodule {datamodule_rates[-1]:.1f} clips/s, bare decord {bare_rates[-1]:.1f} clips/s",
              file=sys.stderr)
    ratios = [d / b for d, b in zip(datamodule_rates, bare_rates)]
    result: dict[str, Any] = {
        "preset": args.preset, "preprocessing": pre.__dict__, "videos": len(paths), "repeats": args.repeats,
        "workers": args.workers, "cpu_cores": len(os.sched_getaffinity(0)), "machine": platform.processor() or platform.machine(),
        "datamodule_clips_per_s": summary(datamodule_rates), "bare_decord_clips_per_s": summary(bare_rates),
        "ratio": summary(ratios), "datamodule_clips_per_s_per_worker": statistics.median(datamodule_rates) / args.workers,
        "fbank_ms_per_clip_cpu": fbank_ms(pre),
    }
    out = Path(__file__).parent / "results" / f"data_throughput-{args.preset}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    d, b, r = result["datamodule_clips_per_s"], result["bare_decord_clips_per_s"], result["ratio"]
    print(f"| {args.preset} | {args.workers} | {d['median']:.1f} ({d['min']:.1f}-{d['max']:.1f}) | "
          f"{b['median']:.1f} ({b['min']:.1f}-{b['max']:.1f}) | {r['median']:.2f} ({r['min']:.2f}-{r['max']:.2f}) | "
          f"{result['datamodule_clips_per_s_per_worker']:.1f} | {result['fbank_ms_per_clip_cpu']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
