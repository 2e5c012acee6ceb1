"""Training loop: overfitting, history, atomic checkpoints, resume, and a killed run."""

import dataclasses
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from torch.utils.data import TensorDataset

from srlib.data import SRDataset
from srlib.losses import PixelLoss
from srlib.models import UNetEncoder, UNetUpscaler, Upscaler
from srlib.training import TrainConfig, fit, load_checkpoint, load_model, preset, restore_best
from srlib.training.runtime import lr_at


def tiny_model():
    return UNetUpscaler(2, (8, 16, 16), (16, 8), 0)


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


def checker_pairs(n=4):
    """A fine checkerboard that 2x downscaling erases: only a model that learns restores it."""
    data = pairs(n=n)
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    checker = 0.15 * (((yy + xx) % 2) * 2 - 1).float()
    gt = (data.tensors[1] * 0.6 + 0.2 + checker).clamp(0, 1)
    return TensorDataset(torch.nn.functional.avg_pool2d(gt, 2), gt)


def test_one_batch_overfit(tmp_path):
    data = checker_pairs()
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
    # Early stopping after the fact: the best-validation weights, and the step they are from.
    best = load_checkpoint(tmp_path / "t" / "best.pt")
    step = restore_best(model, cfg(tmp_path))
    assert (
        step
        == best["step"]
        == hist["val"]["step"][hist["val"]["psnr"].index(max(hist["val"]["psnr"]))]
    )
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in best["model"].items())


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


def test_a_checkpoint_from_before_new_config_fields_still_resumes(tmp_path):
    """last.pt written before degradation/sharpness existed is the same run, not a new one."""
    from srlib.training import save_checkpoint
    from srlib.training.config import ADDED_FIELDS

    torch.manual_seed(0)
    full = fit(tiny_model(), PixelLoss("l1"), pairs(), None, cfg(tmp_path / "a"), progress=False)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_model(), PixelLoss("l1"), Interrupting(pairs(), 4 * 4 + 2), None,
            cfg(tmp_path / "b"), progress=False)  # fmt: skip
    last = tmp_path / "b" / "t" / "last.pt"
    ckpt = load_checkpoint(last)
    assert set(ADDED_FIELDS) <= set(ckpt["config"])
    for key in ADDED_FIELDS:  # as an older srlib wrote it
        del ckpt["config"][key]
    save_checkpoint(last, **ckpt)
    resumed = fit(tiny_model(), PixelLoss("l1"), pairs(), None, cfg(tmp_path / "b"), progress=False)
    assert resumed["train"]["total"] == full["train"]["total"]
    # ...but not into a run that uses one of the new fields differently.
    with pytest.raises(ValueError, match="different run"):
        fit(tiny_model(), PixelLoss("l1"), pairs(), None,
            cfg(tmp_path / "b", sharpness=0.5), progress=False)  # fmt: skip


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
        from srlib.training import TrainConfig, fit
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


def test_validate_restores_the_mode_it_was_given():
    from torch.utils.data import DataLoader

    from srlib.training import validate

    model, loader = tiny_model(), DataLoader(pairs(4), batch_size=2)
    for mode in (True, False):
        model.train(mode)
        validate(model, PixelLoss("l1"), loader, torch.device("cpu"))
        assert model.training is mode


def test_a_run_that_learns_nothing_says_so(tmp_path, capsys):
    from srlib.training import NotLearningWarning

    # lr 0: the model stays at its base upscale, exactly what a collapsed run looks like.
    run = cfg(tmp_path, lr=0.0, val_every=2, checkpoint_every=2)
    with pytest.warns(NotLearningWarning, match="NOT LEARNING"):
        hist = fit(tiny_model(), PixelLoss("l1"), pairs(), pairs(4, seed=1), run, progress=False)
    assert hist["val"]["psnr"] == [pytest.approx(hist["val"]["base_psnr"])] * 3
    assert len(hist["alerts"]) == 1 and hist["alerts"][0]["step"] == 6
    printed = capsys.readouterr()
    assert "WARNING: run 't' is NOT LEARNING" in printed.out + printed.err  # the loud banner
    assert load_checkpoint(tmp_path / "t" / "last.pt")["history"]["alerts"] == hist["alerts"]


