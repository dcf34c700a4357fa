"""``python -m avssl.convert KIND SRC --out DIR``: turn a released checkpoint into an avssl export.

XKD releases one file per backbone, so it takes them as options:
``python -m avssl.convert xkd --audio aud_student.pth.tar --video vid_student.pth.tar --out DIR``
(or ``python -m avssl.convert xkd DIR_WITH_BOTH --out DIR [--which teacher]``).
"""

from __future__ import annotations

import argparse
import logging
import sys

from avssl.convert import CONVERTERS, convert
from avssl.loading import CONFIG_FILE, WEIGHTS_FILE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m avssl.convert",
        description="Convert a released checkpoint into an avssl export (model.safetensors + config.yaml).",
    )
    parser.add_argument("kind", help=f"checkpoint family: {', '.join(sorted(CONVERTERS))}")
    parser.add_argument(
        "src", nargs="?", default=None, help="the released checkpoint, e.g. cav-mae-scale++.pth (xkd: a directory of backbone files, or omit it)"
    )
    parser.add_argument("--out", required=True, help="directory to write model.safetensors and config.yaml into")
    parser.add_argument(
        "--num-heads", type=int, default=None, help="attention heads (checkpoints do not store them; default: width / 64)"
    )
    parser.add_argument("--audio", default=None, help="xkd: the audio backbone file, e.g. aud_student.pth.tar")
    parser.add_argument("--video", default=None, help="xkd: the video backbone file, e.g. vid_student.pth.tar")
    parser.add_argument("--which", default=None, choices=["student", "teacher"], help="xkd: which files to take from SRC (default: student)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # Only the options given on the command line are passed, so each converter sees its own.
    options = {"num_heads": args.num_heads, "audio": args.audio, "video": args.video, "which": args.which}
    options = {k: v for k, v in options.items() if v is not None}
    try:
        out = convert(args.kind, args.src, args.out, **options)
    except (FileNotFoundError, ValueError) as err:
        print(f"avssl.convert: error: {err}", file=sys.stderr)
        return 2
    print(f"converted {args.src or ', '.join(str(options[k]) for k in ('audio', 'video') if k in options)} -> {out / WEIGHTS_FILE}, {out / CONFIG_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
