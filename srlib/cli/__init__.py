"""Command line: `python -m srlib upscale|info|export|train ...` (or `srlib ...` once installed).

python -m srlib upscale photos/ extra.jpg "scans/*.tif" -o out/ --scale 4
python -m srlib upscale photos/ -o out/ --outscale 3 --ext auto --precision bf16
python -m srlib info checkpoints/resnet_unet_x2.pt
python -m srlib export runs/unet/best.pt unet_small.pt        (writes unet_small_x2.pt)
python -m srlib export --format ncnn runs/compact/best.pt models/    (models/compact_best_x2.*)
python -m srlib train --preset quick --model unet --loss l1 --data photos/ --out runs/mine
python -m srlib cache --src data/valued/images --dst data/valued/cache

One module per command (upscale, info, export, train, cache), each with `add_parser(sub)`, which
registers the subcommand and its flags, and `run(args)`, which returns the exit code; errors
that stop a command before any work are a CliError (srlib.cli.errors): one stderr line, exit 2.
`upscale` and `train` say more about their exit codes (`python -m srlib train --help`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from srlib.cli import cache, export, info, train, upscale
from srlib.cli.errors import CliError, report

# In the order `--help` lists them.
COMMANDS = (upscale, info, export, train, cache)
# The first line of `python -m srlib --help`.
DESCRIPTION = __doc__.split("\n")[0]


def version() -> str:
    """srlib's version: the installed distribution's, else srlib.__version__ (a source tree)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("srlib")
    except PackageNotFoundError:
        import srlib

        return srlib.__version__


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser for `python -m srlib`: each command adds its own subcommand."""
    # `srlib` when run as the installed console script, else `python -m srlib`.
    prog = "srlib" if Path(sys.argv[0]).name == "srlib" else "python -m srlib"
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"srlib {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (argparse's too: 0 for --help, 2 for usage)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors: argparse has printed them
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 2
    try:
        return args.func(args)
    except CliError as e:
        return report(e)