def test_a_learning_run_raises_no_alert(tmp_path):
    import warnings

    data = checker_pairs()
    run = cfg(tmp_path, steps=60, val_every=20, checkpoint_every=60)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hist = fit(tiny_model(), PixelLoss("l1"), data, data, run, progress=False)
    assert hist["alerts"] == [] and hist["val"]["psnr"][-1] > hist["val"]["base_psnr"] + 0.05


class NaNAfter(PixelLoss):
    """An L1 loss that turns NaN from call `n` on: a diverging run."""

    def __init__(self, n):
        super().__init__("l1")
        self.calls, self.n = 0, n

    def forward(self, sr, gt):
        self.calls += 1
        loss, parts = super().forward(sr, gt)
        if self.calls >= self.n:
            loss = loss * float("nan")
        return loss, parts


def test_nonfinite_loss_stops_before_any_checkpoint_holds_it(tmp_path):
    run = cfg(tmp_path, steps=9, checkpoint_every=3, val_every=100, log_every=100)
    with pytest.raises(FloatingPointError, match="step 5"):
        fit(tiny_model(), NaNAfter(5), pairs(), None, run, progress=False)
    ckpt = load_checkpoint(tmp_path / "t" / "last.pt")
    assert ckpt["step"] == 3 and all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_nan_checkpoint_and_nan_output_are_clear_errors(tmp_path):
    from srlib.infer import upscale_tensor
    from srlib.training import save_checkpoint

    model = tiny_model()
    with torch.no_grad():
        model.head.up[0].bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="NaN"):
        upscale_tensor(model, torch.rand(3, 16, 16))
    path = tmp_path / "nan.pt"
    save_checkpoint(path, model=model.state_dict(), model_config=model.config)
    with pytest.raises(ValueError, match="NaN/inf weights .*head.up.0.bias"):
        load_model(path)
    from PIL import Image

    from srlib.cli import main

    Image.new("RGB", (16, 16)).save(tmp_path / "in.png")
    rc = main(
        [
            "upscale",
            str(tmp_path / "in.png"),
            "-o",
            str(tmp_path / "out"),
            "--checkpoint",
            str(path),
        ]
    )
    assert rc == 2 and not (tmp_path / "out" / "in_x2.png").exists()


def test_loss_parts_are_fetched_every_log_every_steps(tmp_path, monkeypatch):
    calls = {"tolist": 0, "float": 0}
    tolist, to_float = torch.Tensor.tolist, torch.Tensor.__float__

    def counting_tolist(self):
        calls["tolist"] += self.is_floating_point()  # values, not the loader's index lists
        return tolist(self)

    def counting_float(self):
        calls["float"] += 1
        return to_float(self)

    monkeypatch.setattr(torch.Tensor, "tolist", counting_tolist)
    monkeypatch.setattr(torch.Tensor, "__float__", counting_float)
    run = cfg(tmp_path, steps=12, log_every=4, checkpoint_every=100, val_every=100)
    hist = fit(tiny_model(), PixelLoss("l1"), pairs(), None, run, progress=False)
    monkeypatch.undo()
    assert calls == {"tolist": 3, "float": 0}  # one device sync per 4 steps, none per step
    assert len(hist["train"]["total"]) == len(hist["train"]["l1"]) == 12


def test_resume_reads_the_checkpoint_on_the_cpu(tmp_path, monkeypatch):
    import srlib.training.checkpoint as train

    fit(tiny_model(), PixelLoss("l1"), pairs(), None, cfg(tmp_path, steps=3), progress=False)
    seen = []
    real = train.load_checkpoint
    monkeypatch.setattr(
        train, "load_checkpoint", lambda p, map_location: seen.append(map_location) or real(p)
    )
    fit(tiny_model(), PixelLoss("l1"), pairs(), None, cfg(tmp_path, steps=3), progress=False)
    # torch.set_rng_state takes a CPU tensor only: loading to the training device breaks CUDA.
    assert seen == ["cpu"]


