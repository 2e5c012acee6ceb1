"""What the benchmark scripts share: tables, runs in fresh processes, the ISA limit, the command.

Imports neither torch nor srlib at module level: a script limits torch's ISA (`isa_argument`,
`restrict_isa`) before torch loads, and `run_json` children choose their own thread count.

Two processes on a 2-core machine slow each other far more than 2x unless each uses one thread
and OMP_WAIT_POLICY=PASSIVE (idle OpenMP threads then sleep instead of spinning): `run_json`
starts every child that way.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from srlib.perf import restrict_isa  # imports no torch

__all__ = [
    "REPO",
    "command_line",
    "isa_argument",
    "print_table",
    "restrict_isa",
    "run_all",
    "run_json",
]

REPO = Path(__file__).resolve().parents[1]


def command_line() -> str:
    """This run's command as typed: 'python -m benchmarks.x ...' or 'python benchmarks/x.py ...'."""
    return f"python {shlex.join(sys.orig_argv[1:])}"


def isa_argument(parser: argparse.ArgumentParser) -> None:
    """Add `--isa avx2`: pass its value to `restrict_isa` before torch is imported."""
    parser.add_argument("--isa", choices=["avx2"], default=None, help="limit torch to this ISA")


def print_table(header: list[str], rows: list[list]) -> None:
    """A markdown table with right-aligned numbers (every column after the first).

    For result dicts, srlib.metrics.format_table (left-aligned, columns from the keys) is the
    other table the scripts print.
    """
    cells = [header, *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for j, r in enumerate(cells):
        line = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        print("| " + " | ".join(line) + " |")
        if j == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def run_json(argv: Sequence[str], threads: int) -> dict[str, Any]:
    """Run `python argv...`; its last stdout line starting with '{' is the result (JSON)."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        return {"error": f"exit {proc.returncode}: {(proc.stderr or proc.stdout)[-2000:]}"}
    return json.loads(lines[-1])


def run_all(fn: Callable[[Any], dict], jobs: Sequence[Any], workers: int) -> list[dict]:
    """fn(job) for every job, `workers` at a time, results in job order."""
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, jobs))
