"""The command line's errors: one stderr line and exit code 2, said in one place."""

from __future__ import annotations

import os
import sys


class CliError(Exception):
    """A problem that stops a command before any file is tried: one stderr line, exit code 2.

    `quiet`: exit 2 without the line (under torchrun rank 0 alone says it).
    """

    quiet = False


def one_line(e: BaseException) -> str:
    """`Type: first line of the message`, for errors from torch/pickle with long messages."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def under_torchrun() -> bool:
    """Whether torchrun started this process (it sets RANK, WORLD_SIZE and LOCAL_RANK)."""
    return {"RANK", "WORLD_SIZE", "LOCAL_RANK"} <= set(os.environ)


def report(e: CliError) -> int:
    """Say a CliError on stderr (unless quiet); the exit code, 2."""
    if not e.quiet:
        sys.stderr.write(f"error: {e}\n")  # one write: processes sharing a terminal
        sys.stderr.flush()  # (torchrun) then never run two lines into one
    return 2