class InterruptingSR(SRDataset):
    """An SRDataset that raises KeyboardInterrupt after serving `limit` crops."""

    limit = None

    def __getitem__(self, i):
        if self.limit is not None:
            self.limit -= 1
            if self.limit < 0:
                raise KeyboardInterrupt
        return super().__getitem__(i)


class Signalling(TensorDataset):
    """Sends this process SIGINT while serving item `at`: Ctrl-C or Jupyter's stop button."""

    def __init__(self, data, at):
        super().__init__(*data.tensors)
        self.at, self.served = at, 0

    def __getitem__(self, i):
        self.served += 1
        if self.served == self.at:
            os.kill(os.getpid(), signal.SIGINT)
        return super().__getitem__(i)


def test_an_interrupt_stops_cleanly_and_keeps_the_history(tmp_path):
    torch.manual_seed(0)
    full = fit(
        tiny_model(), PixelLoss("l1"), pairs(), pairs(4), cfg(tmp_path / "a"), progress=False
    )
    seen = []
    torch.manual_seed(0)
    # SIGINT while the batch of step 5 is loaded (items 17-20): step 5 completes, then fit stops.
    h = fit(
        tiny_model(),
        PixelLoss("l1"),
        Signalling(pairs(), 4 * 4 + 2),
        pairs(4),
        cfg(tmp_path / "b"),
        progress=False,
        on_validation=lambda hist: seen.append(hist["val"]["step"][-1]),
    )
    assert h["interrupted"] and h["step"] == [1, 2, 3, 4, 5]
    assert len(h["train"]["total"]) == 5 and h["val"]["step"] == [3] and seen == [3]
    assert load_checkpoint(tmp_path / "b" / "t" / "last.pt")["step"] == 5
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    resumed = fit(
        tiny_model(), PixelLoss("l1"), pairs(), pairs(4), cfg(tmp_path / "b"), progress=False
    )
    assert not resumed["interrupted"] and resumed["step"] == list(range(1, 7))
    assert resumed["train"]["total"] == full["train"]["total"]
    assert resumed["val"]["psnr"] == full["val"]["psnr"]


class SignallingGroup(TensorDataset):
    """In a DataLoader worker: SIGINT to the worker and the main process, as Ctrl-C sends it."""

    def __getitem__(self, i):
        if i == 0 and torch.utils.data.get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getppid(), signal.SIGINT)
        return super().__getitem__(i)


def test_an_interrupt_with_dataloader_workers_stops_cleanly(tmp_path, monkeypatch):
    import functools

    import srlib.data

    # Spawned workers start with Python's default SIGINT handler (forked ones would inherit
    # fit's), as with the spawn/forkserver start methods of macOS, Windows and Python 3.14.
    loader = functools.partial(srlib.data.DataLoader, multiprocessing_context="spawn")
    monkeypatch.setattr(srlib.data, "DataLoader", loader)
    run = cfg(tmp_path, steps=40, workers=2, val_every=100, checkpoint_every=100)
    data = SignallingGroup(*pairs(n=8).tensors)  # item 0 comes once per epoch (2 steps)
    h = fit(tiny_model(), PixelLoss("l1"), data, None, run, progress=False)
    assert h["interrupted"] and 1 <= len(h["step"]) < 40
    assert load_checkpoint(tmp_path / "t" / "last.pt")["step"] == len(h["step"])


