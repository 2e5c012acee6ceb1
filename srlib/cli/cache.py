"""`srlib cache`: decode a folder of photos once into memory-mappable .npy files (fast crops).

The same command as `python -m srlib.data cache` (srlib.data's old command line, `main` here).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from srlib.cli.errors import CliError

HELP = "decode images once into memory-mappable .npy files"


def add_arguments(cache: argparse.ArgumentParser) -> None:
    """The command's flags."""
    cache.add_argument("--src", default="data/valued/images")
    cache.add_argument("--dst", default="data/valued/cache")
    cache.add_argument("--max-side", type=int, default=2048)
    cache.add_argument("--workers", type=int, default=None)
    cache.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="skip larger images (decompression-bomb guard; default: PIL's, ~89.5 MP)",
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The `cache` subcommand."""
    cache = sub.add_parser("cache", help=HELP)
    add_arguments(cache)
    cache.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Cache every image under --src in --dst; CliError if --src is not a folder."""
    if not Path(args.src).is_dir():
        raise CliError(f"--src {args.src} is not a folder")
    _cache(args)
    return 0


def _cache(args: argparse.Namespace) -> None:
    """prepare_cache, and the line that says what it did."""
    from srlib.data import find_images, prepare_cache

    n = len(find_images(args.src))
    done = prepare_cache(args.src, args.dst, args.max_side, args.workers, args.max_pixels)
    print(f"{len(done)} of {n} images cached in {args.dst} (longest side <= {args.max_side})")


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: `python -m srlib.data cache --src DIR --dst DIR --max-side 2048 ...`."""
    from srlib import data

    parser = argparse.ArgumentParser(prog="python -m srlib.data", description=data.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    add_arguments(sub.add_parser("cache", help=HELP))
    args = parser.parse_args(argv)
    if not Path(args.src).is_dir():
        parser.error(f"--src {args.src} is not a folder")
    _cache(args)
