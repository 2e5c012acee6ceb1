"""Where and how a run computes: device, bf16 autocast, seeds, the LR schedule, quick PSNR."""

from __future__ import annotations

import math
import random
import warnings
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from srlib.training.config import TrainConfig


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda if available, else mps, else cpu; anything else is passed to torch."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (oneDNN: AVX512-BF16 or AMX), not emulated."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def use_autocast(cfg: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast for the training forward: on CUDA with `amp`; on a CPU with `cpu_bf16`.

    Only where bf16 is native: on GPUs from Ampere on (a T4 or V100 would emulate it, slower
    than float32) and on CPUs with AVX512-BF16 or AMX. Elsewhere training runs in float32; a
    CPU asked for bf16 says so (a warning), rather than training silently slowly.
    """
    if not cfg.amp:
        return False
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type != "cpu" or not cfg.cpu_bf16:
        return False
    if not cpu_has_bf16():
        warnings.warn(
            "cpu_bf16: this CPU has no native bf16 (AVX512-BF16 or AMX); training in float32",
            stacklevel=3,
        )
        return False
    return True


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_at(progress: float, step: int, cfg: TrainConfig) -> float:
    """Linear warmup for `warmup_steps`, then cosine decay to 0 as `progress` goes 0 -> 1."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a (B, C, H, W) batch to `device` in channels_last layout."""
    return x.to(device, memory_format=torch.channels_last, non_blocking=True)


def psnr(sr: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Quick RGB PSNR in dB per image on [0, 1] tensors, for validation curves only.

    On the device, in float, without 8-bit rounding or a border crop: the benchmark tables'
    RGB PSNR is srlib.metrics.psnr_rgb (and the papers' is psnr_y).
    """
    mse = ((sr.clamp(0, 1) - gt) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))