def test_a_second_interrupt_aborts(tmp_path):
    class Twice(Signalling):
        def __getitem__(self, i):
            if self.served == self.at:  # the item after the first signal: signal again
                os.kill(os.getpid(), signal.SIGINT)
            return super().__getitem__(i)

    with pytest.raises(KeyboardInterrupt):
        fit(tiny_model(), PixelLoss("l1"), Twice(pairs(), 2), None, cfg(tmp_path), progress=False)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_resume_with_srdataset_gives_the_same_losses(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    photos = [(f"p{i}", rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)) for i in range(2)]

    def train(folder, limit=None):
        torch.manual_seed(0)  # the same initial weights in all three runs
        data = InterruptingSR(photos, size=16, scale=2, crops_per_image=6, min_crop=12, seed=4)
        data.limit = limit
        run = cfg(folder, steps=8, checkpoint_every=2, val_every=100)
        return fit(tiny_model(), PixelLoss("l1"), data, None, run, progress=False)

    full = train(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "b", limit=4 * 5 + 2)  # during step 6, after the step-4 checkpoint
    assert load_checkpoint(tmp_path / "b" / "t" / "last.pt")["step"] == 4
    resumed = train(tmp_path / "b")
    assert resumed["step"] == list(range(1, 9))
    # Steps 5-8 (epochs 1 and 2) get the crops the uninterrupted run got: identical losses.
    assert resumed["train"]["total"] == full["train"]["total"]


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["random", "realistic"])
def test_resnet_unet_learns_with_and_without_imagenet_weights(weights, request, tmp_path):
    """The default ResNet-UNet used to collapse to its bicubic base in most seeds (issue 9).

    Real photos, the default model, the quick preset's lr, warmup and batch, smaller crops
    and fewer steps. 'realistic' is a ResNet18 whose BatchNorm statistics were measured on
    photos (conftest): features of a trained network's scale, the harder case.
    """
    from srlib.data import SRDataset, embedded_photos, split_by_image
    from srlib.models import ResNetUNetUpscaler

    if weights == "realistic":
        request.getfixturevalue("realistic_imagenet_weights")
    train_src, val_src = split_by_image(embedded_photos(), 0.25, seed=0, holdout=["moon"])
    crop = dict(size=48, scale=2, min_crop=32, method="bicubic")
    gains = []
    for seed in (0, 1, 2):
        train_set = SRDataset(train_src, crops_per_image=16, seed=seed, **crop)
        val_set = SRDataset(val_src, crops_per_image=4, train=False, **crop)
        torch.manual_seed(seed)
        model = ResNetUNetUpscaler(2, pretrained=weights == "realistic", download=False)
        assert model.has_imagenet_weights == (weights == "realistic")
        run = preset("quick", name=f"s{seed}", seed=seed, steps=150, val_every=50, patch_size=48)
        run = dataclasses.replace(run, out_dir=str(tmp_path))
        hist = fit(model, PixelLoss("l1"), train_set, val_set, run, progress=False)
        gains.append(max(hist["val"]["psnr"]) - hist["val"]["base_psnr"])
    assert min(gains) > 0.3, gains


def test_run_or_shipped_prefers_a_finished_run(tmp_path):
    from srlib.training import run_or_shipped, save_checkpoint

    shipped = tmp_path / "ship.pt"
    with pytest.raises(FileNotFoundError):
        run_or_shipped(tmp_path / "runs" / "t", shipped)
    save_checkpoint(shipped, step=6, config={"steps": 6})
    assert run_or_shipped(tmp_path / "runs" / "t", shipped)[0] == shipped
    # An interrupted run is not used; a finished one is.
    h = fit(
        tiny_model(),
        PixelLoss("l1"),
        Signalling(pairs(), 6),
        pairs(4),
        cfg(tmp_path / "runs"),
        progress=False,
    )
    assert h["interrupted"]
    assert run_or_shipped(tmp_path / "runs" / "t", shipped)[0] == shipped
    fit(tiny_model(), PixelLoss("l1"), pairs(), pairs(4), cfg(tmp_path / "runs"), progress=False)
    path, about = run_or_shipped(tmp_path / "runs" / "t", shipped, expect={"scale": 2})
    assert path == tmp_path / "runs" / "t" / "best.pt" and "latest finished run" in about
    # A run with another scale is passed over; a shipped checkpoint that differs is an error.
    with pytest.raises(ValueError, match="scale=None"):
        run_or_shipped(tmp_path / "runs" / "t", shipped, expect={"scale": 3})


