"""What defines a training run: TrainConfig, its presets, and the checks and upgrades around it.

Every field of TrainConfig carries its help text as field metadata ("help"): the `srlib train`
command line makes one flag per field from it (srlib.cli.train).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from srlib.degrade import DEGRADATIONS
from srlib.losses import LOSSES, SharpnessLoss, make_loss
from srlib.registry import MODELS

# TrainConfig.gan: no adversarial loss, or the discriminator to train against (srlib.models).
GAN_KINDS = ("none", "unet", "patch")


def _option(default: Any, help: str = "", choices: tuple[str, ...] = ()) -> Any:
    """A TrainConfig field: its default, and the help text and choices of its `srlib train` flag."""
    metadata = ({"help": help} if help else {}) | ({"choices": choices} if choices else {})
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Everything that defines a training run; stored in every checkpoint."""

    name: str = _option("run", "checkpoints go to out_dir/name/")
    scale: int = 2
    patch_size: int = _option(96, "gt crop side after rescaling; lq is patch_size // scale")
    min_crop: int = _option(64, "smallest random crop side taken from a photo before rescaling")
    crops_per_image: int = _option(64, 'dataset length = images * crops_per_image ("one epoch")')
    downscale: str = _option(
        "bicubic", 'how lq is made from gt: "bilinear" (seed) or "bicubic"', ("bilinear", "bicubic")
    )
    degradation: str = _option(
        "clean", '"clean", "realistic" (web photos) or "realesrgan" (degrade.NAMED)', DEGRADATIONS
    )
    loss: str = _option("l1", '"l1", "l2" or "perceptual"', LOSSES)
    sharpness: float = _option(
        0.0, "weight of the sharpness loss part (losses.SharpnessLoss), 0 = off"
    )
    sharpness_kind: str = _option(
        "gradient", 'that part: "gradient" or "fft" (losses.SharpnessLoss)', SharpnessLoss.KINDS
    )
    gan: str = _option(
        "none", 'adversarial training: "none", or the discriminator, "unet" or "patch"', GAN_KINDS
    )
    gan_weight: float = _option(
        0.1, "weight of the adversarial part, g_adv, in the generator's loss"
    )
    gan_lr: float = _option(1e-4, "the discriminator's Adam lr, constant (the generator's is `lr`)")
    ema: float = _option(
        0.0, "decay of an EMA of the weights (e.g. 0.999): validated, saved; 0 = off"
    )
    init_from: str = _option(
        "", 'a checkpoint (same model) whose weights a new run starts from; "": none'
    )
    batch_size: int = _option(8, "at a fixed time budget 8 beat 4 and 16 (more steps; ablate.py)")
    steps: int = _option(1000, "optimiser steps in total")
    time_budget_s: float | None = _option(None, "also stop (and anneal the LR) by wall-clock time")
    lr: float = _option(
        2e-3, "peak; 1e-3 and 4e-3 were 0.1-0.6 dB worse (benchmarks/ablate.py, README)"
    )
    warmup_steps: int = 50
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    val_every: int = _option(200, "validate every N steps and at the end")
    log_every: int = _option(25, "fetch the loss parts from the device every N steps (one sync)")
    checkpoint_every: int = 200
    workers: int = _option(0, "DataLoader worker processes")
    seed: int = 0
    device: str = _option("auto", '"auto" picks cuda, then mps, then cpu')
    amp: bool = _option(True, "bf16 autocast, used on CUDA (and on the CPU with cpu_bf16)")
    cpu_bf16: bool = _option(False, "bf16 autocast on CPUs with native bf16 (AVX512-BF16, AMX) too")
    threads: int = _option(0, "CPU threads; 0: as many as cores are idle when training starts")
    out_dir: str = "runs"


PRESETS: dict[str, dict] = {
    # Seconds: for tests and for checking a notebook end to end.
    "smoke": dict(
        patch_size=32,
        min_crop=24,
        crops_per_image=2,
        batch_size=4,
        steps=4,
        warmup_steps=1,
        val_every=2,
        checkpoint_every=2,
    ),
    # CPU, 2 cores: each notebook (two trainings, evaluation, plots) in at most 10 minutes on
    # an AVX2 CPU in float32 (README, "How long things take"). Ends by step count, not by time:
    # the same machine and thread count give the same numbers.
    "quick": dict(
        patch_size=96,
        min_crop=48,
        crops_per_image=64,
        batch_size=8,
        steps=1500,
        warmup_steps=50,
        val_every=250,
        checkpoint_every=250,
    ),
    # One GPU, e.g. Colab's T4: each notebook in about 15 minutes, with the deep UNet
    # (PRESET_MODEL_ARGS). default_preset() picks it when CUDA is available.
    "gpu": dict(
        patch_size=128,
        min_crop=64,
        crops_per_image=128,
        batch_size=32,
        steps=2000,
        warmup_steps=100,
        val_every=250,
        checkpoint_every=250,
        workers=2,
    ),
    # GPU, the seed's scale: large batches, thousands of steps, bigger crops.
    "full": dict(
        patch_size=192,
        min_crop=96,
        crops_per_image=500,
        batch_size=50,
        steps=20000,
        warmup_steps=500,
        val_every=1000,
        checkpoint_every=1000,
        workers=6,
    ),
}


