"""Benchmark runs in fresh processes, `jobs` at a time, each on its own thread count.

Two processes on a 2-core machine slow each other far more than 2x unless each uses one thread
and OMP_WAIT_POLICY=PASSIVE (idle OpenMP threads then sleep instead of spinning).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any


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