# Recorded from this very run (one thread) with srlib/train.py and srlib/data.py of commit
# bf0614d (ce2ea18~2, before DDP), of ce2ea18 and of the DDP review fixes: all three gave these
# values, bit for bit. The tolerances leave room for CPUs that round differently (a second
# thread already moves the losses by 8e-7 and the PSNRs by 8e-5) and are far below what a
# changed data order, schedule or update would do (1e-3 and more after 6 steps).
GOLDEN = {
    "total": [0.009775492362678051, 0.01668303646147251, 0.010470952838659286,
              0.010851587168872356, 0.010778521187603474, 0.011307049542665482],
    "lr": [0.003, 0.002799038105676658, 0.0022500000000000003, 0.0015, 0.0007500000000000003,
           0.00020096189432334193],
    "psnr": [36.099220275878906, 35.96803665161133],
    "base_psnr": 36.31400680541992,
}  # fmt: skip


@pytest.mark.filterwarnings("ignore::srlib.train.NotLearningWarning")  # 6 steps learn little
def test_single_process_run_matches_the_recorded_one(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        # tiny_model() as it was when GOLDEN was recorded: the same modules built in the same
        # order, with random ResBlocks (UNetUpscaler now starts them as the identity).
        model = Upscaler(UNetEncoder((8, 16, 16)), (16, 8), 2, 0, "bicubic", refine_blocks=0)
        model.config = tiny_model().config  # what checkpoints store (the architecture)
        hist = fit(model, PixelLoss("l1"), pairs(), pairs(4, seed=1), cfg(tmp_path), progress=False)
    finally:
        torch.set_num_threads(threads)
    assert hist["step"] == list(range(1, 7)) and hist["val"]["step"] == [3, 6]
    assert hist["train"]["total"] == pytest.approx(GOLDEN["total"], rel=1e-4)
    assert hist["lr"] == pytest.approx(GOLDEN["lr"], rel=1e-9)
    assert hist["val"]["psnr"] == pytest.approx(GOLDEN["psnr"], abs=2e-3)
    assert hist["val"]["base_psnr"] == pytest.approx(GOLDEN["base_psnr"], abs=2e-3)


@pytest.mark.parametrize(
    "bad",
    [
        dict(batch_size=0),
        dict(val_every=0),
        dict(checkpoint_every=0),
        dict(log_every=0),
        dict(steps=0),
        dict(steps=-1),
        dict(time_budget_s=0.0),
        dict(time_budget_s=float("nan")),
        dict(crops_per_image=0),
        dict(patch_size=0),
        dict(min_crop=0),
        dict(lr=-1e-3),
        dict(lr=float("inf")),
        dict(warmup_steps=-1),
        dict(workers=-1),
    ],
)
def test_a_config_that_cannot_make_a_run_is_refused_up_front(tmp_path, bad):
    from srlib.training import check_config

    (name,) = bad
    with pytest.raises(ValueError, match=name):
        check_config(cfg(tmp_path, **bad))
    with pytest.raises(ValueError, match=name):  # before anything is written
        fit(tiny_model(), PixelLoss("l1"), pairs(), None, cfg(tmp_path, **bad), progress=False)
    assert not list(tmp_path.iterdir())


def test_valid_configs_pass_the_check(tmp_path):
    from srlib.training import PRESETS, check_config

    for name in PRESETS:
        check_config(preset(name))
    check_config(cfg(tmp_path, lr=0.0, time_budget_s=0.5, warmup_steps=0, grad_clip=0.0))


class Slow(TensorDataset):
    """Each item takes 1 s of a fake clock to load: a slow data pipeline."""

    def __init__(self, data, clock):
        super().__init__(*data.tensors)
        self.clock = clock

    def __getitem__(self, i):
        self.clock[0] += 1.0
        return super().__getitem__(i)


def test_a_time_budget_anneals_by_the_clock_at_the_top_of_each_step(tmp_path, monkeypatch):
    """The LR's time progress includes loading the step's own batch, as before DDP."""
    import types

    import srlib.training.loop

    clock = [0.0]
    fake_time = types.SimpleNamespace(perf_counter=lambda: clock[0])
    monkeypatch.setattr(srlib.training.loop, "time", fake_time)
    run = cfg(tmp_path, steps=100, time_budget_s=40.0, val_every=1000, checkpoint_every=1000)
    hist = fit(tiny_model(), PixelLoss("l1"), Slow(pairs(), clock), None, run, progress=False)
    # 4 s a step (a batch of 4): the budget is spent after step 10.
    assert hist["step"] == list(range(1, 11)) and hist["finished"]
    # Step k (from 0) reads the clock once its batch is loaded: 4 (k + 1) s.
    expected = [lr_at(4.0 * (k + 1) / 40.0, k, run) for k in range(10)]
    assert hist["lr"] == pytest.approx(expected, abs=0)


def test_cpu_bf16_autocast_only_where_asked_and_native(monkeypatch):
    import srlib.training.runtime
    from srlib.training.runtime import use_autocast

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not use_autocast(TrainConfig(), cpu)  # off by default on the CPU
    # On GPUs with native bf16 (Ampere on) with amp; a T4 (7.5) would emulate it: float32.
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert use_autocast(TrainConfig(), cuda) and not use_autocast(TrainConfig(amp=False), cuda)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert not use_autocast(TrainConfig(), cuda)
    monkeypatch.setattr(srlib.training.runtime, "cpu_has_bf16", lambda: True)
    assert use_autocast(TrainConfig(cpu_bf16=True), cpu)
    assert not use_autocast(TrainConfig(cpu_bf16=True, amp=False), cpu)
    monkeypatch.setattr(srlib.training.runtime, "cpu_has_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no native bf16"):  # never silently emulated
        assert not use_autocast(TrainConfig(cpu_bf16=True), cpu)


def test_cpu_bf16_run_trains_in_bf16_keeps_float32_weights_and_resumes_exactly(
    tmp_path, monkeypatch
):
    import srlib.training.runtime

    # Emulated where not native.
    monkeypatch.setattr(srlib.training.runtime, "cpu_has_bf16", lambda: True)
    seen = []
    torch.manual_seed(0)
    model = tiny_model()
    model.decoder.register_forward_hook(lambda m, i, o: seen.append(o.dtype) if m.training else 0)
    run = cfg(tmp_path / "a", cpu_bf16=True)
    whole = fit(model, PixelLoss("l1"), pairs(), None, run, progress=False)
    assert seen and set(seen) == {torch.bfloat16}  # the training forward ran in bf16
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert torch.isfinite(torch.tensor(whole["train"]["total"])).all()

    # The same run interrupted during step 5, then resumed: the same losses, step by step.
    run = cfg(tmp_path / "b", cpu_bf16=True)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_model(), PixelLoss("l1"), Interrupting(pairs(), 18), None, run, progress=False)
    resumed = fit(tiny_model(), PixelLoss("l1"), pairs(), None, run, progress=False)
    assert resumed["train"]["total"] == whole["train"]["total"]


