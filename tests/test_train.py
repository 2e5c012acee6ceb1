"""Training loop: overfitting, history, atomic checkpoints, resume, and a killed run."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from torch.utils.data import TensorDataset

from srlib.losses import PixelLoss
from srlib.models import UNetUpscaler
from srlib.train import TrainConfig, fit, load_checkpoint, load_model, lr_at, preset


def tiny_model():
    return UNetUpscaler(2, width=8, depth=2, max_width=16, decoder_channels=(16, 8))


def pairs(n=8, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Smooth random images with edges: learnable structure, unlike white noise.
    coarse = torch.rand(n, 3, size // 4, size // 4, generator=g)
    gt = torch.nn.functional.interpolate(coarse, size=2 * size, mode="nearest")
    gt = torch.nn.functional.avg_pool2d(gt, 3, stride=1, padding=1, count_include_pad=False)
    lq = torch.nn.functional.avg_pool2d(gt, 2)
    return TensorDataset(lq, gt)


def cfg(tmp_path, **kw):
    base = dict(
        name="t",
        steps=6,
        batch_size=4,
        lr=3e-3,
        warmup_steps=1,
        val_every=3,
        checkpoint_every=3,
        out_dir=str(tmp_path),
        seed=1,
    )
    return TrainConfig(**{**base, **kw})


def test_one_batch_overfit(tmp_path):
    # A fine checkerboard that 2x downscaling erases: only a model that learns can restore it.
    data = pairs(n=4)
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    checker = 0.15 * (((yy + xx) % 2) * 2 - 1).float()
    gt = (data.tensors[1] * 0.6 + 0.2 + checker).clamp(0, 1)
    data = TensorDataset(torch.nn.functional.avg_pool2d(gt, 2), gt)
    hist = fit(
        tiny_model(),
        PixelLoss("l1"),
        data,
        None,
        cfg(tmp_path, steps=60, val_every=1000),
        progress=False,
    )
    losses = hist["train"]["total"]
    assert len(losses) == 60 and hist["step"][-1] == 60
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


def test_history_and_checkpoints(tmp_path):
    hist = fit(
        tiny_model(), PixelLoss("l1"), pairs(), pairs(4, seed=1), cfg(tmp_path), progress=False
    )
    assert hist["val"]["step"] == [3, 6] and len(hist["val"]["psnr"]) == 2
    assert set(hist["train"]) == {"total", "l1"} and hist["samples_per_s"] > 0
    ckpt = load_checkpoint(tmp_path / "t" / "last.pt")  # weights_only=True
    assert ckpt["step"] == 6 and ckpt["config"]["steps"] == 6
    assert ckpt["model_config"]["arch"] == "UNetUpscaler"
    assert (tmp_path / "t" / "best.pt").exists()
    assert not [p for p in (tmp_path / "t").iterdir() if p.suffix == ".tmp"]
    model, _ = load_model(tmp_path / "t" / "last.pt")
    assert not model.training and model(torch.rand(1, 3, 8, 8)).shape == (1, 3, 16, 16)


class Interrupting(TensorDataset):
    """Raises KeyboardInterrupt after `limit` items: a user pressing stop mid-epoch."""

    def __init__(self, data, limit):
        super().__init__(*data.tensors)
        self.limit, self.served = limit, 0

    def __getitem__(self, i):
        self.served += 1
        if self.served > self.limit:
            raise KeyboardInterrupt
        return super().__getitem__(i)


def test_resume_continues_where_it_stopped(tmp_path):
    torch.manual_seed(0)
    full = fit(tiny_model(), PixelLoss("l1"), pairs(), None, cfg(tmp_path / "a"), progress=False)
    # The same run, interrupted during step 5 (after the step-3 checkpoint), then resumed.
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        fit(
            tiny_model(),
            PixelLoss("l1"),
            Interrupting(pairs(), 4 * 4 + 2),
            None,
            cfg(tmp_path / "b"),
            progress=False,
        )
    assert load_checkpoint(tmp_path / "b" / "t" / "last.pt")["step"] == 3
    resumed = fit(tiny_model(), PixelLoss("l1"), pairs(), None, cfg(tmp_path / "b"), progress=False)
    assert resumed["step"] == list(range(1, 7))
    # Same seed, data order, optimiser state and schedule: identical to the straight run.
    assert resumed["train"]["total"] == full["train"]["total"]


def test_resume_refuses_a_different_run(tmp_path):
    fit(tiny_model(), PixelLoss("l1"), pairs(), None, cfg(tmp_path, steps=3), progress=False)
    with pytest.raises(ValueError, match="different run"):
        fit(
            tiny_model(),
            PixelLoss("l1"),
            pairs(),
            None,
            cfg(tmp_path, steps=3, lr=1.0),
            progress=False,
        )
    # A finished run is not trained again: fit returns its history and final weights.
    model = tiny_model()
    hist = fit(model, PixelLoss("l1"), pairs(), None, cfg(tmp_path, steps=3), progress=False)
    assert hist["step"] == [1, 2, 3]
    saved = load_checkpoint(tmp_path / "t" / "last.pt")["model"]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in saved.items())


def test_refuses_dataset_smaller_than_a_batch(tmp_path):
    with pytest.raises(ValueError, match="fewer than one batch"):
        fit(tiny_model(), PixelLoss("l1"), pairs(n=2), None, cfg(tmp_path), progress=False)


def test_lr_schedule_and_presets():
    c = TrainConfig(lr=1.0, warmup_steps=10)
    assert lr_at(0.0, 0, c) == pytest.approx(0.1)
    assert lr_at(0.5, 50, c) == pytest.approx(0.5)
    assert lr_at(1.0, 100, c) == pytest.approx(0.0)
    assert preset("smoke", steps=2).steps == 2
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")


def test_killed_training_resumes(tmp_path):
    """SIGKILL mid-run leaves a loadable checkpoint; rerunning finishes the job."""
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {os.getcwd()!r})
        from tests.test_train import tiny_model, pairs
        from srlib.losses import PixelLoss
        from srlib.train import TrainConfig, fit
        cfg = TrainConfig(name="k", steps=120, batch_size=4, checkpoint_every=5, val_every=10**6,
                          warmup_steps=1, out_dir={str(tmp_path)!r})
        hist = fit(tiny_model(), PixelLoss("l1"), pairs(), None, cfg, progress=False)
        print("finished", hist["step"][-1])
    """)
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    last = tmp_path / "k" / "last.pt"
    deadline = time.time() + 60
    while time.time() < deadline:
        if last.exists() and load_checkpoint(last)["step"] >= 10:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = load_checkpoint(last)["step"]
    assert 10 <= step < 120
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=True
    ).stdout
    assert f"resumed k from {last} at step {step}" in out and "finished 120" in out
