"""``python -m avssl.convert KIND SRC --out DIR``: turn a released checkpoint into an avssl export."""

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
    parser.add_argument("src", help="the released checkpoint, e.g. cav-mae-scale++.pth")
    parser.add_argument("--out", required=True, help="directory to write model.safetensors and config.yaml into")
    parser.add_argument(
        "--num-heads", type=int, default=None, help="attention heads (checkpoints do not store them; default: width / 64)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        out = convert(args.kind, args.src, args.out, num_heads=args.num_heads)
    except (FileNotFoundError, ValueError) as err:
        print(f"avssl.convert: error: {err}", file=sys.stderr)
        return 2
    print(f"converted {args.src} -> {out / WEIGHTS_FILE}, {out / CONFIG_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