def test_the_preset_follows_the_machine_and_sets_the_unet_size(monkeypatch):
    """CUDA available -> the "gpu" preset and its deep UNet; a CPU -> "quick" and the default."""
    from srlib.models import UNetUpscaler
    from srlib.training import default_preset, model_args, preset

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_preset() == "gpu"
    gpu = UNetUpscaler(**model_args("gpu", "unet"))
    assert gpu.config["refine_blocks"] == 16 and preset("gpu").batch_size == 32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_preset() == "quick" and model_args("quick", "unet") == {}
    assert UNetUpscaler(**model_args("quick", "unet")).config == UNetUpscaler().config
    assert model_args("gpu", "resnet") == {}  # the ResNet-UNet is the same everywhere
    assert model_args("gpu", UNetUpscaler) == model_args("gpu", "unet")  # by class too
    args = model_args("gpu", "unet")
    args["refine_blocks"] = 1  # a copy: the table itself is not changed
    assert model_args("gpu", "unet")["refine_blocks"] == 16


# ----------------------------------------------------------------------------------------------
# Issue 24: the same run, its data, its verdict


def _record(*names, val=("v",)):
    """A `data` record of fit: photo name -> [bytes, hash]."""
    return {
        "train": {n: [100, n] for n in names},
        "val": {n: [100, n] for n in val},
        "val_fraction": 0.1,
    }


