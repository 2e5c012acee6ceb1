"""benchmarks/seeds.py end to end for 2 steps: a run's lr can differ from the preset's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_seeds_lr_reaches_the_run(tmp_path: Path) -> None:
    cmd = [sys.executable, str(REPO / "benchmarks" / "seeds.py"), "--seeds", "0", "--models",
           "unet", "--losses", "l1", "--steps", "2", "--lr", "5e-4", "--jobs", "1",
           "--json", str(tmp_path / "r.json"), "--out", str(tmp_path / "runs")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads((tmp_path / "r.json").read_text())
    assert [(r["lr"], r["steps"]) for r in rows] == [(5e-4, 2)]
    assert "lr [0.0005]" in done.stdout
    # Its own run folder: a rerun at the preset's lr does not resume this one.
    assert (tmp_path / "runs" / "unet_l1_s0_lr0.0005" / "last.pt").is_file()
