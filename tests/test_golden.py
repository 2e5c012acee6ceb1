"""Golden training numbers: a tiny run's losses and weights, recorded before a refactor.

Two short runs on generated data, each with a fixed seed and one thread: a plain UNet (L1 and
the sharpness part, validation, checkpoints) and a GAN run with an EMA of the weights. Their
per-step losses, learning rates, validation results and a checksum of the final weights must
match the numbers in GOLDEN, recorded on the code before issue 26's redesign (commit 5522524,
on the development machine). The tolerance, 1e-5 relative, only allows for CPUs that differ
in the last bits; on one machine the numbers are equal to the last digit. To print them:

    python -m tests.test_golden
"""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from torch.utils.data import TensorDataset

from srlib.losses import PixelLoss, WithSharpness
from srlib.models import UNetUpscaler
from srlib.training import TrainConfig, fit


def generated_pairs(n: int, seed: int) -> TensorDataset:
    """n (lq (3, 16, 16), gt (3, 32, 32)) pairs: smooth random images with edges."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=g)
    gt = torch.nn.functional.interpolate(coarse, size=32, mode="nearest")
    gt = torch.nn.functional.avg_pool2d(gt, 3, stride=1, padding=1, count_include_pad=False)
    return TensorDataset(torch.nn.functional.avg_pool2d(gt, 2), gt)


def checksum(model: torch.nn.Module) -> list[float]:
    """[sum |w|, sum i * w] over the state dict in float64: any changed weight moves both."""
    flat = torch.cat([v.detach().double().flatten() for v in model.state_dict().values()])
    index = torch.arange(1, len(flat) + 1, dtype=torch.float64) / len(flat)
    return [flat.abs().sum().item(), (flat * index).sum().item()]


def run(out_dir: str, name: str, **overrides) -> dict:
    """Train a tiny UNet with `overrides`; its history's numbers and the weights' checksum."""
    cfg = TrainConfig(
        name=name, steps=8, batch_size=4, lr=3e-3, warmup_steps=2, val_every=4,
        checkpoint_every=4, log_every=3, out_dir=out_dir, seed=3, threads=1, **overrides,
    )  # fmt: skip
    torch.manual_seed(cfg.seed)
    model = UNetUpscaler(2, (8, 16, 16), (16, 8), 1)
    loss = WithSharpness(PixelLoss("l1"), 0.1, "gradient")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 8 steps learn little: the NOT LEARNING alert
        history = fit(
            model, loss, generated_pairs(12, 0), generated_pairs(4, 1), cfg, progress=False
        )
    return {
        "train": history["train"],
        "lr": history["lr"],
        "val": {k: history["val"][k] for k in ("step", "loss", "psnr", "base_psnr")},
        "weights": checksum(model),
    }


def golden_numbers(out_dir: str) -> dict:
    """The numbers GOLDEN holds, computed now."""
    return {
        "plain": run(out_dir, "plain"),
        "gan_ema": run(out_dir, "gan_ema", gan="patch", gan_weight=0.05, ema=0.9),
    }


# Recorded on commit 5522524 (before the redesign): `python -m tests.test_golden`.
GOLDEN: dict = {
    "plain": {
        "train": {
            "total": [
                0.01926986500620842,
                0.01961078681051731,
                0.019876934587955475,
                0.019344737753272057,
                0.019663134589791298,
                0.019406361505389214,
                0.01924710161983967,
                0.019853105768561363,
            ],
            "l1": [
                0.017567100003361702,
                0.01785908453166485,
                0.018122833222150803,
                0.017629940062761307,
                0.01792953722178936,
                0.017687471583485603,
                0.017543887719511986,
                0.018094748258590698,
            ],
            "sharp": [
                0.01702764816582203,
                0.017517030239105225,
                0.017541013658046722,
                0.0171479731798172,
                0.01733597368001938,
                0.0171889066696167,
                0.017032139003276825,
                0.017583569511771202,
            ],
        },
        "lr": [
            0.0015,
            0.003,
            0.002560660171779821,
            0.002074025148547635,
            0.0015,
            0.0009259748514523654,
            0.0004393398282201788,
            0.0001141807012330699,
        ],
        "val": {
            "step": [4, 8],
            "loss": [0.01939515955746174, 0.019341183826327324],
            "psnr": [31.993215560913086, 32.01405715942383],
            "base_psnr": 31.974754333496094,
        },
        "weights": [787.3684672135679, -5.709194158875978],
    },
    "gan_ema": {
        "train": {
            "total": [
                0.053443729877471924,
                0.05394569784402847,
                0.054392874240875244,
                0.05397205054759979,
                0.05437423288822174,
                0.05414898693561554,
                0.054037123918533325,
                0.054616473615169525,
            ],
            "l1": [
                0.017567100003361702,
                0.017860617488622665,
                0.01811983250081539,
                0.01764707639813423,
                0.017930729314684868,
                0.01768934167921543,
                0.017547372728586197,
                0.01809271052479744,
            ],
            "sharp": [
                0.01702764816582203,
                0.017517905682325363,
                0.017534825950860977,
                0.01720103621482849,
                0.017337357625365257,
                0.01719190925359726,
                0.017034126445651054,
                0.017582831904292107,
            ],
            "g_adv": [
                0.6834772825241089,
                0.6866657733917236,
                0.6903911232948303,
                0.6920973658561707,
                0.6941953897476196,
                0.694809079170227,
                0.695726752281189,
                0.6953096389770508,
            ],
            "d_real": [
                0.6834138631820679,
                0.6864912509918213,
                0.6901623606681824,
                0.691747784614563,
                0.6937388181686401,
                0.6941532492637634,
                0.6950183510780334,
                0.6943858861923218,
            ],
            "d_fake": [
                0.7029191851615906,
                0.6996825337409973,
                0.6959320902824402,
                0.6942223310470581,
                0.6921290755271912,
                0.6915203332901001,
                0.6906076073646545,
                0.6910252571105957,
            ],
        },
        "lr": [
            0.0015,
            0.003,
            0.002560660171779821,
            0.002074025148547635,
            0.0015,
            0.0009259748514523654,
            0.0004393398282201788,
            0.0001141807012330699,
        ],
        "val": {
            "step": [4, 8],
            "loss": [0.01943669281899929, 0.01946505717933178],
            "psnr": [31.976543426513672, 31.97503662109375],
            "base_psnr": 31.974754333496094,
        },
        "weights": [778.9686084271673, -1.4023834200217118],
    },
}


def leaves(tree, path=""):
    """(path, number) for every number in a nested dict/list."""
    if isinstance(tree, dict):
        for k in sorted(tree):
            yield from leaves(tree[k], f"{path}/{k}")
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from leaves(v, f"{path}/{i}")
    else:
        yield path, tree


def test_training_numbers_are_golden(tmp_path):
    got = dict(leaves(golden_numbers(str(tmp_path))))
    want = dict(leaves(GOLDEN))
    assert sorted(got) == sorted(want)  # the same steps, parts and validations
    for key, value in want.items():
        assert isinstance(got[key], float | int) and math.isfinite(got[key]), key
        assert got[key] == pytest.approx(value, rel=1e-5, abs=0), key


if __name__ == "__main__":
    import contextlib
    import io
    import tempfile

    # The runs' own lines (validations, the NOT LEARNING alert) would mix with the JSON.
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        numbers = golden_numbers(tmp)
    print(json.dumps(numbers, indent=1))