def test_a_run_moved_or_renamed_is_the_same_run(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_model(), PixelLoss("l1"), Interrupting(pairs(), 4 * 4 + 2), None,
            cfg(tmp_path / "a"), progress=False)  # fmt: skip
    (tmp_path / "a" / "t").rename(tmp_path / "a" / "renamed")  # the folder renamed
    (tmp_path / "a").rename(tmp_path / "moved")  # and moved
    run = cfg(tmp_path / "moved", name="renamed")
    hist = fit(tiny_model(), PixelLoss("l1"), pairs(), None, run, progress=False)
    assert hist["step"] == list(range(1, 7))  # resumed at step 3: not refused, not restarted


def test_resuming_on_other_data_is_refused_unless_a_new_phase(tmp_path, capsys):
    run = cfg(tmp_path, val_every=2, checkpoint_every=2)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_model(), PixelLoss("l1"), Interrupting(pairs(), 4 * 4 + 2), pairs(4, seed=1),
            run, progress=False, data=_record("a", "b"))  # fmt: skip
    last = tmp_path / "t" / "last.pt"
    assert load_checkpoint(last)["data"] == _record("a", "b")
    before = last.read_bytes()
    for other, change in [
        (_record("a", "b", "c"), "1 photo(s) added (c)"),
        (_record("a"), "1 photo(s) removed (b)"),
        (
            {**_record("a", "b"), "train": {"a": [100, "a"], "b": [101, "b2"]}},
            "1 photo(s) changed (b)",
        ),
        (_record("a", "v", val=("b",)), "2 photo(s) moved between training and validation"),
        ({**_record("a", "b"), "val_fraction": 0.2}, "val_fraction 0.1 then, 0.2 now"),
    ]:
        with pytest.raises(ValueError, match=r"was trained on other data \(" + re.escape(change)):
            fit(tiny_model(), PixelLoss("l1"), pairs(), pairs(4, seed=1), run, progress=False,
                data=other)  # fmt: skip
        assert last.read_bytes() == before  # nothing written
    # The same photos (where they were is not compared): resumes.
    same = {**_record("a", "b"), "about": "somewhere else"}
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_model(), PixelLoss("l1"), Interrupting(pairs(), 4), pairs(4, seed=1), run,
            progress=False, data=same)  # fmt: skip
    # A new phase: validated on other photos from here, with a baseline of their own.
    capsys.readouterr()
    hist = fit(tiny_model(), PixelLoss("l1"), pairs(), pairs(4, seed=2), run, progress=False,
               data=_record("a", "b", "c"), new_phase=True)  # fmt: skip
    (phase,) = hist["phases"]
    assert phase["step"] == 4 and phase["change"] == "1 photo(s) added (c)"
    assert phase["base_psnr"] != hist["val"]["base_psnr"]  # measured again, on seed-2 photos
    assert "new phase from step 4 on changed data (1 photo(s) added (c))" in capsys.readouterr().out
    assert hist["val"]["step"] == [2, 4, 6]
    best = load_checkpoint(tmp_path / "t" / "best.pt")
    assert best["step"] == 6 and best["data"] == _record("a", "b", "c")  # this phase's best
    assert load_checkpoint(last)["data"] == _record("a", "b", "c")


