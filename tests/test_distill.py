"""benchmarks/distill.py on tiny generated data: the pool's contents, the blend, a training run."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch

from tests.test_quality import REPO, _module, _quality, tiny_data  # noqa: F401 (a fixture)


def _distill(*args: str) -> str:
    cmd = [sys.executable, str(REPO / "benchmarks" / "distill.py"), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_pool_holds_the_teachers_x2_and_trains_a_student(tiny_data, tmp_path):  # noqa: F811
    train, bench = tiny_data
    keep = tmp_path / "keep"
    _quality(train, bench, "--models", "unet", "--keep", str(keep))  # the teacher: 1 s of training
    pool = tmp_path / "pool.pt"
    out = _distill("pool", "--teacher", str(keep / "unet" / "last.pt"), "--train", str(train),
                   "--bench", str(bench), "--sets", "Tiny", "--n", "10", "--patch", "16",
                   "--crops-per-image", "2", "--out", str(pool))  # fmt: skip
    assert "pool 10 samples over 2 epoch(s) of 6 crops" in out  # 3 images x 2 crops: wraps once
    d = torch.load(pool, weights_only=True)
    assert d["lq"].shape == (10, 3, 8, 8) and d["lq"].dtype == torch.half
    assert d["gt"].shape == d["teacher"].shape == (10, 3, 16, 16)
    x4_passes = _module("x4_passes")
    teacher = x4_passes.load_run_model(keep, "unet")
    with torch.no_grad():
        expected = teacher(d["lq"].float()).clamp(0, 1)
    assert (d["teacher"].float() - expected).abs().max() < 0.03  # bf16 teacher, fp16 storage
    assert (d["teacher"].float() - d["gt"].float()).abs().mean() > 1e-3  # not a copy of gt

    distill = _module("distill")
    plain, blend = distill.Pool(pool, 0.0), distill.Pool(pool, 0.25)
    assert torch.equal(plain.target, d["gt"])
    mixed = 0.25 * d["teacher"].float() + 0.75 * d["gt"].float()
    assert (blend.target.float() - mixed).abs().max() < 2e-3
    lq, target = blend[3]
    assert lq.dtype == target.dtype == torch.float32 and target.shape == (3, 16, 16)
    with pytest.raises(ValueError, match="alpha"):
        distill.Pool(pool, 1.5)

    out = _distill("train", "--pool", str(pool), "--bench", str(bench), "--sets", "Tiny",
                   "--model", "rescnn", "--alpha", "0.5", "--budget", "1")  # fmt: skip
    assert re.search(r"rescnn alpha 0\.5 seed 0: \d+ steps", out)
    assert re.search(r"Tiny x2: PSNR-Y \d+\.\d{3}", out) and "Tiny x4: PSNR-Y" in out


def test_each_command_names_what_it_lacks(tmp_path):
    cmd = [sys.executable, str(REPO / "benchmarks" / "distill.py"), "pool", "--bench", "b"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2 and "pool needs --teacher, --train, --out" in done.stderr
    best = tmp_path / "unet" / "best.pt"  # a teacher must be a --keep run's last.pt
    cmd[3:] = ["--bench", "b", "--teacher", str(best), "--train", "t", "--out", "o"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 1 and "not a quality.py --keep run's <key>/last.pt" in done.stderr
    assert not (tmp_path / "o").exists()
