"""Both notebooks run end to end with the `smoke` preset and show figures, without errors."""

import os
import subprocess
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def _git_status() -> str | None:
    """`git status --porcelain` of the repository (None outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", ["upscale_unet.ipynb", "upscale_resnet.ipynb"])
def test_notebook_runs_with_smoke_preset(name, tmp_path, monkeypatch):
    monkeypatch.setenv("SRLIB_PRESET", "smoke")
    monkeypatch.setenv("SRLIB_OUT_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("SRLIB_BENCHMARK", raising=False)
    monkeypatch.delenv("SRLIB_SAVE", raising=False)
    before = {p: p.stat().st_mtime for d in ("images", "checkpoints") for p in ROOT.glob(f"{d}/*")}
    status = _git_status()
    nb = nbformat.read(ROOT / name, as_version=4)
    NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 5  # preview, curves, grids
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "| bicubic" in text  # the comparison table...
    for loss in ("l1", "perceptual"):  # ...and a verdict against bicubic for every model
        assert f"({loss}): " in text and "over bicubic" in text
    assert "NOT LEARNING" in text  # 4 smoke steps learn nothing, and the notebook says so
    # The smoke run must not overwrite the committed figures and checkpoints.
    after = {p: p.stat().st_mtime for d in ("images", "checkpoints") for p in ROOT.glob(f"{d}/*")}
    assert after == before
    assert _git_status() == status  # nothing else in the repository changed either
    assert (tmp_path / "runs").is_dir() and os.listdir(tmp_path / "runs")