def test_a_checkpoint_from_before_data_was_recorded_still_resumes(tmp_path):
    from srlib.training import save_checkpoint

    torch.manual_seed(0)
    full = fit(tiny_model(), PixelLoss("l1"), pairs(), None, cfg(tmp_path / "a"), progress=False)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_model(), PixelLoss("l1"), Interrupting(pairs(), 4 * 4 + 2), None,
            cfg(tmp_path / "b"), progress=False)  # fmt: skip
    last = tmp_path / "b" / "t" / "last.pt"
    ckpt = load_checkpoint(last)
    assert "data" not in ckpt  # fit without `data` records none
    hist = ckpt["history"]
    for key in ("cleared_alerts", "phases"):  # as an older srlib wrote it
        del hist[key]
    save_checkpoint(last, **ckpt)
    resumed = fit(tiny_model(), PixelLoss("l1"), pairs(), None, cfg(tmp_path / "b"),
                  progress=False, data=_record("a"))  # fmt: skip
    assert resumed["train"]["total"] == full["train"]["total"] and resumed["phases"] == []
    assert load_checkpoint(last)["data"] == _record("a")  # recorded from now on


def test_an_early_alert_that_clears_is_not_the_verdict(tmp_path, monkeypatch, capsys):
    """Issue 24: +0.14 dB at the end, yet 'NOT LEARNING' from step 15 on, and exit 3."""
    import srlib.training.loop as train
    from srlib.training import NotLearningWarning

    scores = iter([30.0, 30.0, 30.0, 30.5])  # three validations at the base, then learning
    monkeypatch.setattr(train, "base_psnr", lambda *args, **kwargs: 30.0)
    monkeypatch.setattr(train, "validate", lambda *args, **kwargs: (0.1, next(scores)))
    run = cfg(tmp_path, steps=8, val_every=2, checkpoint_every=2)
    with pytest.warns(NotLearningWarning):  # the early warning, at step 6
        hist = fit(tiny_model(), PixelLoss("l1"), pairs(), pairs(4), run, progress=False)
    assert hist["alerts"] == []  # the verdict: as the run ends, it learns
    (cleared,) = hist["cleared_alerts"]
    assert cleared["step"] == 6 and cleared["cleared"] == 8
    assert "learning now; the alert of step 6 is cleared" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "t" / "last.pt")["history"]["alerts"] == []


def test_no_checkpoint_is_named_when_none_holds_the_last_finite_weights(tmp_path):
    run = cfg(tmp_path, steps=9, checkpoint_every=6, val_every=100, log_every=1)
    with pytest.raises(FloatingPointError) as caught:
        fit(tiny_model(), NaNAfter(2), pairs(), None, run, progress=False)
    message = str(caught.value)
    assert "no checkpoint of this run was written yet (the first is at step 6)" in message
    assert "keeps" not in message and not (tmp_path / "t" / "last.pt").exists()
    with pytest.raises(
        FloatingPointError, match=r"last.pt keeps the last finite weights \(step 6\)"
    ):
        fit(tiny_model(), NaNAfter(8), pairs(), None, run, resume=False, progress=False)


def test_a_resume_of_a_checkpoint_without_optimizer_state_is_refused(tmp_path):
    from srlib.training import save_checkpoint

    fit(tiny_model(), PixelLoss("l1"), pairs(), None, cfg(tmp_path, steps=3), progress=False)
    last = tmp_path / "t" / "last.pt"
    ckpt = load_checkpoint(last)
    del ckpt["optimizer"]  # e.g. an exported checkpoint copied over last.pt
    save_checkpoint(last, **ckpt)
    with pytest.raises(ValueError, match="cannot be resumed: it has no optimizer"):
        fit(tiny_model(), PixelLoss("l1"), pairs(), None, cfg(tmp_path, steps=3), progress=False)
