"""Both notebooks run end to end with the `smoke` preset and show figures, without errors."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["upscale_unet.ipynb", "upscale_resnet.ipynb"])
def test_notebook_runs_with_smoke_preset(name, tmp_path, monkeypatch):
    monkeypatch.setenv("SRLIB_PRESET", "smoke")
    monkeypatch.setenv("SRLIB_OUT_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("SRLIB_BENCHMARK", raising=False)
    before = {p: p.stat().st_mtime for d in ("images", "checkpoints") for p in ROOT.glob(f"{d}/*")}
    nb = nbformat.read(ROOT / name, as_version=4)
    NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 5  # preview, curves, grids
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "| bicubic" in text and "best model" in text  # the comparison table and verdict
    # The smoke run must not overwrite the committed figures and checkpoints.
    after = {p: p.stat().st_mtime for d in ("images", "checkpoints") for p in ROOT.glob(f"{d}/*")}
    assert after == before
    assert (tmp_path / "runs").is_dir() and os.listdir(tmp_path / "runs")
