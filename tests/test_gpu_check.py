"""benchmarks/gpu_check.sh: the GPU readiness check runs on CPU in --tiny mode, a row per run."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def _load_module():
    """benchmarks/gpu_check.py, as a module of the `benchmarks` package."""
    from benchmarks import gpu_check

    return gpu_check


def _photo(rng, size):
    """A smooth random RGB photo (H, W, 3) uint8: structure a model can learn, unlike noise."""
    coarse = rng.integers(0, 256, (size[0] // 8, size[1] // 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize(size[::-1], Image.Resampling.BICUBIC))


def _fake_bench(root, rng):
    """Set5/ and Set14/ in the benchmark layout, two tiny x2 pairs each."""
    for name in ("Set5", "Set14"):
        folder = root / name / "image_SRF_2"
        folder.mkdir(parents=True)
        for i in (1, 2):
            hr = Image.fromarray(_photo(rng, (48, 40)))
            hr.save(folder / f"img_00{i}_SRF_2_HR.png")
            hr.resize((20, 24), Image.Resampling.BICUBIC).save(folder / f"img_00{i}_SRF_2_LR.png")


def test_tiny_cpu_run_prints_a_row_per_run(tmp_path):
    rng = np.random.default_rng(0)
    train = tmp_path / "train"
    train.mkdir()
    for i in range(4):
        Image.fromarray(_photo(rng, (96, 112))).save(train / f"photo{i}.png")
    _fake_bench(tmp_path / "bench", rng)
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "GPU_CHECK_TINY": "1"}
    args = ["--device", "cpu", "--train", str(train), "--bench", str(tmp_path / "bench")]
    proc = subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "torch " in proc.stdout and "device: cpu" in proc.stdout
    assert "total wall time:" in proc.stdout
    table = (out / "gpu_check.md").read_text()
    assert "scored on Set5, Set14 x2" in table
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    cells = [dict(zip(header, r.strip("|").split("|"), strict=True)) for r in rows[1:]]
    cells = [{k: v.strip() for k, v in c.items()} for c in cells]
    runs = [c for c in cells if c["device"] == "cpu"]
    assert [(c["model"], c["AMP"]) for c in runs] == [
        ("UNet", "bf16: cuda only"),
        ("ResNet-UNet", "bf16: cuda only"),
        ("UNet", "off"),
    ]
    for c in runs:
        assert c["steps"] == "3" and c["peak memory"] == "-"
        assert float(c["samples/s"]) > 0
        assert 10 < float(c["Set5 PSNR-Y"]) < 100 and 10 < float(c["Set14 PSNR-Y"]) < 100
    assert cells[0]["model"] == "bicubic (MATLAB)"
    log = (out / "gpu_check.log").read_text()
    assert all(row in log for row in rows), "the log holds the printed table"


def test_missing_benchmark_scores_the_held_out_photos_and_says_so(tmp_path):
    gpu_check = _load_module()
    args = gpu_check.parse_args(["--tiny", "--bench", str(tmp_path / "nowhere")])
    held_out = [("skimage/moon", _photo(np.random.default_rng(1), (40, 48)))]
    folders, line = gpu_check.eval_folders(args, held_out, tmp_path)
    assert list(folders) == ["held-out PSNR-Y"]
    assert (folders["held-out PSNR-Y"] / "moon.png").is_file()
    assert "NOT FOUND" in line and "held-out photos instead (moon" in line
    with pytest.raises(SystemExit, match="no held-out photos"):
        gpu_check.eval_folders(args, [], tmp_path)


@pytest.mark.parametrize(
    "argv", [["--budget", "-1"], ["--steps", "0"], ["--workers", "-2"], ["--train", "/nowhere"]]
)
def test_bad_options_are_refused(argv, capsys):
    with pytest.raises(SystemExit):
        _load_module().parse_args(argv)
    assert "error:" in capsys.readouterr().err