# TrainConfig fields added after checkpoints were first written, with the value that means
# "as before": an older checkpoint lacks them and still resumes (and loads) as the same run.
ADDED_FIELDS: dict[str, object] = {
    "degradation": "clean",
    "sharpness": 0.0,
    "sharpness_kind": "gradient",
    "gan": "none",
    "gan_weight": 0.1,
    "gan_lr": 1e-4,
    "ema": 0.0,
    "init_from": "",
    "cpu_bf16": False,
    "threads": 0,
}


def upgrade_config(saved: dict) -> dict:
    """A checkpoint's training config with the fields added since it was written filled in."""
    return {**ADDED_FIELDS, **saved}


# Model constructor arguments per preset, over the classes' defaults (srlib.registry.MODELS keys).
# UNetUpscaler's defaults are the CPU's small UNet; on a GPU the deep one (32 channels, 16
# ResBlocks at LR resolution: 5x the FLOPs) costs little time and gains quality (README,
# "Quality per FLOP").
DEEP_UNET = dict(encoder_channels=(32, 32, 64), decoder_channels=(32, 32), refine_blocks=16)
PRESET_MODEL_ARGS: dict[str, dict[str, dict]] = {
    "gpu": {"unet": DEEP_UNET},
    "full": {"unet": DEEP_UNET},
}


def model_args(preset_name: str, model: str | type) -> dict:
    """Constructor arguments of `model` (a MODELS key or class) under a preset; {}: defaults."""
    if isinstance(model, type):
        model = next((k for k, cls in MODELS.items() if cls is model), "")
    return dict(PRESET_MODEL_ARGS.get(preset_name, {}).get(model, {}))


def default_preset() -> str:
    """The preset for this machine: "gpu" where CUDA is available, else "quick" (a CPU)."""
    return "gpu" if torch.cuda.is_available() else "quick"


# Where a run lives and what it is called: not part of what it is, so a run folder that was
# moved, renamed or named another way (--out /abs/runs/x vs runs/x) is still the same run.
LOCATION_FIELDS = ("name", "out_dir")
# How a run is computed, not what it is: a resume may change it (a busy machine, fewer threads).
RUNTIME_FIELDS = ("threads",)


def run_definition(config: dict) -> dict:
    """What defines a run in a (saved) training config: all of it but its location."""
    skip = (*LOCATION_FIELDS, *RUNTIME_FIELDS)
    return {k: v for k, v in upgrade_config(config).items() if k not in skip}


def preset(preset_name: str, /, **overrides) -> TrainConfig:
    """A TrainConfig from a named preset ('smoke', 'quick', 'full') plus explicit overrides."""
    if preset_name not in PRESETS:
        raise ValueError(f"unknown preset {preset_name!r}; choose from {sorted(PRESETS)}")
    return TrainConfig(**{**PRESETS[preset_name], **overrides})


def loss_for(cfg: TrainConfig, pretrained: bool = True) -> nn.Module:
    """The loss a config asks for: `cfg.loss`, plus the sharpness part when `cfg.sharpness` > 0."""
    return make_loss(cfg.loss, pretrained, cfg.sharpness, cfg.sharpness_kind)


def check_config(cfg: TrainConfig) -> None:
    """Raise ValueError naming every TrainConfig value that cannot make a run."""
    at_least_1 = [
        "scale",
        "patch_size",
        "min_crop",
        "crops_per_image",
        "batch_size",
        "steps",
        "val_every",
        "log_every",
        "checkpoint_every",
    ]
    problems = []
    for k in at_least_1:
        if not getattr(cfg, k) >= 1:
            problems.append(f"{k} must be at least 1, got {getattr(cfg, k)}")
    for k in ("lr", "weight_decay", "grad_clip", "warmup_steps", "workers", "threads"):
        value = getattr(cfg, k)
        if not 0 <= value < math.inf:  # also refuses nan
            problems.append(f"{k} must be a finite number >= 0, got {value}")
    budget = cfg.time_budget_s
    if budget is not None and not 0 < budget < math.inf:
        problems.append(f"time_budget_s must be > 0 seconds (or None: no budget), got {budget}")
    if not 0 <= cfg.sharpness < math.inf:
        problems.append(f"sharpness must be a finite number >= 0, got {cfg.sharpness}")
    if cfg.sharpness_kind not in SharpnessLoss.KINDS:
        kinds = " or ".join(map(repr, SharpnessLoss.KINDS))
        problems.append(f"sharpness_kind must be {kinds}, got {cfg.sharpness_kind!r}")
    if cfg.degradation not in DEGRADATIONS:
        problems.append(f"degradation must be one of {DEGRADATIONS}, got {cfg.degradation!r}")
    if cfg.gan not in GAN_KINDS:
        problems.append(f"gan must be one of {GAN_KINDS}, got {cfg.gan!r}")
    for k in ("gan_weight", "gan_lr"):
        if not 0 <= getattr(cfg, k) < math.inf:
            problems.append(f"{k} must be a finite number >= 0, got {getattr(cfg, k)}")
    if not 0 <= cfg.ema < 1:
        problems.append(f"ema must be >= 0 and < 1 (a decay; 0: no EMA), got {cfg.ema}")
    if not isinstance(cfg.init_from, str):  # a Path would not load back (weights_only)
        problems.append(f"init_from must be a str path ('': none), got {cfg.init_from!r}")
    if problems:
        raise ValueError(f"training config {cfg.name!r}: " + "; ".join(problems))
