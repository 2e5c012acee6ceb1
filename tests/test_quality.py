"""benchmarks/quality.py end to end on tiny generated data: per-model lr, --jobs, --keep."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_realworld import make_bench

REPO = Path(__file__).resolve().parents[1]


def _module(name: str):
    """A benchmarks/ script as a module of the `benchmarks` package."""
    return importlib.import_module(f"benchmarks.{name}")


@pytest.fixture
def tiny_data(tmp_path: Path) -> tuple[Path, Path]:
    """A training folder of 3 photos-ish and a bench root holding Tiny/ at x2 and x4."""
    train = tmp_path / "train"
    train.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        coarse = rng.uniform(0, 255, (9, 9, 3))
        img = np.kron(coarse, np.ones((5, 5, 1))).astype(np.uint8)  # 45 x 45, blocky edges
        Image.fromarray(img).save(train / f"p{i}.png")
    bench = tmp_path / "bench"
    make_bench(bench / "Tiny", scale=2)
    make_bench(bench / "Tiny", scale=4)
    return train, bench


def _quality(
    train: Path, bench: Path, *extra: str, script: str = "quality.py", module: bool = False
) -> str:
    """Run a benchmarks/ script as a file (python benchmarks/x.py) or as a module (-m)."""
    path = REPO / "benchmarks" / script
    run = ["-m", f"benchmarks.{path.stem}"] if module else [str(path)]
    cmd = [sys.executable, *run, "--train", str(train),
           "--bench", str(bench), "--sets", "Tiny", "--budget", "1", "--patch", "16",
           "--crops-per-image", "2", "--batch", "2", "--threads", "1", *extra]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_two_jobs_train_each_model_at_its_own_lr(tiny_data, tmp_path):
    train, bench = tiny_data
    out = _quality(train, bench, "--models", "espcn,rescnn", "--jobs", "2",
                   "--out", str(tmp_path / "t.md"))  # fmt: skip
    table = (tmp_path / "t.md").read_text()
    assert "lr per model" in table
    rows = [line for line in table.splitlines() if "(L1, peer)" in line]
    assert len(rows) == 4  # two models x (x2, x4)
    # Each model's own lr from MODELS: the residual CNN's search gave 1e-3.
    assert all("| 0.001 |" in r for r in rows if "residual CNN" in r)
    assert all(re.search(r"\| 0\.002 +\|", r) for r in rows if "ESPCN" in r)  # padded
    assert out.count("trained ") == 2


def test_compact_and_span_train_as_peers(tiny_data, tmp_path):
    """The community's architectures (srlib.community) in the table, x2 and x4, at 5e-4. Run as
    `python -m benchmarks.quality`: spawned --jobs workers find the module by its name."""
    train, bench = tiny_data
    out = _quality(train, bench, "--models", "compact,span", "--jobs", "2",
                   "--out", str(tmp_path / "t.md"), module=True)  # fmt: skip
    table = (tmp_path / "t.md").read_text()
    for label in ("Compact (L1, peer)", "SPAN (L1, peer)"):
        rows = [row for row in table.splitlines() if row.startswith("| ") and label in row]
        assert len(rows) == 2 and all("| 0.0005 |" in r for r in rows), table  # x2 and x4
    assert out.count("trained ") == 2


def test_one_lr_for_all_and_kept_runs(tiny_data, tmp_path):
    train, bench = tiny_data
    keep = tmp_path / "keep"
    _quality(train, bench, "--models", "rescnn", "--lr", "5e-4", "--degradation", "realistic",
             "--keep", str(keep), "--out", str(tmp_path / "t.md"))  # fmt: skip
    table = (tmp_path / "t.md").read_text()
    assert "lr 0.0005" in table and "realistic degradation" in table
    assert (keep / "rescnn_realistic" / "last.pt").is_file()  # named after its degradation


def test_x4_passes_on_kept_runs(tiny_data, tmp_path):
    """benchmarks/x4_passes.py: every pass pairing and the pass-1 table, from --keep runs."""
    train, bench = tiny_data
    keep = tmp_path / "keep"
    _quality(train, bench, "--models", "unet,rescnn", "--ema", "0.9", "--keep", str(keep),
             "--out", str(tmp_path / "t.md"))  # fmt: skip
    assert "EMA 0.9" in (tmp_path / "t.md").read_text()
    cmd = [sys.executable, str(REPO / "benchmarks" / "x4_passes.py"), "--run", str(keep),
           "--bench", str(bench), "--sets", "Tiny"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    pairs = [f"{a} then {b} " for a in ("unet", "rescnn") for b in ("unet", "rescnn")]
    assert all(p in done.stdout for p in pairs)
    images = sorted((bench / "Tiny" / "image_SRF_4").glob("*_LR.png"))
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "img" in line]
    assert images and len(rows) == len(images)


def test_ablate_variants_and_quantize_reach_jobs_workers(tiny_data, tmp_path):
    """ablate.py variants train in spawned --jobs workers (once they existed in the parent only)."""
    train, bench = tiny_data
    out = _quality(train, bench, "--models", "unet_flat,unet_ref10", "--jobs", "2", "--quantize",
                   "--out", str(tmp_path / "t.md"), script="ablate.py")  # fmt: skip
    assert "training lq quantised to 8 bits" in out and out.count("trained ") == 2
    table = (tmp_path / "t.md").read_text()
    assert re.search(r"\| unet_flat +\|", table) and re.search(r"\| unet_ref10 +\|", table)


def test_ablate_quantize_rounds_the_datasets_lq(tiny_data):
    """--quantize patches the function SRDataset really calls: its lq are 8-bit levels."""
    train, _ = tiny_data
    code = f"""
