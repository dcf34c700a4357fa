"""Forward + backward throughput and peak memory of the CAV-MAE encoder, SDPA against math attention.

    python bench/backbone_throughput.py [--sizes tiny small base] [--frames 1 8 16] [--batch 2]
        [--repeats 3] [--warmup 1] [--device cpu|cuda] [--mask-ratio 0.0] [--out results/...json]

Builds ``cav_mae_<size>`` at CAV-MAE's input size (fbank 1024 x 128, 224 px frames; ``--frames``
frames per clip with per-frame patches), and for each size x frame count times one training step
of the encoder alone (``forward_features`` then ``backward`` of the sum of the joint tokens) with
``attention="sdpa"`` and then ``attention="math"`` in the same process. On
CUDA the step runs under bf16 autocast and peak memory comes from
``torch.cuda.max_memory_allocated``; on CPU each setting runs in a fresh process and peak memory
is its peak RSS above the RSS after warm-up (so it counts activations and gradients, not weights). Prints median and min-max samples/s per setting and the SDPA/math ratio, and
writes the figures as JSON (``--out``).

The CPU defaults (batch 2, 3 repeats, ``--sizes tiny``) finish in minutes; ``base`` at 16 frames
on CPU takes far longer.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import torch

from avssl.backbones.masking import MaskSpec
from avssl.backbones import create_backbone


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def _step(model: torch.nn.Module, audio: torch.Tensor, video: torch.Tensor, mask_ratio: float, autocast) -> None:
    with autocast:
        mask = MaskSpec(ratio=mask_ratio)
        out = model.forward_features(audio, video, mask, mask)
    out["joint_tokens"].float().sum().backward()
    model.zero_grad(set_to_none=True)


def measure(size: str, frames: int, attention: str, args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    model = create_backbone(f"cav_mae_{size}", num_frames=frames, attention=attention).to(device).train()
    audio = torch.randn(args.batch, 1, 1024, 128, device=device)
    video = torch.randn(args.batch, 3, frames, 224, 224, device=device)
    cuda = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()
    for _ in range(args.warmup):
        _step(model, audio, video, args.mask_ratio, autocast)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_before = _rss_mb()  # model, inputs and allocator caches after warm-up
    rates = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        _step(model, audio, video, args.mask_ratio, autocast)
        if cuda:
            torch.cuda.synchronize()
        rates.append(args.batch / (time.perf_counter() - start))
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else _peak_rss_mb() - rss_before
    return {"samples_per_s": rates, "peak_mem_mb": peak}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny"], choices=["tiny", "small", "base", "large"])
    parser.add_argument("--frames", nargs="+", type=int, default=[1, 8, 16])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--mask-ratio", type=float, default=0.0, help="token drop ratio (CAV-MAE pretraining: 0.75)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=None, help="JSON path (default: results/backbone_throughput-<device>.json)")
    args = parser.parse_args(argv)
    rows = []
    for size in args.sizes:
        for frames in args.frames:
            row = {"size": size, "frames": frames}
            for attention in ("sdpa", "math"):
                if args.device == "cpu":  # a fresh process per setting, so its peak RSS is its own
                    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                        r = pool.submit(measure, size, frames, attention, args).result()
                else:
                    r = measure(size, frames, attention, args)
                s = r["samples_per_s"]
                row[attention] = {"median": statistics.median(s), "min": min(s), "max": max(s), "peak_mem_mb": r["peak_mem_mb"]}
            row["sdpa_over_math"] = row["sdpa"]["median"] / row["math"]["median"]
            rows.append(row)
            sys.stdout.write(
                f"{size:>5} {frames:>2} frames  sdpa {row['sdpa']['median']:.2f} [{row['sdpa']['min']:.2f}-{row['sdpa']['max']:.2f}] "
                f"samples/s ({row['sdpa']['peak_mem_mb']:.0f} MB)  math {row['math']['median']:.2f} "
                f"[{row['math']['min']:.2f}-{row['math']['max']:.2f}] ({row['math']['peak_mem_mb']:.0f} MB)  "
                f"sdpa/math {row['sdpa_over_math']:.2f}\n"
            )
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or platform.machine()
    result = {"device": device_name, "torch": torch.__version__, "threads": torch.get_num_threads(), "args": vars(args), "rows": rows}
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / f"backbone_throughput-{args.device.split(':')[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    sys.stdout.write(f"wrote {out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