import os, sys
os.environ["SRLIB_ABLATE_QUANTIZE"] = sys.argv[1]
from benchmarks import ablate  # applies the patch at import, as in a --jobs worker
from srlib.data import SRDataset, find_images
lq = SRDataset(find_images({str(train)!r}), 16, 2, 2, method="bicubic")[0][0] * 255
print(float((lq - lq.round()).abs().max()))
"""
    off, on = (
        subprocess.run(
            [sys.executable, "-c", code, flag],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
            check=True,
        ).stdout
        for flag in ("0", "1")
    )
    assert float(on) < 1e-3 < float(off)  # unquantised antialiased lq sits between levels


def test_lr_for_all_or_per_model():
    q = _module("quality")
    assert q.parse_lr(None, ["unet", "rescnn"]) == {}
    assert q.parse_lr("1e-3", ["unet", "rescnn"]) == {"unet": 1e-3, "rescnn": 1e-3}
    assert q.parse_lr("rescnn=5e-4", ["unet", "rescnn"]) == {"rescnn": 5e-4}
    with pytest.raises(ValueError, match="espcn"):
        q.parse_lr("espcn=1e-3", ["unet", "rescnn"])


def test_a_collapsed_model_is_flagged():
    """A run that ends near bicubic (as a peer did at too high an lr) gets a loud warning."""
    q = _module("quality")
    results = {
        ("Set5", 2): [{"model": "peer", "psnr_y": 33.94}, {"model": "UNet", "psnr_y": 37.42}],
        ("Set14", 2): [{"model": "peer", "psnr_y": 32.70}, {"model": "UNet", "psnr_y": 32.94}],
    }
    alerts = q.little_learners(results, {("Set5", 2): 33.65, ("Set14", 2): 30.22})
    assert len(alerts) == 1  # a weaker but learning model (Set14) is not flagged
    assert "peer LEARNED LITTLE on Set5 x2: +0.29 dB" in alerts[0] and "+3.77 dB" in alerts[0]


def test_several_training_folders_and_no_benchmark_images(tiny_data, tmp_path):
    train, bench = tiny_data
    more = tmp_path / "more"
    more.mkdir()
    for p in train.glob("*.png"):
        Image.open(p).rotate(90).save(more / p.name)  # same names, other folder: both count
    out = _quality(train, bench, "--train", str(train), str(more), "--models", "espcn,rescnn",
                   "--lr", "rescnn=5e-4", "--out", str(tmp_path / "t.md"))  # fmt: skip
    assert "training images: 6 train" in out
    table = (tmp_path / "t.md").read_text()
    assert "lr per model, rescnn 0.0005" in table
    rows = [line for line in table.splitlines() if line.startswith("| ") and "peer)" in line]
    assert len(rows) == 4 and all("| 0.0005 |" in r for r in rows if "residual CNN" in r)
    assert all(re.search(r"\| 0\.002 +\|", r) for r in rows if "ESPCN" in r)  # padded
    # A folder that holds the benchmark (its images would be trained on) is refused.
    cmd = [sys.executable, str(REPO / "benchmarks" / "quality.py"), "--train", str(tmp_path),
           "--bench", str(bench), "--sets", "Tiny", "--budget", "1"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode != 0 and "lie in the benchmark set" in done.stderr


def test_equal_steps_with_model_specs_a_flops_plot_and_a_csv(tiny_data, tmp_path):
    """--steps trains every model the same steps; specs set constructor arguments; FLOPs per
    output pixel go in the table, the CSV (x4: two x2 passes, 1.25x a pass) and the plot."""
    import csv

    train, bench = tiny_data
    unet = "unet(encoder_channels=(4, 4, 4), decoder_channels=(4, 4), refine_blocks=0)"
    out = _quality(train, bench, "--models", f"rescnn(channels=8, depth=1),{unet}",
                   "--steps", "3", "--plot", str(tmp_path / "f.png"),
                   "--csv", str(tmp_path / "r.csv"))  # fmt: skip
    assert "3 steps per model" in out and "FLOPs/px" in out and "ISA" in out
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert len(rows) == 4 and {r["steps"] for r in rows} == {"3"}
    assert {r["model"] for r in rows} == {"rescnn(channels=8, depth=1)", unet}
    for model in {r["model"] for r in rows}:
        x2, x4 = (float(r["flops_per_px"]) for r in rows if r["model"] == model)
        assert x4 == pytest.approx(1.25 * x2, abs=1)
    # The residual CNN: 3->8 and 8->8 convs, then 8->12, at LR: 9 * (24 + 64 + 96) MACs per LR
    # pixel, two FLOPs each, over 4 output pixels.
    assert float(rows[0]["flops_per_px"]) == pytest.approx(2 * 9 * (24 + 64 + 96) / 4, abs=1)
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"


def test_a_bad_model_spec_is_refused_in_one_line(tiny_data):
    train, bench = tiny_data
    cmd = [sys.executable, str(REPO / "benchmarks" / "quality.py"), "--train", str(train),
           "--bench", str(bench), "--sets", "Tiny", "--models", "unet(width=3)"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2 and "has no ['width']" in done.stderr
